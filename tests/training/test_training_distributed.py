"""torchrun + DDP on 2 CPU processes (gloo): identical ranks, parity with one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from glance._io import load_safetensors

DRIVER = Path(__file__).with_name("ddp_driver.py")
TIMEOUT = 300


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    return env


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", str(DRIVER), *args]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)


def _load(dump: Path, rank: int) -> dict[str, torch.Tensor]:
    return load_safetensors(dump / f"params-rank{rank}.safetensors")


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    single = subprocess.run(
        [sys.executable, str(DRIVER), str(tmp_path / "run1"), str(tmp_path / "d1")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    multi = _torchrun(str(tmp_path / "run2"), str(tmp_path / "d2"))
    assert multi.returncode == 0, multi.stderr[-3000:]
    r0, r1, one = _load(tmp_path / "d2", 0), _load(tmp_path / "d2", 1), _load(tmp_path / "d1", 0)
    for key in r0:
        assert torch.equal(r0[key], r1[key]), f"ranks differ in {key}"
    for key in r0:  # same global batch: equal up to the order of float additions
        assert torch.allclose(r0[key], one[key], rtol=1e-3, atol=1e-4), key
    # Only rank 0 wrote the run: one set of checkpoints, one metrics log.
    ckpts = sorted(p.name for p in (tmp_path / "run2" / "checkpoints").glob("ckpt-*"))
    assert ckpts == sorted(p.name for p in (tmp_path / "run1" / "checkpoints").glob("ckpt-*"))
    assert (tmp_path / "run2" / "MANIFEST.json").is_file()
    # It really ran data-parallel: the checkpoints record two processes.
    state = json.loads((tmp_path / "run2" / "checkpoints" / ckpts[-1] / "state.json").read_text())
    assert state["world_size"] == 2


@pytest.mark.slow
def test_nan_on_one_rank_rolls_back_all(tmp_path):
    res = _torchrun(str(tmp_path / "run"), str(tmp_path / "d"), "1", "5")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "non-finite loss term" in res.stderr and "rolling back" in res.stderr
    r0, r1 = _load(tmp_path / "d", 0), _load(tmp_path / "d", 1)
    for key in r0:
        assert torch.equal(r0[key], r1[key]), f"ranks differ in {key} after the rollback"
        assert torch.isfinite(r0[key]).all()
