"""Killed and preempted fits: SIGKILL during a checkpoint save, SIGTERM mid-training."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from glance._io import load_safetensors, verify_manifest
from helpers import morpho_workspace

HERE = Path(__file__).parent
TIMEOUT = 300


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    src = str(HERE.resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    return env


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = TIMEOUT) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError(f"timed out waiting for {path}")
        time.sleep(0.2)


@pytest.mark.slow
def test_sigkill_during_save_resumes_from_previous(tmp_path):
    driver = HERE / "kill_driver.py"
    ref = subprocess.run(
        [sys.executable, str(driver), str(tmp_path / "ref"), str(tmp_path / "unused"), "-1"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert ref.returncode == 0, ref.stderr[-2000:]
    run, marker = tmp_path / "run", tmp_path / "marker"
    proc = subprocess.Popen(
        [sys.executable, str(driver), str(run), str(marker), "6"],
        env=_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(marker, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    ckpts = run / "checkpoints"
    assert not (ckpts / "ckpt-000006").exists()  # the interrupted save never became visible
    assert any(".tmp-" in p.name for p in ckpts.iterdir())  # only a temp leftover
    verify_manifest(ckpts / "ckpt-000004")
    res = subprocess.run(
        [sys.executable, str(driver), str(run), str(marker), "6", "resume"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "interrupted save" in res.stderr  # the temp dir was cleaned with a warning
    assert not any(".tmp-" in p.name for p in ckpts.iterdir())
    a = load_safetensors(tmp_path / "params-ref.safetensors")
    b = load_safetensors(tmp_path / "params-run.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # same weights as the uninterrupted fit


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_143(tmp_path):
    _, data, clf, cfg = morpho_workspace(tmp_path)
    cfg.write_text(
        "train:\n  encoder_steps: 2000\n  generator_steps: 0\n  checkpoint_every: 1000\n",
        encoding="utf-8",
    )
    run = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "glance.cli.main",
        "-q",
        "fit",
        "--data",
        str(data),
        "--classifier",
        str(clf),
        "--contexts",
        "thickness",
        "--preset",
        "tiny",
        "--config",
        str(cfg),
        "--out",
        str(run),
    ]
    proc = subprocess.Popen(args, env=_env(), stderr=subprocess.PIPE, text=True)
    _wait_for(run / "checkpoints" / "ckpt-000000" / "MANIFEST.json", proc)
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    err = proc.stderr.read()
    assert "training stopped at step" in err and "--resume" in err
    done = sorted(p.name for p in (run / "checkpoints").glob("ckpt-*"))
    assert len(done) == 2 and done[0] == "ckpt-000000" and done[1] != "ckpt-002000"
    verify_manifest(run / "checkpoints" / done[1])
