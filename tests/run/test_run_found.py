"""Each case of the issue "Runs you can trust", as a user meets it: through ``main(argv)``.

Every probe must end in a correct result or a one-line error (no traceback) with the documented
exit code, and no run may be left unusable.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

import glance
from glance._io import sha256_file, verify_manifest
from glance.cli.main import main
from glance.run import Run
from helpers import TinyCNN, fit_argv, morpho_workspace, write_morpho_split


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root, data, clf, cfg = morpho_workspace(tmp_path_factory.mktemp("found"))
    base = root / "base"
    assert main(_fit(data, clf, cfg, base)) == 0
    return root, data, clf, cfg, base


def _fit(data, clf, cfg, out, *extra):
    return fit_argv((None, data, clf, cfg), out, *extra)


@pytest.fixture
def run(ws, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(ws[4], copy)
    return copy


def _one_line(capsys, code, rc, *fragments):
    err = capsys.readouterr().err
    assert rc == code, err
    assert err.startswith("glance: error:") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for f in fragments:
        assert f in err, err
    return err


def _usable(run):
    verify_manifest(run)
    Run.open(run)
    assert glance.load(run).concept_names_


# -- 1. a second explain, and a disk that fills half-way -------------------------------------


def test_explain_twice_with_evaluate_between_keeps_the_run_usable(ws, run, capsys):
    data = str(ws[1])
    out = str(run / "explanations")
    assert main(["-q", "explain", str(run), "--data", data, "--index", "3:5", "--out", out]) == 0
    assert main(["-q", "evaluate", str(run)]) == 0
    assert main(["-q", "explain", str(run), "--data", data, "--index", "5:8", "--out", out]) == 0
    assert main(["-q", "report", str(run)]) == 0
    assert main(["-q", "graph", str(run), "--bootstrap", "0", "--jobs", "1"]) == 0
    assert main(["-q", "explain", str(run), "--data", data, "--index", "0:2"]) == 0  # default out
    assert main(["-q", "report", str(run)]) == 0
    _usable(run)
    recs = json.loads((run / "explanations" / "explanations.json").read_text())["explanations"]
    assert len(recs) == 2 and Run.open(run).sealed("explanations/graph_1.png")
    assert not Run.open(run).sealed("explanations/graph_2.png")  # replaced as a whole


def test_explain_hitting_a_full_disk_half_way_leaves_the_previous_explanations(
    ws, run, capsys, monkeypatch
):
    from glance.explain.explanation import LocalExplanation

    data = str(ws[1])
    assert main(["-q", "explain", str(run), "--data", data, "--index", "0:2"]) == 0
    before = verify_manifest(run)["files"]
    real = LocalExplanation.save_pngs

    def full_disk(self, directory):
        real(self.select([0]), directory)  # some pictures written, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(LocalExplanation, "save_pngs", full_disk)
    rc = main(["-q", "explain", str(run), "--data", data, "--index", "4:7"])
    _one_line(capsys, 5, rc, "no space left on the device")
    assert verify_manifest(run)["files"] == before
    assert not list(run.glob(".txn-*"))
    monkeypatch.undo()
    assert main(["-q", "report", str(run)]) == 0
    _usable(run)


# -- 2, 3, 4. resume only the same run, never a foreign folder, never two at once -------------


def test_resume_refuses_a_different_run(ws, run, capsys, tmp_path):
    root, data, clf, cfg, _ = ws
    manifest = (run / "MANIFEST.json").read_bytes()
    other = tmp_path / "other.safetensors"
    model = glance.load_classifier(clf)
    with __import__("torch").no_grad():
        next(model.parameters()).add_(0.01)
    from glance.classifiers.serialization import save_classifier

    save_classifier(model, other)
    rc = main([*_fit(data, other, cfg, run), "--resume"])
    _one_line(capsys, 3, rc, "is a different run: its classifier is")
    rc = main([*_fit(data, clf, cfg, run), "--resume", "--seed", "6"])
    _one_line(capsys, 3, rc, "its seed is 5, now 6")
    argv = _fit(data, clf, cfg, run, "--resume")
    argv[argv.index("thickness,intensity")] = "intensity,thickness"
    _one_line(capsys, 3, main(argv), "its contexts is")
    assert (run / "MANIFEST.json").read_bytes() == manifest
    assert main([*_fit(data, clf, cfg, run), "--resume"]) == 0  # the same run: fine
    _usable(run)


def test_resume_into_a_folder_glance_did_not_make_changes_nothing(ws, capsys, tmp_path):
    root, data, clf, cfg, _ = ws
    mine = tmp_path / "mine"
    (mine / "model").mkdir(parents=True)
    files = {
        "state.json": '{"precious": 1}',
        "config.yaml": "my: config\n",
        "model/encoder.safetensors": "my weights",
    }
    for rel, text in files.items():
        (mine / rel).write_text(text)
    rc = main([*_fit(data, clf, cfg, mine), "--resume"])
    _one_line(capsys, 3, rc, "not a run directory glance made")
    assert {rel: (mine / rel).read_text() for rel in files} == files
    assert sorted(p.name for p in mine.iterdir()) == ["config.yaml", "model", "state.json"]
    rc = main(_fit(data, clf, cfg, mine))
    _one_line(capsys, 3, rc, "is not empty")


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from glance.run import Run
    with Run(sys.argv[1]).writing():
        print("locked", flush=True)
        time.sleep(60)
    """
)


