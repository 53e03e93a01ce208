"""Mixed precision: ``mixed_precision="bf16"`` autocasts on CPU too (it used to fall back to fp32
silently); ``"auto"`` autocasts on CPU only with bf16 matrix units and images of 128 px or more
(and names bf16 from 64 px), ``"off"`` stays fp32, ``"fp16"`` says it cannot; a fit records what
it computed in."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from glance.estimator import Glance, load
from glance.training import loop as loop_mod

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("mode", "enabled"), [("bf16", True), ("auto", False), ("off", False), ("fp16", False)]
)
def test_cpu_autocasts_only_when_bf16_is_asked_for(mode, enabled):
    prec = loop_mod._Precision(CPU, mode)
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with prec.autocast():
        out = a @ b
    assert prec.enabled is enabled
    assert out.dtype == (torch.bfloat16 if enabled else torch.float32)
    assert not prec.use_scaler  # bf16 needs no loss scaling


@pytest.mark.parametrize(
    ("units", "side", "enabled", "hint"),
    [
        (True, 128, True, False),
        (True, 256, True, False),
        (True, 64, False, True),
        (True, 32, False, False),
        (False, 128, False, False),
        (False, 64, False, False),
        (True, None, False, False),
    ],
)
def test_auto_on_cpu_uses_bf16_units_for_large_images_and_names_them_for_mid_ones(
    monkeypatch, caplog, units, side, enabled, hint
):
    monkeypatch.setattr(loop_mod, "cpu_has_bf16_units", lambda: units)
    with caplog.at_level(logging.INFO, logger="glance.training.loop"):
        prec = loop_mod._Precision(CPU, "auto", side)
    assert prec.enabled is enabled
    assert prec.name == ("bf16" if enabled else "fp32")
    assert prec.hint_bf16 is hint
    assert ("mixed_precision='bf16' made" in caplog.text) is hint
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with prec.autocast():
        assert (a @ b).dtype == (torch.bfloat16 if enabled else torch.float32)
    # an explicit choice is followed, with no hint
    assert loop_mod._Precision(CPU, "off", side).name == "fp32"
    assert not loop_mod._Precision(CPU, "off", side).hint_bf16
    assert loop_mod._Precision(CPU, "bf16", side).name == "bf16"


def test_training_precision_plans_a_cuda_fit_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert loop_mod.training_precision("cuda", "off", 64) == "fp32"
    assert loop_mod.training_precision("cuda", "bf16", 64) == "bf16"
    assert loop_mod.training_precision("cuda", "auto", 64) == "bf16 or fp16 (the GPU's)"
    assert loop_mod.training_precision("cpu", "bf16", 64) == "bf16"


def test_cpu_bf16_units_probe_answers_a_bool():
    assert isinstance(loop_mod.cpu_has_bf16_units(), bool)


def test_fp16_on_cpu_warns_that_it_trains_in_fp32(caplog):
    with caplog.at_level(logging.WARNING, logger="glance.training.loop"):
        loop_mod._Precision(CPU, "fp16")
    assert "fp16" in caplog.text and "fp32" in caplog.text


def test_bf16_fit_on_cpu_trains_in_bf16(tiny_classifier, tiny_data, monkeypatch, tmp_path):
    """A whole (tiny) fit under CPU bf16 autocast: the generator's convolutions run in bf16,
    every logged loss is finite, the fitted weights stay fp32, and the run records bf16."""
    dtypes: set[torch.dtype] = set()
    conv2d = torch.nn.functional.conv2d

    def recording(x, w, *args, **kwargs):
        out = conv2d(x, w, *args, **kwargs)
        dtypes.add(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.functional, "conv2d", recording)
    train = {"encoder_steps": 4, "generator_steps": 4, "generator_batch": 8}
    est = Glance(
        tiny_classifier,
        contexts=["thickness", "intensity"],
        preset="tiny",
        config={"train": {**train, "mixed_precision": "bf16"}},
        random_state=0,
        quiet=True,
    ).fit(tiny_data, out=tmp_path / "run")
    assert torch.bfloat16 in dtypes
    assert est.precision_ == "bf16"
    assert load(tmp_path / "run", classifier=tiny_classifier).precision_ == "bf16"
    logged = [v for rec in est.history_ for k, v in rec.items() if k not in ("step", "stage")]
    assert logged and all(math.isfinite(v) for v in logged if isinstance(v, float))
    assert all(p.dtype == torch.float32 for p in est.generator_.parameters())


def test_auto_fit_on_cpu_trains_in_fp32_and_says_so(tiny_classifier, tiny_data, monkeypatch):
    """'auto' on a CPU (even one with bf16 matrix units) trains small images in fp32, and the fit
    says so."""
    monkeypatch.setattr(loop_mod, "cpu_has_bf16_units", lambda: True)
    est = Glance(
        tiny_classifier,
        contexts=["thickness", "intensity"],
        preset="tiny",
        config={"train": {"encoder_steps": 2, "generator_steps": 2, "generator_batch": 8}},
        random_state=0,
        quiet=True,
    ).fit(tiny_data)
    assert est.precision_ == "fp32"
