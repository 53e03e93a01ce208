from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from glance._io import (
    atomic_directory,
    atomic_write_json,
    load_safetensors,
    save_safetensors,
    verify_manifest,
)
from glance.cli.main import main
from glance.config import ConfigBase
from glance.exceptions import (
    CheckpointCorruptError,
    CheckpointIncompatibleError,
    ConfigError,
    TrainingDivergedError,
    UnknownNameError,
)
from glance.registry import Registry


def test_registry_unknown_name_suggests():
    reg = Registry("preset")
    reg.register("fast", 1)
    reg.register("default", 2)
    assert reg.get("fast") == 1
    with pytest.raises(UnknownNameError, match="Did you mean .fast."):
        reg.get("fats")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("fast", 3)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Cfg(ConfigBase):
    lr: float = 1e-3
    steps: int = 10
    name: str = "x"


def test_config_rejects_unknown_and_wrong_types():
    assert _Cfg.from_dict({"lr": 1, "steps": 3}).lr == 1.0
    with pytest.raises(ConfigError, match="unknown key 'stpes'.*'steps'"):
        _Cfg.from_dict({"stpes": 3})
    with pytest.raises(ConfigError, match="steps must be an integer"):
        _Cfg.from_dict({"steps": "many"})


def test_atomic_json_and_manifest_roundtrip(tmp_path):
    out = tmp_path / "run"
    with atomic_directory(out) as d:
        atomic_write_json(d / "a.json", {"x": 1})
        save_safetensors(d / "w.safetensors", {"w": torch.ones(3)})
    man = verify_manifest(out)
    assert set(man["files"]) == {"a.json", "w.safetensors"}
    assert torch.equal(load_safetensors(out / "w.safetensors")["w"], torch.ones(3))
    # tamper: flip a byte
    raw = bytearray((out / "w.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (out / "w.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointCorruptError, match="sha256 mismatch"):
        verify_manifest(out)


def test_atomic_directory_failure_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with atomic_directory(out) as d:
            (d / "partial.txt").write_text("x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_manifest_newer_format_refused(tmp_path):
    with atomic_directory(tmp_path / "r") as d:
        (d / "a.txt").write_text("x")
    m = json.loads((tmp_path / "r" / "MANIFEST.json").read_text())
    m["format_version"] = 99
    (tmp_path / "r" / "MANIFEST.json").write_text(json.dumps(m))
    with pytest.raises(CheckpointIncompatibleError, match="format 99"):
        verify_manifest(tmp_path / "r")


def test_nan_never_saved(tmp_path):
    with pytest.raises(TrainingDivergedError, match="'w'"):
        save_safetensors(tmp_path / "w.safetensors", {"w": torch.tensor([1.0, float("nan")])})
    assert not (tmp_path / "w.safetensors").exists()


def test_corrupt_safetensors(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(b"\x89PNG garbage")
    with pytest.raises(CheckpointCorruptError, match="bad.safetensors"):
        load_safetensors(p)


def test_cli_help_and_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert "glance" in capsys.readouterr().out