def test_a_second_writer_of_one_out_fails_clearly(ws, capsys, tmp_path, monkeypatch):
    import glance.run

    root, data, clf, cfg, _ = ws
    out = tmp_path / "shared"
    out.mkdir()
    monkeypatch.setattr(glance.run, "LOCK_WAIT_SECONDS", 0.5)
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        rc = main(_fit(data, clf, cfg, out))
        _one_line(capsys, 5, rc, "in use by another glance command (pid")
    finally:
        proc.kill()
        proc.wait()
    assert main(_fit(data, clf, cfg, out)) == 0  # the holder died: the lock went with it
    _usable(out)


# -- 5. operating-system errors are one line ---------------------------------------------------


@contextlib.contextmanager
def _tmpfs(path, size="4m"):
    path.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def test_read_only_file_system_is_one_line_before_any_work(ws, run, capsys, tmp_path):
    root, data, clf, cfg, _ = ws
    with _tmpfs(tmp_path / "ro", "64m") as ro:
        shutil.copytree(run, ro / "run")
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        for argv in (
            ["explain", str(ro / "run"), "--data", str(data), "--index", "0:2"],
            ["evaluate", str(ro / "run")],
            ["graph", str(ro / "run"), "--bootstrap", "0"],
            ["report", str(ro / "run")],
            ["train-classifier", "--data", str(data), "--out", str(ro / "m.safetensors")],
            _fit(data, clf, cfg, ro / "new")[1:],
        ):
            _one_line(capsys, 5, main(["-q", *argv]), "read-only file system")
        assert glance.load(ro / "run")  # a read-only run still loads
        subprocess.run(["mount", "-o", "remount,rw", str(ro)], check=True)
        _usable(ro / "run")


def test_a_full_disk_during_report_is_one_line(ws, run, capsys, tmp_path):
    with _tmpfs(tmp_path / "small", "3m") as small:
        shutil.copytree(run, small / "run", ignore=shutil.ignore_patterns("checkpoints"))
        rc = main(["-q", "explain", str(small / "run"), "--data", str(ws[1]), "--index", "0:8"])
        if rc == 0:  # the explanations fitted: fill the rest, the report cannot
            with open(small / "filler", "wb") as fh, contextlib.suppress(OSError):
                fh.write(b"\0" * (8 << 20))
            rc = main(["-q", "report", str(small / "run")])
        _one_line(capsys, 5, rc, "no space left on the device", str(small))
        (small / "filler").unlink(missing_ok=True)
        _usable(small / "run")


