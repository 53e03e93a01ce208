"""Discrete contexts (flags, categories) are intervened on level by level."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from glance.estimator import context_levels
from glance.exceptions import ConfigError
from glance.explain import InterventionalImportance, toy


def test_context_levels_detects_discrete_columns():
    rng = np.random.default_rng(0)
    flag = rng.integers(0, 2, 200).astype(float)
    flag[3] = np.nan  # a missing value is not a level
    code = rng.integers(0, 3, 200).astype(float)
    cont = rng.normal(size=200)
    levels = context_levels(np.c_[flag, code, cont])
    assert levels == [[0.0, 1.0], [0.0, 1.0, 2.0], None]
    assert context_levels(np.c_[np.arange(11.0)]) == [None]  # more than MAX_LEVELS values
    assert context_levels(np.c_[np.linspace(0, 1, 6)]) == [None]  # 6 rows, no value repeats


def _binary_size_twin():
    """The toy with ``size`` restricted to two levels, −1 and +1 (a 'small/large' flag)."""
    return dataclasses.replace(toy.make_twin(), node_levels=(np.array([-1.0, 1.0]), None, None))


def test_shift_moves_between_levels_and_stops_at_the_ends():
    twin = _binary_size_twin()
    z = torch.tensor([-0.9, -0.9, 0.8, 0.8, 0.8])
    d = torch.tensor([1.0, 0.4, -2.0, 1.0, 3.0])
    out = twin.shift(0, z, d)
    # Any non-zero shift moves at least one level; beyond the last level it stays there.
    assert out.tolist() == [1.0, 1.0, -1.0, 1.0, 1.0]
    assert twin.moves(0, z, out).tolist() == [True, True, True, False, False]
    # Continuous nodes are shifted by node stds.
    assert twin.shift(1, torch.zeros(2), torch.tensor([1.0, -2.0])).tolist() == [1.0, -2.0]


def test_intervene_snaps_a_discrete_node_to_its_nearest_level():
    twin = _binary_size_twin()
    out = twin.intervene(torch.zeros(3, 3), {0: torch.tensor([0.3, -0.2, 7.0])}, total=False)
    assert out[:, 0].tolist() == [1.0, -1.0, 1.0]


def test_importance_of_a_flag_is_the_effect_of_flipping_it():
    z = toy.sample_concepts(12, random_state=4)
    z[:, 0] = torch.where(z[:, 0] > 0, 1.0, -1.0)
    twin = dataclasses.replace(_binary_size_twin(), encode=lambda _x: z.clone())
    x = toy.render(z)
    exp = InterventionalImportance(twin).explain(x, deltas=(-2.0, -1.0, 1.0, 2.0))
    # The one possible intervention per image: the other level.
    flipped = twin.intervene(z, {0: -z[:, 0]}, total=True)
    p_flip = torch.softmax(twin.classify(toy.render(flipped)), 1).numpy()
    p0 = torch.softmax(twin.classify(toy.render(z)), 1).numpy()
    rows = np.arange(len(z))
    expected = np.abs(p_flip[rows, exp.target] - p0[rows, exp.target])
    np.testing.assert_allclose(exp.importance[:, 0], expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "bad", [(np.array([1.0]), None, None), (None, None), ([0, np.nan], None, None)]
)
def test_bad_node_levels_are_refused(bad):
    with pytest.raises(ConfigError, match="node_levels"):
        dataclasses.replace(toy.make_twin(), node_levels=bad)
