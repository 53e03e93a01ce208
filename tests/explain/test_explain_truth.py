"""Importances are right where the truth is known by construction (the analytic toy)."""

from __future__ import annotations

import numpy as np
import torch

from glance.explain import InterventionalImportance, LocalExplainer, toy


def _probs(clf: torch.nn.Module, z: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(clf(toy.render(z)), 1).double().numpy()


def test_size_classifier_ranks_size_first(size_twin, toy_images):
    exp = InterventionalImportance(size_twin).explain(toy_images)
    assert all(exp.ranking(i)[0] == "size" for i in range(len(exp)))
    # The classifier reads the area only: brightness has no effect at all (float noise only).
    assert np.all(exp.importance[:, 1] < 1e-3 * exp.importance[:, 0])
    assert exp.importance[:, 0].min() > 0.01


def test_total_effect_follows_scm_exactly(bright_twin, toy_images):
    """Size → brightness (coefficient 0.8): the brightness classifier sees size only through it."""
    exp = InterventionalImportance(bright_twin).explain(toy_images, deltas=(-1.0, 1.0))
    z = toy.measure(toy_images)
    clf = toy.BrightnessClassifier()
    p0 = _probs(clf, z)
    t = exp.target
    rows = np.arange(len(t))
    for col, dl in enumerate(exp.deltas):
        zz = z.clone()
        zz[:, 0] += dl
        zz[:, 1] += 0.8 * dl  # the SCM's counterfactual: residual of brightness kept
        expected = _probs(clf, zz)[rows, t] - p0[rows, t]
        np.testing.assert_allclose(exp.curves[:, 0, col], expected, atol=1e-6)
    # No direct path from size to the classifier: the direct effect is (numerically) zero ...
    assert np.all(exp.direct_importance[:, 0] < 0.02 * exp.importance[:, 1])
    # ... while the total effect is substantial and smaller than brightness's own effect.
    assert exp.importance[:, 0].mean() > 0.2 * exp.importance[:, 1].mean()
    assert exp.has_descendants.tolist() == [True, False, False]


def test_direct_equals_total_without_descendants_and_not_rerendered(bright_twin, toy_images):
    n = len(toy_images)
    exp = InterventionalImportance(bright_twin).explain(toy_images, deltas=(-2, -1, 1, 2))
    np.testing.assert_array_equal(exp.direct_curves[:, 1:], exp.curves[:, 1:])
    # reconstructions + 3 nodes × 4 shifts (total) + 1 node with descendants × 4 (direct)
    assert exp.meta["n_generated"] == n * (1 + 3 * 4 + 4)


def test_without_scm_total_equals_direct(toy_images):
    twin = toy.make_twin(toy.BrightnessClassifier(), with_scm=False)
    exp = InterventionalImportance(twin).explain(toy_images)
    np.testing.assert_array_equal(exp.importance, exp.direct_importance)
    assert exp.importance[:, 0].max() < 1e-3  # size no longer reaches brightness


def test_effects_measured_against_reconstruction(size_twin, toy_images):
    exp = InterventionalImportance(size_twin).explain(toy_images, deltas=(-1, 1))
    zero = list(exp.deltas).index(0.0)
    assert np.all(exp.curves[:, :, zero] == 0)
    # Signed curves: a larger square raises p("large") (class 1).
    big = exp.target == 1
    assert np.all(exp.curves[big, 0, -1] >= 0) and np.all(exp.curves[~big, 0, -1] <= 0)


def test_interaction_of_additive_factors_is_zero_and_of_and_rule_is_not(toy_images):
    # Size classifier: logits depend on size only, so pairs without size interact exactly 0.
    exp = LocalExplainer(toy.make_twin(toy.SizeClassifier())).explain(
        toy_images, counterfactual=False
    )
    ia = exp.interactions
    for i in range(len(exp)):
        for (u, v), s in zip(ia.pairs[i], ia.strength[i], strict=True):
            if 0 not in (u, v):
                assert s < 1e-6
    # An AND of size and brightness: the joint change is not the sum of the single changes.
    exp2 = LocalExplainer(toy.make_twin(AndClassifier(), with_scm=False)).explain(
        toy_images, counterfactual=False
    )
    pair = [
        s
        for i in range(len(exp2))
        for (u, v), s in zip(exp2.interactions.pairs[i], exp2.interactions.strength[i], strict=True)
        if {int(u), int(v)} == {0, 1}
    ]
    assert np.mean(pair) > 0.05


class AndClassifier(torch.nn.Module):
    """Class 1 iff the square is large AND bright (a soft minimum of two margins)."""

    def __init__(self) -> None:
        super().__init__()
        self.size = toy.SizeClassifier()
        self.bright = toy.BrightnessClassifier()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.size(x)[:, 1] - self.size(x)[:, 0]
        b = self.bright(x)[:, 1] - self.bright(x)[:, 0]
        m = -torch.logsumexp(torch.stack([-a, -b], 1), 1)  # soft min
        return torch.stack([-m / 2, m / 2], 1)