def test_serve_port_in_use_and_foreign_host_are_one_line(run, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        rc = main(["-q", "serve", str(run), "--port", str(port)])
        _one_line(capsys, 5, rc, f"cannot listen on 127.0.0.1:{port}", "port is in use")
    rc = main(["-q", "serve", str(run), "--host", "203.0.113.7", "--port", "0"])
    _one_line(capsys, 5, rc, "not on this machine")
    rc = main(["-q", "serve", str(run), "--host", "no-such-host.invalid", "--port", "0"])
    _one_line(capsys, 2, rc, "not a name or address of this machine")
    _one_line(capsys, 2, main(["-q", "serve", str(run), "--port", "70000"]), "--port")


def test_fit_on_a_missing_gpu_leaves_nothing(ws, capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    root, data, clf, cfg, _ = ws
    out = tmp_path / "gpu-run"
    rc = main([*_fit(data, clf, cfg, out), "--device", "cuda"])
    _one_line(capsys, 5, rc, "'cuda'", "0 CUDA device(s)")
    assert not out.exists()


def test_image_bombs_and_existing_outputs_are_one_line(run, capsys, tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb, optimize=True)
    assert bomb.stat().st_size < 2_000_000
    rc = main(["-q", "explain", str(run), str(bomb), "--out", str(tmp_path / "e")])
    _one_line(capsys, 2, rc, "bomb.png")
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((3000, 3000), np.uint8)).save(big)
    rc = main(["-q", "explain", str(run), str(big), "--out", str(tmp_path / "e")])
    _one_line(capsys, 2, rc, "3000x3000", "16x16")
    rc = main(["-q", "explain", str(run), str(big), "--out", str(big)])
    _one_line(capsys, 2, rc, "exists and is a file")


# -- 7, 8. what a run uses is what it sealed -------------------------------------------------


def test_an_unsealed_graph_copied_into_a_run_is_not_used(ws, run, capsys, tmp_path):
    donor = tmp_path / "donor"
    shutil.copytree(run, donor)
    assert main(["-q", "graph", str(donor), "--bootstrap", "0", "--jobs", "1"]) == 0
    shutil.copytree(donor / "graph", run / "graph")
    assert main(["-q", "report", str(run)]) == 0
    html = (run / "report.html").read_text()
    section = html[html.index('<section id="causal-graph">') :][:600]
    assert "Not computed" in section
    assert getattr(glance.load(run), "graph_", None) is None
    _usable(run)


def test_data_regenerated_at_the_recorded_path_is_refused(ws, run, capsys, tmp_path):
    root, data, clf, cfg, _ = ws
    moved = tmp_path / "data"
    shutil.copytree(data, moved)
    record = json.loads((run / "data.json").read_text())
    assert record["fingerprints"] and record["data"] == str(data.resolve())
    # the run records its data; regenerate that data in place (other images, same layout)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    write_morpho_split(fresh, "t10k", 24, np.random.default_rng(99))
    for f in fresh.iterdir():
        shutil.copy(f, data / f.name)
    try:
        _one_line(capsys, 2, main(["-q", "evaluate", str(run)]), "changed since", "--data")
        _one_line(
            capsys,
            2,
            main(
                ["-q", "explain", str(run), "--data", str(data)[:0] + str(data), "--index", "0:99"]
            ),
            "--index",
        )
        # an explicit --data is a choice: it is used, and recorded beside the run's figures
        assert main(["-q", "evaluate", str(run), "--data", str(data)]) == 0
        (other,) = (run / "evaluations").iterdir()
        assert json.loads((other / "metrics.json").read_text())["own_data"] is False
        assert not (run / "metrics.json").exists()  # the run's own figures are not these
    finally:
        for f in moved.iterdir():
            shutil.copy(f, data / f.name)


def test_numeric_options_are_range_checked(run, capsys):
    for argv, fragment in (
        (["graph", str(run), "--bootstrap", "-5"], "--bootstrap"),
        (["graph", str(run), "--alpha", "1.5"], "--alpha"),
        (["graph", str(run), "--threshold", "0"], "--threshold"),
        (["graph", str(run), "--jobs", "0"], "--jobs"),
        (["explain", str(run), "--significance", "-1"], "--significance"),
        (["explain", str(run), "--batch-size", "0"], "--batch-size"),
        (["evaluate", str(run), "--n-images", "0"], "--n-images"),
        (["serve", str(run), "--threads", "0"], "--threads"),
        (["demo", "--bootstrap", "-1"], "--bootstrap"),
        (["fit", "--data", "d", "--out", "o", "--seed", "-1"], "--seed"),
    ):
        _one_line(capsys, 2, main(["-q", *argv]), fragment)


def test_explain_index_past_the_end_is_refused(ws, run, capsys):
    rc = main(["-q", "explain", str(run), "--data", str(ws[1]), "--index", "0:100000"])
    _one_line(capsys, 2, rc, "0 <= A < B <= 24")


# -- your own model from the shell -----------------------------------------------------------


def test_own_architecture_through_model_and_weights(ws, capsys, tmp_path, monkeypatch):
    import torch
    from safetensors.torch import save_file

    root, data, _, cfg, _ = ws
    (tmp_path / "mynets.py").write_text(
        "from helpers import TinyCNN\n\ndef build():\n    return TinyCNN(n_classes=10)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(3)
    save_file(TinyCNN(n_classes=10).state_dict(), tmp_path / "w.safetensors")
    own = ["--model", "mynets:build", "--weights", str(tmp_path / "w.safetensors")]
    argv = _fit(data, "x", cfg, tmp_path / "own")
    i = argv.index("--classifier")
    argv[i : i + 2] = own
    assert main(argv) == 0
    out = tmp_path / "own"
    _one_line(capsys, 3, main(["-q", "evaluate", str(out)]), "holds no copy of its classifier")
    assert main(["-q", "evaluate", str(out), *own]) == 0
    assert main(["-q", "graph", str(out), "--bootstrap", "0", "--jobs", "1", *own]) == 0
    assert main(["-q", "explain", str(out), "--data", str(data), "--index", "0:2", *own]) == 0
    assert main(["-q", "report", str(out)]) == 0
    torch.manual_seed(4)
    save_file(TinyCNN(n_classes=10).state_dict(), tmp_path / "other.safetensors")
    wrong = ["--model", "mynets:build", "--weights", str(tmp_path / "other.safetensors")]
    _one_line(capsys, 3, main(["-q", "evaluate", str(out), *wrong]), "not the one")
    _one_line(capsys, 2, main(["-q", "evaluate", str(out), "--model", "nope:f"]), "cannot import")
    _one_line(capsys, 2, main(["-q", "evaluate", str(out), "--model", "mynets"]), "package.module")
    verify_manifest(out)
    assert sha256_file(out / "MANIFEST.json")
