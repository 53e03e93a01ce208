"""glance.Run: transactional writes, recovery, identity, the lock and sealed-only reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from glance._io import verify_manifest
from glance.exceptions import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointIncompatibleError,
    RunBusyError,
)
from glance.run import IDENTITY_FIELDS, Run, enclosing_run

IDENTITY = {
    "data_fingerprint": "d1",
    "contexts": ["thickness", "intensity"],
    "classifier": "c1",
    "layer": "features",
    "seed": 0,
    "config_hash": "h1",
    "glance_version": "0.1.0",
}


@pytest.fixture
def run(tmp_path):
    path = tmp_path / "run"
    path.mkdir()
    with Run(path).writing():
        Run.create(path, IDENTITY, config_text="train: {}\n")
    return Run.open(path)


def _seal(run, rel, text):
    with run.writing(), run.transaction() as txn:
        txn.write_text(rel, text)


def test_create_seals_identity_and_config(run):
    manifest = verify_manifest(run.path)
    assert manifest["kind"] == "glance-run"
    assert set(manifest["files"]) == {"run.json", "config.yaml"}
    assert run.identity["contexts"] == ["thickness", "intensity"]
    assert Run.is_run(run.path) and enclosing_run(run.path / "graph" / "x.png").path == run.path


def test_create_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(CheckpointError, match="is not empty"):
        with Run(tmp_path).writing():
            Run.create(tmp_path, IDENTITY)
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_transaction_replaces_a_folder_as_a_whole(run):
    with run.writing(), run.transaction() as txn:
        d = txn.directory("explanations")
        (d / "a.png").write_bytes(b"a")
        (d / "b.png").write_bytes(b"b")
    with run.writing(), run.transaction() as txn:
        (txn.directory("explanations") / "a.png").write_bytes(b"A")
    assert sorted(p.name for p in (run.path / "explanations").iterdir()) == ["a.png"]
    assert run.sealed_under("explanations") == ["explanations/a.png"]
    verify_manifest(run.path)
    assert not list(run.path.glob(".txn-*"))


def test_an_error_inside_a_transaction_leaves_the_previous_state(run):
    _seal(run, "metrics.json", "{}")
    before = (run.path / "MANIFEST.json").read_bytes()
    with pytest.raises(OSError, match="No space left"):
        with run.writing(), run.transaction() as txn:
            txn.write_text("metrics.json", '{"fidelity": 1}')
            raise OSError(28, "No space left on device")
    assert (run.path / "MANIFEST.json").read_bytes() == before
    assert (run.path / "metrics.json").read_text() == "{}"
    assert not list(run.path.glob(".txn-*"))


def test_a_crash_before_the_commit_point_is_discarded(run):
    _seal(run, "metrics.json", "{}")
    with run.writing():
        from glance.run import Transaction

        txn = Transaction(run)  # staged, never committed: the process "died" here
        txn.write_text("metrics.json", '{"fidelity": 1}')
    reopened = Run.open(run.path)
    assert (reopened.path / "metrics.json").read_text() == "{}"
    assert not list(run.path.glob(".txn-*"))


def test_a_crash_after_the_commit_point_is_rolled_forward(run, monkeypatch):
    import glance.run as run_module

    _seal(run, "metrics.json", "{}")
    real_replace = os.replace
    calls = {"n": 0}

    def dying_replace(src, dst):
        # os.replace #1 stages metrics.json, #2 writes TXN.json (the commit point), #3 moves
        # metrics.json into place; the process dies at #4, before graph/ moves
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(run_module.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        with run.writing(), run.transaction() as txn:
            txn.write_text("metrics.json", '{"fidelity": 1}')
            d = txn.directory("graph")
            (d / "graph.json").write_text("{}")
    monkeypatch.setattr(run_module.os, "replace", real_replace)
    assert list(run.path.glob(".txn-*/TXN.json"))  # committed, half applied
    with pytest.raises(CheckpointCorruptError):
        verify_manifest(run.path)  # what a reader that skipped recovery would see
    reopened = Run.open(run.path)  # finishes the write, then verifies every hash
    assert json.loads((reopened.path / "metrics.json").read_text()) == {"fidelity": 1}
    assert reopened.sealed("graph/graph.json")
    assert not list(run.path.glob(".txn-*"))


def test_two_run_objects_of_one_directory_keep_each_others_files(run):
    other = Run.open(run.path)
    _seal(other, "graph/graph.json", "{}")
    _seal(run, "metrics.json", "{}")  # run's cached manifest predates the graph
    assert {"graph/graph.json", "metrics.json"} <= set(verify_manifest(run.path)["files"])


def test_unsealed_files_are_ignored(run, caplog):
    (run.path / "graph").mkdir()
    (run.path / "graph" / "graph.json").write_text('{"nodes": []}')
    assert run.read_json("graph/graph.json") is None
    assert "not sealed" in caplog.text
    Run.open(run.path)  # an unlisted file does not make the run unusable


def test_tampering_is_detected_and_nested_manifests_are_checked(run):
    with run.writing(), run.transaction() as txn:
        d = txn.directory("model")
        (d / "encoder.safetensors").write_bytes(b"weights")
        (d / "MANIFEST.json").write_text(json.dumps({"files": {"encoder.safetensors": "0" * 64}}))
    with pytest.raises(CheckpointCorruptError, match=r"encoder\.safetensors: sha256 mismatch"):
        Run.open(run.path)
    with run.writing(), run.transaction() as txn:
        (txn.directory("model") / "encoder.safetensors").write_bytes(b"weights")
    (run.path / "metrics.jsonl").write_text("")  # unsealed: fine
    Run.open(run.path)
    (run.path / "config.yaml").write_text("train: {changed: 1}\n")
    with pytest.raises(CheckpointCorruptError, match=r"config\.yaml: sha256 mismatch"):
        Run.open(run.path)


@pytest.mark.parametrize("field", IDENTITY_FIELDS)
def test_identity_names_the_field_that_differs(run, field):
    other = dict(IDENTITY, **{field: ["other"] if field == "contexts" else "other"})
    with pytest.raises(CheckpointIncompatibleError, match=f"its {field} is"):
        run.check_identity(other)
    run.check_identity(dict(IDENTITY))


def test_reordered_contexts_are_another_run(run):
    with pytest.raises(CheckpointIncompatibleError, match="its contexts is"):
        run.check_identity(dict(IDENTITY, contexts=["intensity", "thickness"]))


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from glance.run import Run
    with Run(sys.argv[1]).writing():
        print("locked", flush=True)
        time.sleep(60)
    """
)


def test_a_second_writer_fails_clearly_and_a_dead_holder_frees_the_lock(run):
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(run.path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        with pytest.raises(RunBusyError, match=r"in use by another glance command \(pid"):
            with run.writing(wait=0.5):
                pass
        assert time.monotonic() - t0 < 5
        with pytest.raises(RunBusyError):  # readers wait for a writer too
            with run.reading(wait=0.2):
                pass
    finally:
        proc.kill()  # kill -9: the OS releases the lock; no stale pid file to clean up
        proc.wait()
    with run.writing(wait=5):
        _seal(run, "metrics.json", "{}")
