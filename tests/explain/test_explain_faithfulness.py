"""Concept-level deletion / insertion faithfulness (RELIABILITY c.6) on the analytic toy world."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from glance.exceptions import ConfigError
from glance.explain import InterventionalImportance, deletion, toy


def _p_target(twin, z, target):
    """The real classifier's p(target) on G(z), computed without the code under test."""
    p = torch.softmax(twin.classify(twin.generate(z)).float(), dim=1).numpy()
    return p[np.arange(len(z)), target]


@pytest.mark.parametrize("direct", [True, False])
def test_curves_have_length_and_endpoints(size_twin, toy_images, direct):
    x = toy_images[:8]
    res = deletion.deletion_insertion(size_twin, x, n_random_orders=3, direct=direct)
    d = size_twin.n_nodes
    curves = res["per_image"]
    for key in ("deletion_curve", "insertion_curve", "random_deletion_curve"):
        assert np.asarray(curves[key]).shape == (8, d + 1)
    assert res["fractions"] == pytest.approx(np.linspace(0, 1, d + 1))
    z = size_twin.encode(x).float()
    target = np.asarray(res["target"])
    recon = _p_target(size_twin, z, target)
    all_base = _p_target(size_twin, z.mean(0).expand_as(z), target)
    dele, ins = np.asarray(curves["deletion_curve"]), np.asarray(curves["insertion_curve"])
    np.testing.assert_allclose(dele[:, 0], recon, atol=1e-6)
    np.testing.assert_allclose(dele[:, -1], all_base, atol=1e-6)
    np.testing.assert_allclose(ins[:, 0], all_base, atol=1e-6)
    np.testing.assert_allclose(ins[:, -1], recon, atol=1e-6)
    # The AUC is the trapezoid over the fraction of nodes.
    auc = np.trapezoid(dele, res["fractions"], axis=1)
    np.testing.assert_allclose(res["per_image"]["deletion_auc"]["ours"], auc, atol=1e-12)
    assert res["n_images"] == 8 and res["direct"] is direct
    json.dumps(res)  # JSON-ready


def test_deletion_follows_the_ranking(size_twin, toy_images):
    x = toy_images[:4]
    exp = InterventionalImportance(size_twin, keep_images=False).explain(x)
    res = deletion.deletion_insertion(size_twin, x, exp, n_random_orders=2)
    z = size_twin.encode(x).float()
    base = z.mean(0)
    target = exp.target
    first = [int(np.argmax(exp.direct_importance[i])) for i in range(4)]
    zp = z.clone()
    zp[np.arange(4), first] = base[first]
    expected = _p_target(size_twin, zp, target)
    got = np.asarray(res["per_image"]["deletion_curve"])[:, 1]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert res["ranking"] == "direct" and res["target"] == target.tolist()


@pytest.mark.parametrize("clf", [toy.SizeClassifier, toy.BrightnessClassifier])
@pytest.mark.parametrize("direct", [True, False])
def test_our_order_beats_random_on_toy(toy_images, clf, direct):
    twin = toy.make_twin(clf())
    res = deletion.deletion_insertion(twin, toy_images, direct=direct)
    assert res["deletion_below_random"] >= 0.8
    assert res["deletion_auc"]["ours"] < res["deletion_auc"]["random"]
    assert res["insertion_auc"]["ours"] > res["insertion_auc"]["random"]
    assert res["wilcoxon_p"]["deletion"] < 0.01 and res["wilcoxon_p"]["insertion"] < 0.01
    assert "Sobel" in res["note"] and "ROAD" in res["note"]


def test_deterministic_for_a_seed(size_twin, toy_images):
    x = toy_images[:10]
    a = deletion.deletion_insertion(size_twin, x, n_random_orders=4, random_state=7)
    b = deletion.deletion_insertion(size_twin, x, n_random_orders=4, random_state=7)
    c = deletion.deletion_insertion(size_twin, x, n_random_orders=4, random_state=8)
    assert json.dumps(a) == json.dumps(b)
    assert a["per_image"]["random_deletion_curve"] != c["per_image"]["random_deletion_curve"]
    assert a["per_image"]["deletion_curve"] == c["per_image"]["deletion_curve"]


def test_renders_in_one_batched_pass(size_twin, toy_images):
    exp = InterventionalImportance(size_twin, keep_images=False).explain(toy_images)
    calls = []

    def generate(z):
        calls.append(z.shape[0])
        return toy.render(z)

    twin = dataclasses.replace(size_twin, generate=generate)
    res = deletion.deletion_insertion(twin, toy_images, exp, n_random_orders=10)
    # 24 images x 2^3 distinct node masks, one chunk, not one call per image.
    assert calls == [res["n_rendered"]] and res["n_rendered"] <= 24 * 8


def test_all_zero_differences_give_p_one(size_twin, toy_images):
    flat = dataclasses.replace(size_twin, classify=lambda x: torch.zeros(x.shape[0], 2))
    res = deletion.deletion_insertion(flat, toy_images[:6], n_random_orders=3)
    assert res["wilcoxon_p"] == {"deletion": 1.0, "insertion": 1.0}
    assert res["deletion_below_random"] == 0.0 and res["both_beat_random"] == 0.0


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "3", None])
def test_bad_n_random_orders(size_twin, toy_images, bad):
    with pytest.raises(ConfigError, match="n_random_orders"):
        deletion.deletion_insertion(size_twin, toy_images[:2], n_random_orders=bad)


def test_mismatched_explanation(size_twin, toy_images):
    exp = InterventionalImportance(size_twin, keep_images=False).explain(toy_images[:3])
    with pytest.raises(ConfigError, match="explanation"):
        deletion.deletion_insertion(size_twin, toy_images[:5], exp)
