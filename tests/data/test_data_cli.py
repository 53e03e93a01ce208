"""``glance data morpho-mnist|shapes`` and ``glance measure`` through ``main(argv)``."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from glance.cli.main import main
from glance.data import load_morphomnist
from glance.data.morphometrics import METRIC_NAMES, measure


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_morpho_mnist_then_measure(tmp_path, capsys):
    out = tmp_path / "mm"
    assert main(["-q", "data", "morpho-mnist", "--out", str(out), "--n", "20", "--jobs", "1"]) == 0
    assert sorted(p.name for p in out.glob("*-images-idx3-ubyte.gz")) == [
        "t10k-images-idx3-ubyte.gz",
        "train-images-idx3-ubyte.gz",
    ]
    assert main(["-q", "measure", str(out), "--out", str(tmp_path / "m.csv"), "--jobs", "1"]) == 0
    rows = _rows(tmp_path / "m.csv")
    assert rows[0] == list(METRIC_NAMES) and len(rows) == 1 + 18
    train = load_morphomnist(out, "train")
    expect = measure(train.images[:, 0], n_jobs=1)
    got = np.array(rows[1:], dtype=float)
    for k, name in enumerate(METRIC_NAMES):
        np.testing.assert_allclose(got[:, k], expect[name], rtol=1e-6)
    idx = out / "t10k-images-idx3-ubyte.gz"
    assert main(["-q", "measure", str(idx), "--out", str(tmp_path / "t.csv"), "--jobs", "1"]) == 0
    assert len(_rows(tmp_path / "t.csv")) == 1 + 2
    assert capsys.readouterr().err == ""


def test_measure_npz(tmp_path):
    images = np.zeros((3, 28, 28), np.uint8)
    images[:, 8:20, 12:15] = 200
    np.savez_compressed(tmp_path / "d.npz", images=images)
    assert main(["-q", "measure", str(tmp_path / "d.npz"), "--out", str(tmp_path / "o.csv")]) == 0
    rows = _rows(tmp_path / "o.csv")
    assert len(rows) == 4 and float(rows[1][METRIC_NAMES.index("intensity")]) == 200


def test_shapes_cli(tmp_path):
    out = tmp_path / "s"
    args = ["-q", "data", "shapes", "--out", str(out), "--n", "10", "--variant", "spurious"]
    assert main([*args, "--size", "64", "--jobs", "1"]) == 0
    assert (out / "truth.json").is_file() and (out / "test_reversed" / "factors.csv").is_file()
    with Image.open(out / "train" / "images" / "000000.png") as img:
        assert img.size == (64, 64) and img.mode == "RGB"


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["measure", "{tmp}/missing", "--out", "{tmp}/o.csv"], "no such file or directory"),
        (["measure", "{tmp}/rgb", "--out", "{tmp}/o.csv"], "greyscale"),
        (["measure", "{tmp}/bad.idx", "--out", "{tmp}/o.csv"], "bad.idx: not an IDX file"),
    ],
)
def test_bad_input_one_line_and_exit_code(tmp_path, capsys, argv, match):
    (tmp_path / "rgb").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb" / "a.png")
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x03\x04garbage")
    code = main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("glance: error:") and match in err
    assert not (tmp_path / "o.csv").exists()


def test_argument_errors_exit_non_zero(tmp_path, capsys):
    for argv in (
        ["data", "morpho-mnist", "--out", str(tmp_path / "x"), "--n", "0"],
        ["data", "shapes", "--out", str(tmp_path / "x"), "--size", "48"],
        ["data", "shapes", "--out", str(tmp_path / "x"), "--seed", "-2"],
        ["data", "morpho-mnist"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("glance: error:") and len(err.strip().splitlines()) == 1
    assert main(["data", "morpho-mnist", "--out", str(tmp_path / "x"), "--n", "1"]) == 2
    assert "n must be an integer >= 2" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
