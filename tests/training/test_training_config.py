"""Configuration dataclasses, presets and config files (validated on load)."""

from __future__ import annotations

import pytest

from glance.exceptions import ConfigError, UnknownNameError
from glance.presets import PRESETS
from glance.training.config import GlanceConfig, config_hash, resolve_config


def test_presets_registered_and_valid():
    assert {"tiny", "fast", "default", "paper"} <= set(PRESETS.names())
    for name in PRESETS.names():
        cfg = PRESETS.get(name)
        assert isinstance(cfg, GlanceConfig)
        # Round trip through a plain dict re-validates every key and type.
        assert GlanceConfig.from_dict(cfg.to_dict()) == cfg
    tiny, fast = PRESETS.get("tiny").train, PRESETS.get("fast").train
    assert tiny.encoder_steps + tiny.generator_steps < fast.encoder_steps + fast.generator_steps


def test_unknown_preset_suggests_name():
    with pytest.raises(UnknownNameError, match="Did you mean 'fast'"):
        resolve_config("fsat")


def test_overrides_merge_into_preset():
    cfg = resolve_config("tiny", {"train": {"generator_steps": 3}, "loss": {"align": 2}})
    assert cfg.train.generator_steps == 3
    assert cfg.loss.align == 2.0  # int coerced to float
    assert cfg.train.encoder_steps == PRESETS.get("tiny").train.encoder_steps
    assert config_hash(cfg) != config_hash(PRESETS.get("tiny"))


def test_resolution_overrides_apply_from_their_size_and_yield_to_the_user():
    from glance.training.config import AT_RESOLUTION

    fast = PRESETS.get("fast")
    assert resolve_config("fast", resolution=28) == fast
    assert resolve_config("fast") == fast  # resolution unknown: the preset as registered
    side, changes = AT_RESOLUTION["fast"][0]
    big = resolve_config("fast", resolution=side)
    assert big.train.generator_steps == changes["train"]["generator_steps"]
    assert big.loss.reconstruction_loss == "laplacian"
    # the sizes apply in increasing order: 128 px keeps the 64 px changes and adds its own
    (s1, _), (s2, more) = AT_RESOLUTION["fast"][:2]
    assert (s1, s2) == (side, 2 * side)
    bigger = resolve_config("fast", resolution=s2)
    assert bigger.loss == big.loss and bigger.generator == big.generator
    assert bigger.train.generator_steps == big.train.generator_steps
    assert bigger.train.generator_batch == more["train"]["generator_batch"]
    assert bigger.train.generator_batch < big.train.generator_batch
    assert resolve_config("fast", resolution=2 * s2) == bigger
    # the caller's overrides win over the resolution's
    mine = resolve_config("fast", {"train": {"generator_steps": 7}}, resolution=side)
    assert mine.train.generator_steps == 7 and mine.loss.reconstruction_loss == "laplacian"
    # every registered override is valid for its preset
    for name, entries in AT_RESOLUTION.items():
        for side, _ in entries:
            GlanceConfig.from_dict(resolve_config(name, resolution=side).to_dict())


def test_fit_resolves_the_preset_for_the_data_resolution(tmp_path):
    from glance.cli.main import main
    from glance.data.pendulum import generate_pendulum

    data = generate_pendulum(tmp_path / "p", n=20, size=64, n_jobs=1)
    import io
    from contextlib import redirect_stdout

    import yaml

    buf = io.StringIO()
    argv = ["-q", "fit", "--data", str(data), "--contexts", "light_angle", "--preset", "fast"]
    with redirect_stdout(buf):
        assert main([*argv, "--out", str(tmp_path / "r"), "--dry-run"]) == 0
    printed = yaml.safe_load(buf.getvalue())
    assert (
        printed["train"]["generator_steps"]
        == resolve_config("fast", resolution=64).train.generator_steps
    )
    assert printed["loss"]["reconstruction_loss"] == "laplacian"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train": {"generator_stpes": 3}}, r"unknown key 'generator_stpes'.*'generator_steps'"),
        ({"train": {"generator_steps": "many"}}, r"generator_steps must be an integer"),
        ({"loss": {"align": -1.0}}, r"LossConfig.align must be >= 0"),
        ({"train": {"mixed_precision": "fp8"}}, r"mixed_precision must be one of"),
        ({"encoderr": {}}, r"unknown key 'encoderr'"),
    ],
)
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        resolve_config("tiny", overrides)


def test_yaml_and_toml_files(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("preset: tiny\ntrain:\n  generator_steps: 4\n", encoding="utf-8")
    assert resolve_config("fast", y).train.generator_steps == 4
    assert (
        resolve_config("fast", y).train.generator_batch == PRESETS.get("tiny").train.generator_batch
    )
    t = tmp_path / "c.toml"
    t.write_text("[loss]\nkl = 0.5\n", encoding="utf-8")
    assert resolve_config("tiny", t).loss.kl == 0.5
    bad = tmp_path / "bad.yaml"
    bad.write_text("generator:\n  w_dimm: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*unknown key 'w_dimm'"):
        resolve_config("tiny", bad)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("[train]\nbetas = 0.9\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"wrong\.toml.*betas must be a list"):
        resolve_config("tiny", wrong)
