"""The generator's moving average: the ramped-up decay (StyleGAN2-ADA's ema_rampup)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from glance.exceptions import ConfigError
from glance.training.config import TrainConfig
from glance.training.loop import ema_beta_at, make_ema, update_ema


def _half_life(beta: float) -> float:
    return math.log(0.5) / math.log(beta)


def test_rampup_half_life_is_a_fraction_of_the_steps_done():
    t = TrainConfig(ema_beta=0.995, ema_rampup=0.05)
    for steps in (1, 20, 200, 600):
        assert _half_life(ema_beta_at(t, steps)) == pytest.approx(0.05 * steps, rel=1e-9)


def test_rampup_never_exceeds_the_configured_beta():
    t = TrainConfig(ema_beta=0.995, ema_rampup=0.05)
    betas = [ema_beta_at(t, k) for k in range(1, 5000)]
    assert all(b <= 0.995 for b in betas)
    assert betas == sorted(betas)  # the average only slows down
    assert betas[-1] == 0.995  # the fixed beta from a half-life of 0.05 k > 138 steps on


def test_without_rampup_the_beta_is_fixed():
    t = TrainConfig(ema_beta=0.99, ema_rampup=None)
    assert ema_beta_at(t, 1) == ema_beta_at(t, 10_000) == 0.99


def test_first_step_forgets_the_random_initialisation():
    model = nn.Linear(3, 2)
    ema = make_ema(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    update_ema(ema, model, ema_beta_at(TrainConfig(), 1))
    for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(p_ema, p, atol=1e-5, rtol=0)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_rampup_out_of_range_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="ema_rampup"):
        TrainConfig(ema_rampup=bad).validate()
