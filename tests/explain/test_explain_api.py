"""The explainer contract: shapes, to_dict layout, batching, validation, files, no side effects."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from glance.exceptions import ConfigError, ShapeError, UnknownNameError
from glance.explain import (
    EXPLAINERS,
    CounterfactualSearch,
    InterventionalImportance,
    LocalExplainer,
    LocalExplanation,
    Twin,
    explain,
    toy,
)


@pytest.fixture(scope="module")
def full(size_twin, toy_images) -> LocalExplanation:
    return LocalExplainer(size_twin, batch_size=7).explain(toy_images)


def test_shapes(full, toy_images):
    n, v, g = len(toy_images), 3, 5
    assert len(full) == n
    assert full.importance.shape == full.direct_importance.shape == (n, v)
    assert full.curves.shape == full.direct_curves.shape == (n, v, g)
    assert full.traversal_images.shape == (n, v, g, 1, 16, 16)
    assert full.traversal_images.dtype == np.uint8
    assert full.interactions.pairs.shape == (n, 3, 2)  # top_k=5 capped at 3 nodes → 3 pairs
    assert full.interactions.grid_images.shape == (n, g, g, 1, 16, 16)
    assert full.counterfactual.images.shape == (n, 1, 16, 16)
    assert full.deltas.tolist() == [-2, -1, 0, 1, 2]


def test_to_dict_contract(full):
    d = json.loads(json.dumps(full.to_dict()))
    assert d["nodes"] == ["size", "brightness", "concept_0"]
    rec = d["explanations"][0]
    for key in (
        "importance",
        "direct_importance",
        "interactions",
        "counterfactual",
        "curves",
        "traversal",
        "pair_grid",
        "prediction",
        "target",
    ):
        assert key in rec
    assert set(rec["importance"]) == set(d["nodes"])
    assert {"target", "nodes", "prediction", "probability", "valid"} <= set(rec["counterfactual"])
    assert rec["counterfactual"]["target"] == 1 - rec["prediction"]
    assert len(rec["interactions"]) == 3
    assert np.asarray(rec["pair_grid"]["classes"]).shape == (5, 5)


def test_batched_equals_one_by_one(size_twin, toy_images, full):
    x = toy_images[:5]
    singles = [LocalExplainer(size_twin).explain(x[i : i + 1]) for i in range(5)]
    joined = LocalExplanation.concatenate(singles)
    np.testing.assert_allclose(joined.importance, full.importance[:5], atol=1e-6)
    np.testing.assert_allclose(
        joined.interactions.strength, full.interactions.strength[:5], atol=1e-6
    )
    assert joined.counterfactual.nodes == full.counterfactual.nodes[:5]
    sub = full.select([4, 0])
    np.testing.assert_array_equal(sub.importance, full.importance[[4, 0]])
    assert sub.counterfactual.nodes == (full.counterfactual.nodes[4], full.counterfactual.nodes[0])


def test_shuffled_order_and_determinism(size_twin, toy_images):
    perm = torch.randperm(len(toy_images))
    a = InterventionalImportance(size_twin).explain(toy_images)
    b = InterventionalImportance(size_twin).explain(toy_images[perm])
    np.testing.assert_allclose(a.importance[perm.numpy()], b.importance, atol=1e-6)
    c = InterventionalImportance(size_twin).explain(toy_images)
    np.testing.assert_array_equal(a.importance, c.importance)


def test_explicit_target_tracks_that_class(size_twin, toy_images):
    a = InterventionalImportance(size_twin).explain(toy_images, target=0)
    b = InterventionalImportance(size_twin).explain(toy_images, target=1)
    assert (a.target == 0).all() and (b.target == 1).all()
    np.testing.assert_allclose(a.curves, -b.curves, atol=1e-6)  # two classes: Δp0 = −Δp1


@pytest.mark.parametrize(
    ("kwargs", "exc", "word"),
    [
        ({"inputs": torch.rand(3, 16, 16)}, ShapeError, "inputs"),
        ({"inputs": torch.rand(2, 1, 16, 16) * 3}, ShapeError, "inputs"),
        ({"inputs": torch.full((2, 1, 16, 16), float("nan"))}, ShapeError, "inputs"),
        ({"target": 5}, ConfigError, "target"),
        ({"target": [0, 1, 0]}, ConfigError, "target"),
        ({"target": 0.5}, ConfigError, "target"),
        ({"deltas": []}, ConfigError, "deltas"),
        ({"deltas": [0.0]}, ConfigError, "deltas"),
        ({"interaction_deltas": [3.0]}, ConfigError, "interaction_deltas"),
        ({"top_k": 1}, ConfigError, "top_k"),
        ({"max_nodes": 0}, ConfigError, "max_nodes"),
        ({"magnitudes": [float("inf")]}, ConfigError, "magnitudes"),
        ({"bogus": 1}, ConfigError, "bogus"),
    ],
)
def test_bad_parameters_are_named(size_twin, kwargs, exc, word):
    kw = dict(kwargs)
    x = kw.pop("inputs", torch.rand(2, 1, 16, 16))
    with pytest.raises(exc, match=word):
        LocalExplainer(size_twin).explain(x, **kw)


def test_bad_constructor_and_twin():
    with pytest.raises(ConfigError, match="batch_size"):
        LocalExplainer(toy.make_twin(), batch_size=0)
    with pytest.raises(ConfigError, match="node_std"):
        Twin(
            toy.measure,
            toy.render,
            toy.SizeClassifier(),
            nodes=("a", "b", "c"),
            classes=("0", "1"),
            node_std=np.array([1.0, 0.0, 1.0]),
        )
    with pytest.raises(Exception, match="fitted"):
        LocalExplainer(object())


def test_registry():
    assert EXPLAINERS.get("local") is LocalExplainer
    assert EXPLAINERS.get("importance") is InterventionalImportance
    assert EXPLAINERS.get("counterfactual") is CounterfactualSearch
    with pytest.raises(UnknownNameError, match="local"):
        EXPLAINERS.get("locl")


@pytest.mark.parametrize("name", EXPLAINERS.names())
def test_explain_resolves_every_registered_explainer(size_twin, toy_images, name):
    """``explain(explainer=name)`` is ``EXPLAINERS.get(name)(model).explain``: every entry runs
    on a twin alone and returns the same explanation as the class itself."""
    x = toy_images[:3]
    got = explain(size_twin, x, explainer=name, keep_images=False)
    want = EXPLAINERS.get(name)(size_twin, keep_images=False).explain(x)
    assert isinstance(got, LocalExplanation) and len(got) == 3
    assert got.meta["method"] == EXPLAINERS.get(name).__name__
    np.testing.assert_array_equal(got.importance, want.importance)


def test_explain_unknown_explainer_lists_the_registry(size_twin, toy_images):
    with pytest.raises(UnknownNameError, match="counterfactual, importance, local"):
        explain(size_twin, toy_images[:1], explainer="lime")


def test_explain_rejects_an_option_of_another_explainer(size_twin, toy_images):
    with pytest.raises(ConfigError, match="n_random"):
        explain(size_twin, toy_images[:1], explainer="counterfactual", n_random=19)


def test_classifier_left_unchanged(toy_images):
    clf = toy.SizeClassifier()
    clf.train()
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    flags = [p.requires_grad for p in clf.parameters()]
    twin = Twin(toy.measure, toy.render, clf, nodes=toy.NODES, classes=("0", "1"))
    explain(twin, toy_images[:3])
    assert clf.training
    assert all(torch.equal(before[k], v) for k, v in clf.state_dict().items())
    assert [p.requires_grad for p in clf.parameters()] == flags
    assert all(p.grad is None for p in clf.parameters())


def test_save_json_and_pngs(full, tmp_path):
    sub = full.select([3])
    path = sub.save(tmp_path / "exp")
    data = json.loads(path.read_text())
    assert len(data["explanations"]) == 1
    pngs = sorted(p.name for p in (tmp_path / "exp").glob("*.png"))
    assert pngs == [f"{k}_0.png" for k in ("counterfactual", "interaction", "summary", "traversal")]
    assert all((tmp_path / "exp" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    with pytest.raises(ConfigError, match="kind"):
        full.plot(0, kind="nope")


def test_importance_only_has_no_interactions_or_counterfactual(size_twin, toy_images):
    exp = InterventionalImportance(size_twin, keep_images=False).explain(toy_images[:3])
    assert exp.interactions is None and exp.counterfactual is None
    assert exp.traversal_images is None
    rec = exp.to_dict()["explanations"][0]
    assert rec["counterfactual"] is None and rec["interactions"] is None


class _Blur:
    """A twin generator that loses the size: every reconstruction is the same square."""

    def __call__(self, z):
        return toy.render(torch.zeros_like(z) + torch.tensor([-1.5, 0.0, 0.0]))


def test_low_fidelity_is_stamped_and_warned(toy_images):
    base = toy.make_twin()
    bad = Twin(base.encode, _Blur(), base.classify, nodes=base.nodes, classes=base.classes)
    big = toy_images[toy.measure(toy_images)[:, 0] > 0.5]
    with pytest.warns(UserWarning, match="LOW FIDELITY"):
        exp = InterventionalImportance(bad).explain(big)
    assert exp.meta["low_fidelity"] and exp.meta["reconstruction_agreement"] == 0.0
    good = InterventionalImportance(base).explain(big)
    assert not good.meta["low_fidelity"] and good.meta["reconstruction_agreement"] == 1.0
    with pytest.raises(ConfigError, match="fidelity_floor"):
        InterventionalImportance(base, fidelity_floor=2.0)
