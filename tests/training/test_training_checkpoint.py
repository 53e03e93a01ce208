"""Checkpoint manager: atomic saves, verification, retention, corrupt-checkpoint handling."""

from __future__ import annotations

import errno
import logging

import pytest
import torch
from torch import nn

from glance.exceptions import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointIncompatibleError,
    TrainingDivergedError,
)
from glance.training.checkpoint import CheckpointManager, flatten_state, unflatten_state


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.0, 0.99))
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(16, 4)).square().mean().backward()
        opt.step()
    gen = torch.Generator().manual_seed(seed)
    torch.randn(5, generator=gen)
    return model, opt, gen


def _save(mgr: CheckpointManager, step: int, model, opt, gen):
    return mgr.save(
        step,
        modules={"m": model},
        optimizers={"o": opt},
        generators={"g": gen},
        extra={"x": torch.arange(3.0)},
        state={"stage": "s"},
    )


def _equal_states(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal_states(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_equal_states, a, b))
    return a == b


def test_flatten_roundtrip_keeps_int_keys_and_tuples():
    _, opt, _ = _setup()
    sd = opt.state_dict()
    tensors: dict = {}
    skeleton = flatten_state(sd, "o", tensors)
    back = unflatten_state(skeleton, tensors)
    assert _equal_states(sd, back)
    assert all(isinstance(k, int) for k in back["state"])  # Adam maps state by int index
    assert isinstance(back["param_groups"][0]["betas"], tuple)


def test_save_load_restore_roundtrip(tmp_path):
    model, opt, gen = _setup(0)
    mgr = CheckpointManager(tmp_path / "ckpt")
    path = _save(mgr, 7, model, opt, gen)
    assert path.name == "ckpt-000007" and (path / "MANIFEST.json").is_file()
    expected_next = torch.randn(4, generator=gen.clone_state())
    model2, opt2, gen2 = _setup(1)
    data = mgr.load(path)
    assert data.step == 7 and data.state["stage"] == "s"
    mgr.restore(data, modules={"m": model2}, optimizers={"o": opt2}, generators={"g": gen2})
    assert _equal_states(model.state_dict(), model2.state_dict())
    assert _equal_states(opt.state_dict(), opt2.state_dict())
    assert torch.equal(torch.randn(4, generator=gen2), expected_next)
    assert torch.equal(data.extra["x"], torch.arange(3.0))


def test_retention_keeps_last_k_after_commit(tmp_path):
    model, opt, gen = _setup()
    mgr = CheckpointManager(tmp_path, keep=2)
    for step in (1, 2, 3, 4):
        _save(mgr, step, model, opt, gen)
    assert [p.name for p in mgr.committed()] == ["ckpt-000003", "ckpt-000004"]


def test_failed_save_leaves_previous_intact(tmp_path, monkeypatch):
    model, opt, gen = _setup()
    mgr = CheckpointManager(tmp_path, keep=1)
    _save(mgr, 1, model, opt, gen)
    before = sorted(p.name for p in tmp_path.iterdir())

    def disk_full(_tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    mgr.on_before_commit = disk_full
    with pytest.raises(CheckpointError, match=r"ckpt-000002.*No space left.*errno 28"):
        _save(mgr, 2, model, opt, gen)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temp dir, old one kept
    mgr.verify(tmp_path / "ckpt-000001")


def test_non_finite_weights_are_never_saved(tmp_path):
    model, opt, gen = _setup()
    mgr = CheckpointManager(tmp_path)
    with torch.no_grad():
        model[1].running_var[0] = float("nan")  # a buffer, not even a parameter
    with pytest.raises(TrainingDivergedError, match="running_var"):
        _save(mgr, 3, model, opt, gen)
    assert mgr.committed() == []
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("damage", ["truncate", "bitflip", "manifest"])
def test_corrupt_checkpoint_skipped_and_renamed(tmp_path, damage, caplog):
    model, opt, gen = _setup()
    mgr = CheckpointManager(tmp_path, keep=3)
    _save(mgr, 1, model, opt, gen)
    newest = _save(mgr, 2, model, opt, gen)
    target = newest / "model.safetensors"
    raw = bytearray(target.read_bytes())
    if damage == "truncate":
        target.write_bytes(raw[: len(raw) // 2])
    elif damage == "bitflip":
        raw[-3] ^= 0x10  # inside the tensor data, where safetensors has no checksum
        target.write_bytes(bytes(raw))
    else:
        (newest / "MANIFEST.json").unlink()
    with pytest.raises(CheckpointCorruptError):
        mgr.load(newest)
    with caplog.at_level(logging.WARNING):
        found = mgr.latest_valid()
    assert found == tmp_path / "ckpt-000001"
    if damage != "manifest":  # without a manifest it is an incomplete dir, not listed at all
        assert (tmp_path / "ckpt-000002.corrupt").is_dir()
        assert "skipping corrupt checkpoint" in caplog.text


def test_partial_temp_dirs_cleaned(tmp_path, caplog):
    mgr = CheckpointManager(tmp_path)
    (tmp_path / "ckpt-000005.tmp-abc").mkdir()
    with caplog.at_level(logging.WARNING):
        assert mgr.latest_valid() is None
    assert not (tmp_path / "ckpt-000005.tmp-abc").exists()
    assert "interrupted save" in caplog.text


def test_shape_mismatch_is_incompatible(tmp_path):
    model, opt, gen = _setup()
    mgr = CheckpointManager(tmp_path)
    path = _save(mgr, 1, model, opt, gen)
    other = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.Linear(16, 2))
    with pytest.raises(CheckpointIncompatibleError, match=r"shape mismatches.*0\.weight"):
        mgr.restore(mgr.load(path), modules={"m": other}, optimizers={}, generators={})
    with pytest.raises(CheckpointIncompatibleError, match="no RNG state for 'h'"):
        mgr.restore(mgr.load(path), modules={}, optimizers={}, generators={"h": torch.Generator()})
