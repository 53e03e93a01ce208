"""glance train-classifier / test-classifier through main(argv)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from glance.classifiers import load_classifier
from glance.cli.main import main
from glance.data.mnist import save_morphomnist_split


def _write_morpho(directory, n_train: int = 160, n_test: int = 60, seed: int = 0) -> None:
    """A tiny Morpho-MNIST-format set: digit 0 = bar on the left, 1 = bar on the right."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 2, n)
        thickness = rng.uniform(1, 5, n)
        images = rng.integers(0, 30, (n, 28, 28)).astype(np.uint8)
        for i in range(n):
            w = int(round(thickness[i]))
            col = 4 if labels[i] == 0 else 24 - w
            images[i, 5:-5, col : col + w] = 220
        intensity = rng.uniform(100, 255, n)
        save_morphomnist_split(
            directory, split, images, labels, {"thickness": thickness, "intensity": intensity}
        )


@pytest.fixture
def morpho_dir(tmp_path):
    d = tmp_path / "morpho"
    _write_morpho(d)
    return d


def test_train_then_test_classifier(morpho_dir, tmp_path, capsys):
    out = tmp_path / "models" / "clf.safetensors"
    rc = main(
        [
            "-q",
            "train-classifier",
            "--data",
            str(morpho_dir),
            "--arch",
            "small-cnn",
            "--out",
            str(out),
            "--epochs",
            "3",
            "--lr",
            "0.01",
            "--seed",
            "1",
        ]
    )
    assert rc == 0
    assert out.is_file() and out.with_suffix(".json").is_file()
    assert "held-out accuracy" in capsys.readouterr().out
    model = load_classifier(out)
    assert model.input_size == (28, 28) and model.classes == [str(d) for d in range(10)]
    result_path = tmp_path / "result.json"
    rc = main(
        ["-q", "test-classifier", str(out), "--data", str(morpho_dir), "--json", str(result_path)]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    result = json.loads(result_path.read_text())
    assert result["split"] == "t10k" and result["n"] == 60
    assert result["accuracy"] >= 0.9
    assert f"accuracy {result['accuracy']:.4f} on 60 images" in printed


def test_thickness_median_target_round_trip(morpho_dir, tmp_path, capsys):
    out = tmp_path / "thick.safetensors"
    rc = main(
        [
            "-q",
            "train-classifier",
            "--data",
            str(morpho_dir),
            "--target",
            "thickness:median",
            "--out",
            str(out),
            "--epochs",
            "2",
        ]
    )
    assert rc == 0
    desc = json.loads(out.with_suffix(".json").read_text())
    thr = desc["target"]["threshold"]
    assert desc["target"]["column"] == "thickness" and 1 < thr < 5
    capsys.readouterr()
    assert main(["-q", "test-classifier", str(out), "--data", str(morpho_dir)]) == 0
    assert "target thickness:median" in capsys.readouterr().out


def test_test_classifier_on_a_plain_state_dict(morpho_dir, tmp_path, capsys):
    out = tmp_path / "clf.safetensors"
    assert (
        main(
            [
                "-q",
                "train-classifier",
                "--data",
                str(morpho_dir),
                "--out",
                str(out),
                "--epochs",
                "1",
                "--no-augment",
            ]
        )
        == 0
    )
    model = load_classifier(out)
    assert model.meta["training"]["augment"] is False
    pt = tmp_path / "user.pt"
    torch.save(model.net.state_dict(), pt)
    capsys.readouterr()
    assert (
        main(["-q", "test-classifier", str(pt), "--data", str(morpho_dir), "--arch", "small-cnn"])
        == 0
    )
    assert "accuracy" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["train-classifier", "--arch", "resnet-18"], "unknown classifier architecture"),
        (["train-classifier", "--target", "colour"], "no attribute column 'colour'"),
        (["train-classifier", "--target", "thickness"], "thickness:median"),
        (["train-classifier", "--epochs", "0"], "--epochs: expected an integer >= 1; got 0"),
        (["train-classifier", "--out", "m.pt"], "must end in .safetensors"),
    ],
)
def test_bad_cli_input_prints_one_line(morpho_dir, tmp_path, capsys, argv, match):
    base = ["train-classifier", "--data", str(morpho_dir), "--out", str(tmp_path / "m.safetensors")]
    rc = main(["-q", *base, *argv[1:]])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("glance: error:") and len(err.strip().splitlines()) == 1
    assert match in err
    assert not (tmp_path / "m.safetensors").exists()


def test_test_classifier_refuses_mismatched_data(morpho_dir, tmp_path, capsys):
    out = tmp_path / "clf.safetensors"
    assert (
        main(
            [
                "-q",
                "train-classifier",
                "--data",
                str(morpho_dir),
                "--out",
                str(out),
                "--epochs",
                "1",
            ]
        )
        == 0
    )
    other = tmp_path / "big"
    rng = np.random.default_rng(0)
    save_morphomnist_split(
        other,
        "t10k",
        rng.integers(0, 255, (5, 32, 32)).astype(np.uint8),
        np.zeros(5, np.int64),
        {"thickness": np.ones(5)},
    )
    save_morphomnist_split(
        other,
        "train",
        rng.integers(0, 255, (5, 32, 32)).astype(np.uint8),
        np.zeros(5, np.int64),
        {"thickness": np.ones(5)},
    )
    capsys.readouterr()
    rc = main(["-q", "test-classifier", str(out), "--data", str(other)])
    err = capsys.readouterr().err
    assert rc == 2 and "(1, 32, 32)" in err and "(1, 28, 28)" in err
    rc = main(["-q", "test-classifier", str(tmp_path / "absent.safetensors"), "--data", str(other)])
    assert rc != 0 and "absent" in capsys.readouterr().err
