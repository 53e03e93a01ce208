"""Interventions stay inside each node's support (``Twin.node_range``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from glance.exceptions import ConfigError
from glance.explain import InterventionalImportance, soundness, toy


def _bounded(low: float = -1.0, high: float = 1.0):
    twin = toy.make_twin()
    rng = np.tile([low, high], (twin.n_nodes, 1))
    return dataclasses.replace(twin, node_range=rng)


def test_intervene_clips_to_the_support_and_propagates_the_clipped_value():
    twin = _bounded()
    z = torch.zeros(3, 3)
    out = twin.intervene(z, {0: torch.tensor([-5.0, 0.5, 5.0])}, total=True)
    assert out[:, 0].tolist() == [-1.0, 0.5, 1.0]
    # brightness follows size through the SCM with the clipped value (coefficient 0.8).
    np.testing.assert_allclose(out[:, 1].numpy(), [-0.8, 0.4, 0.8], atol=1e-6)
    assert torch.equal(twin.clip(torch.full((2, 3), 9.0)), torch.ones(2, 3))


def test_unbounded_twin_is_unchanged():
    twin = toy.make_twin()
    assert twin.node_range is None
    z = torch.zeros(2, 3)
    assert twin.intervene(z, {0: torch.tensor([5.0, -5.0])}, total=False)[:, 0].tolist() == [
        5.0,
        -5.0,
    ]


@pytest.mark.parametrize("bad", [np.zeros((3, 3)), [[1.0, 0.0]] * 3, [[0.0, np.inf]] * 3])
def test_bad_node_range_is_refused(bad):
    with pytest.raises(ConfigError, match="node_range"):
        dataclasses.replace(toy.make_twin(), node_range=bad)


def test_importance_beyond_the_support_equals_the_boundary_effect():
    x = toy.render(toy.sample_concepts(8, random_state=1))
    twin = _bounded(-3.0, 3.0)
    far = InterventionalImportance(twin).explain(x, deltas=(-50.0, 50.0))
    edge = InterventionalImportance(dataclasses.replace(twin, node_range=None)).explain(
        x, target=far.target, deltas=(-50.0, 50.0)
    )
    # Unclipped shifts of 50 std leave the support; clipped ones stop at its boundary.
    assert not np.allclose(far.importance, edge.importance)
    assert np.all(np.isfinite(far.importance))


def test_effectiveness_uses_the_shift_actually_made():
    x = toy.render(toy.sample_concepts(16, random_state=2))
    twin = _bounded(-0.5, 0.5)
    res = soundness.effectiveness(twin, x, "size", lambda im: toy.measure(im)[:, 0].numpy())
    # Measured change tracks the clipped shift: near-perfect calibration despite ±2 std asked.
    assert res["spearman"] > 0.9
    assert res["slope"] == pytest.approx(1.0, abs=0.15)


def test_a_shift_clipped_away_is_no_intervention_and_not_a_zero_effect():
    # Every image's size sits exactly at the top of its support: only a downward shift is made.
    z = toy.sample_concepts(6, random_state=3)
    z[:, 0] = 1.0
    twin = dataclasses.replace(
        toy.make_twin(),
        encode=lambda _images: z.clone(),  # the concepts are known exactly
        node_range=np.c_[np.full(3, -9.0), [1.0, 9.0, 9.0]],
    )
    x = toy.render(z)
    both = InterventionalImportance(twin).explain(x, deltas=(-1.0, 1.0))
    down = InterventionalImportance(twin).explain(x, target=both.target, deltas=(-1.0,))
    np.testing.assert_allclose(both.importance[:, 0], down.importance[:, 0], rtol=1e-9)
    assert np.all(both.importance[:, 0] > 0)
    assert np.all(both.curves[:, 0, both.deltas == 1.0] == 0)  # the clipped shift changed nothing


def test_a_node_outside_the_support_is_never_moved_the_other_way():
    twin = _bounded(-1.0, 1.0)
    z = torch.zeros(2, 3)
    z[:, 0] = torch.tensor([2.5, -3.0])  # both rows already outside the support
    up = twin.intervene(z, {0: z[:, 0] + 1.0}, total=False)[:, 0]
    down = twin.intervene(z, {0: z[:, 0] - 1.0}, total=False)[:, 0]
    # Further out: stays where it is (no intervention); back in: moves towards the support.
    assert up[0].item() == 2.5 and up[1].item() == -2.0
    assert down[0].item() == 1.5 and down[1].item() == -3.0
    assert twin.moves(0, z[:, 0], z[:, 0] + 1.0).tolist() == [False, True]
    # The same rule for whole rows (random concept directions of the significance test).
    moved = twin.clip(z + 0.5, origin=z)
    assert moved[0, 0].item() == 2.5 and moved[1, 0].item() == -2.5
    assert torch.equal(moved[:, 1:], torch.full((2, 2), 0.5))
