"""Counterfactuals: verified by the real classifier, small, and honest about failure."""

from __future__ import annotations

import numpy as np
import torch

from glance.explain import CounterfactualSearch, LocalExplainer, toy
from glance.explain.counterfactual import second_most_likely


def _verify(twin, images, cf):
    """Re-apply each image's interventions and ask the real classifier again."""
    z = twin.encode(images)
    preds = []
    for i, nodes in enumerate(cf.nodes):
        ivs = {
            twin.nodes.index(n): z[i : i + 1, twin.nodes.index(n)]
            + d * float(twin.node_std[twin.nodes.index(n)])
            for n, d in nodes.items()
        }
        zp = twin.intervene(z[i : i + 1], ivs)
        preds.append(int(twin.classify(twin.generate(zp)).argmax(1)))
    return np.array(preds)


def test_counterfactuals_flip_the_real_classifier(size_twin, toy_images):
    exp = LocalExplainer(size_twin).explain(toy_images)
    cf = exp.counterfactual
    assert cf.valid.mean() >= 0.9
    np.testing.assert_array_equal(_verify(size_twin, toy_images, cf), cf.prediction)
    np.testing.assert_array_equal(cf.valid, cf.prediction == cf.target)
    # Binary problem: the default target is the other class.
    np.testing.assert_array_equal(cf.target, 1 - exp.prediction)
    # Smallest set: the size classifier is flipped through size alone.
    assert all(list(n) == ["size"] for n, v in zip(cf.nodes, cf.valid, strict=True) if v)
    assert np.all(np.isfinite(cf.proximity)) and np.all(cf.proximity > 0)


def test_default_target_is_second_most_likely():
    p = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [0.2, 0.2, 0.6]])
    assert second_most_likely(p).tolist() == [2, 2, 0]


def test_target_equal_to_reconstruction_class_needs_no_intervention(size_twin, toy_images):
    exp = CounterfactualSearch(size_twin).explain(toy_images[:6], target=None)
    same = exp.reconstruction_prediction
    exp2 = CounterfactualSearch(size_twin).explain(toy_images[:6], target=torch.as_tensor(same))
    assert all(n == {} for n in exp2.counterfactual.nodes)
    assert exp2.counterfactual.valid.all()
    assert exp.counterfactual.valid.all() and all(len(n) >= 1 for n in exp.counterfactual.nodes)


class _Constant(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([[2.0, 0.0]]).expand(x.shape[0], 2)


def test_unflippable_classifier_reports_invalid(toy_images):
    twin = toy.make_twin(_Constant())
    exp = CounterfactualSearch(twin).explain(toy_images[:4], target=1, max_nodes=2)
    cf = exp.counterfactual
    assert not cf.valid.any()
    assert (cf.prediction == 0).all()
    assert np.allclose(cf.probability, 1 / (1 + np.exp(2.0)), atol=1e-6)


class _Both(torch.nn.Module):
    """Class 1 only when the square is much larger AND much brighter than typical."""

    def __init__(self) -> None:
        super().__init__()
        self.size, self.bright = toy.SizeClassifier(), toy.BrightnessClassifier()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.size(x)[:, 1] - self.size(x)[:, 0] - 4.0
        b = self.bright(x)[:, 1] - self.bright(x)[:, 0] - 6.0
        m = torch.minimum(a, b)
        return torch.stack([-m / 2, m / 2], 1)


def test_two_nodes_when_one_is_not_enough(toy_images):
    twin = toy.make_twin(_Both(), with_scm=False)
    z = toy.measure(toy_images)
    small = torch.nonzero((z[:, 0].abs() < 0.5) & (z[:, 1].abs() < 0.5)).flatten()[:4]
    exp = CounterfactualSearch(twin).explain(toy_images[small], target=1)
    cf = exp.counterfactual
    assert cf.valid.all()
    assert all(set(n) == {"size", "brightness"} for n in cf.nodes)
    np.testing.assert_array_equal(_verify(twin, toy_images[small], cf), cf.prediction)
