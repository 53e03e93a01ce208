"""``glance fit`` and ``glance evaluate`` through ``main(argv)``."""

from __future__ import annotations

import json

import pytest

from glance._io import sha256_file, verify_manifest
from glance.cli.main import main
from helpers import fit_argv, morpho_workspace


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return morpho_workspace(tmp_path_factory.mktemp("cli"))


def test_fit_evaluate_and_reproducibility(workspace, capsys):
    root = workspace[0]
    run_a, run_b = root / "run-a", root / "run-b"
    assert main(fit_argv(workspace, run_a)) == 0
    verify_manifest(run_a)
    info = json.loads((run_a / "data.json").read_text())
    assert info["test_split"] == "t10k" and info["train_split"] == "train"
    # Same seed, same data, same machine: byte-identical weights.
    assert main(fit_argv(workspace, run_b)) == 0
    for name in ("encoder", "head", "generator", "discriminator", "mixture"):
        rel = f"model/{name}.safetensors"
        assert sha256_file(run_a / rel) == sha256_file(run_b / rel), rel
    capsys.readouterr()
    out_json = root / "m.json"
    assert main(["-q", "evaluate", str(run_a), "--json", str(out_json)]) == 0
    table = capsys.readouterr().out
    assert "fidelity" in table and "alignment_r2 thickness" in table and "dci completeness" in table
    metrics = json.loads((run_a / "metrics.json").read_text())
    assert metrics == json.loads(out_json.read_text())
    assert metrics["n_images"] == 24 and "t10k" in metrics["data"]
    for key in (
        "fidelity",
        "reconstruction_fidelity",
        "sampled_fidelity",
        "alignment_r2",
        "generated_alignment",
        "mig",
        "mig_reference",
        "dci",
        "fid",
        "kid",
        "fit_seconds",
    ):
        assert key in metrics
    assert (run_a / "reconstructions.png").is_file() and (run_a / "samples.png").is_file()
    verify_manifest(run_a)  # the manifest was rewritten to include the new files
    # --data evaluates on any dataset of the same format (here the training split), sealed
    # beside the run's own figures, never over them.
    assert (
        main(
            [
                "-q",
                "evaluate",
                str(run_a),
                "--data",
                str(workspace[1]),
                "--split",
                "train",
                "--n-images",
                "10",
            ]
        )
        == 0
    )
    assert json.loads((run_a / "metrics.json").read_text()) == metrics
    (other,) = (run_a / "evaluations").iterdir()
    assert other.name.endswith("-train-" + other.name.rsplit("-", 1)[-1])
    beside = json.loads((other / "metrics.json").read_text())
    assert beside["n_images"] == 10 and beside["own_data"] is False
    assert (other / "reconstructions.png").is_file()
    verify_manifest(run_a)


def test_refuses_to_overwrite_and_resumes_finished(workspace, capsys):
    root = workspace[0]
    run = root / "run-c"
    assert main(fit_argv(workspace, run)) == 0
    capsys.readouterr()
    assert main(fit_argv(workspace, run)) == 3
    assert "is not empty; pass --resume" in capsys.readouterr().err
    before = sha256_file(run / "model" / "generator.safetensors")
    assert main(fit_argv(workspace, run, "--resume")) == 0
    assert sha256_file(run / "model" / "generator.safetensors") == before


def test_dry_run_and_config_errors(workspace, capsys, tmp_path):
    assert main(fit_argv(workspace, tmp_path / "never", "--dry-run")) == 0
    out = capsys.readouterr().out
    assert "generator_steps: 4" in out and "preset: tiny" in out
    assert "# training precision on cpu (16 px images): fp32" in out  # "auto" on a CPU
    assert not (tmp_path / "never").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nencoder_stepz = 3\n", encoding="utf-8")
    args = fit_argv(workspace, tmp_path / "run")
    args[args.index("--config") + 1] = str(bad)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and "encoder_stepz" in err and "encoder_steps" in err
    assert main(["-q", "evaluate", str(tmp_path / "absent")]) == 3
