"""The adapter to glance.causal's SCM, and the soundness / sanity metrics on the toy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from toy_run import ToyRun

from glance.causal import CausalGraph, StructuralCausalModel
from glance.exceptions import ConfigError, ShapeError
from glance.explain import (
    GlanceSCMAdapter,
    InterventionalImportance,
    Twin,
    randomisation,
    soundness,
    toy,
)


def _fitted_scm(z: np.ndarray, offset=(0.0, 0.0, 0.0), scale=(1.0, 1.0, 1.0)):
    names = ["size", "brightness", "concept_0", "output_1"]
    g = CausalGraph.from_edges(names, [("size", "brightness"), ("brightness", "output_1")])
    vals = np.asarray(offset) + np.asarray(scale) * z
    out = vals[:, 1] * 2.0 + 0.1 * np.random.default_rng(0).normal(size=len(z))
    return StructuralCausalModel(g).fit(np.c_[vals, out])


def test_adapter_matches_linear_scm_counterfactual():
    z = toy.LinearSCM(3, {(0, 1): 0.8}).sample(3000, random_state=1)
    adapter = GlanceSCMAdapter(_fitted_scm(z), toy.NODES)
    assert adapter.descendants(0) == frozenset({1})
    assert adapter.descendants(1) == adapter.descendants(2) == frozenset()
    rows = z[:5]
    new = rows[:, 0] + 1.0
    got = adapter.counterfactual(rows, {0: new})
    np.testing.assert_allclose(got[:, 0], new)
    # Residual of brightness kept; the fitted slope is ≈ 0.8.
    np.testing.assert_allclose(got[:, 1] - rows[:, 1], 0.8, atol=0.05)
    np.testing.assert_array_equal(got[:, 2], rows[:, 2])


def test_adapter_converts_raw_units():
    z = toy.LinearSCM(3, {(0, 1): 0.8}).sample(3000, random_state=1)
    off, sc = np.array([2.5, 150.0, 0.0]), np.array([0.6, 40.0, 1.0])
    adapter = GlanceSCMAdapter(_fitted_scm(z, off, sc), toy.NODES, off, sc)
    got = adapter.counterfactual(z[:5], {0: z[:5, 0] + 1.0})
    np.testing.assert_allclose(got[:, 1] - z[:5, 1], 0.8, atol=0.05)  # back in z units


def test_twin_with_glance_scm_gives_toy_truth(toy_images):
    z = toy.LinearSCM(3, {(0, 1): 0.8}).sample(3000, random_state=1)
    twin = Twin(
        toy.measure,
        toy.render,
        toy.BrightnessClassifier(),
        nodes=toy.NODES,
        classes=("0", "1"),
        scm=GlanceSCMAdapter(_fitted_scm(z), toy.NODES),
    )
    ref = InterventionalImportance(toy.make_twin(toy.BrightnessClassifier())).explain(toy_images)
    exp = InterventionalImportance(twin).explain(toy_images)
    np.testing.assert_allclose(exp.importance, ref.importance, atol=0.03)


def test_composition_and_reversibility_on_toy(size_twin, toy_images):
    comp = soundness.composition(size_twin, toy_images)
    assert comp["null_latent_max_abs"] < 1e-9 and comp["null_image_l1"] < 1e-7
    assert comp["cycle_image_l1"] < 0.01 and comp["cycle_class_agreement"] >= 0.95
    rev = soundness.reversibility(size_twin, toy_images, delta=1.0)
    assert set(rev["image_l1"]) == set(toy.NODES)
    assert rev["mean_image_l1"] < 0.01 and rev["mean_class_agreement"] >= 0.95


def test_composition_detects_a_broken_generator(toy_images):
    twin = toy.make_twin()

    def noisy(z):  # a generator that is not a function of z alone
        return (toy.render(z) + 0.2 * torch.rand(z.shape[0], 1, 16, 16)).clamp(0, 1)

    bad = Twin(
        twin.encode, noisy, twin.classify, nodes=twin.nodes, classes=twin.classes, scm=twin.scm
    )
    assert soundness.composition(bad, toy_images)["null_image_l1"] > 0.02


def test_effectiveness_tracks_and_detects_wrong_direction(size_twin, toy_images):
    def area_size(images):
        return toy.measure(images)[:, 0].numpy()

    res = soundness.effectiveness(size_twin, toy_images, "size", area_size)
    assert res["spearman"] > 0.95 and 0.9 < res["slope"] < 1.1
    # Intervening on position must not move the measured size.
    other = soundness.effectiveness(size_twin, toy_images, "concept_0", area_size)
    assert abs(other["slope"]) < 0.1


def test_randomisation_sanity(toy_images):
    clf = toy.BrightnessClassifier()
    twin = toy.make_twin(clf)
    before = [p.clone() for p in clf.parameters()]
    res = randomisation.randomisation_sanity(twin, toy_images, clf)
    assert all(torch.equal(a, b) for a, b in zip(before, clf.parameters(), strict=True))
    assert len(res["per_image"]) == len(toy_images)
    assert res["mean_spearman"] <= 0.3
    assert res["partial_spearman"] <= 0.3 and res["magnitude_ratio"] <= 0.1
    assert res["partial_spearman_stats"]["n_nodes"] == twin.n_nodes
    # Control: "randomising" into the same function must correlate perfectly.
    same = randomisation.randomisation_sanity(twin, toy_images, _Frozen(clf))
    assert same["mean_spearman"] > 0.9
    assert same["partial_spearman"] == pytest.approx(1.0) and same["magnitude_ratio"] == 1.0
    # eMPRT: the same function explained twice is exactly as complex; entropy within [0, log V].
    assert same["complexity_ratio"] == pytest.approx(1.0)
    assert 0.0 <= same["complexity_trained"] <= np.log(twin.n_nodes) + 1e-9


def test_randomisation_sanity_cascade_and_diagnostics(toy_images):
    clf = toy.BrightnessClassifier()
    twin = toy.make_twin(clf)
    res = randomisation.randomisation_sanity(twin, toy_images, clf, cascade=True)
    layers = [m for m in clf.modules() if any(True for _ in m.parameters(recurse=False))]
    assert [c["layers_randomised"] for c in res["cascade"]] == list(range(1, len(layers) + 1))
    # Randomising every layer in the cascade is the full randomisation (same seed, same order).
    assert res["cascade"][-1]["mean_spearman"] == pytest.approx(res["mean_spearman"])
    assert res["cascade"][-1]["partial_spearman"] == pytest.approx(res["partial_spearman"])
    assert len(res["image_change"]) == twin.n_nodes and min(res["image_change"]) >= 0
    assert 0 <= res["top1_agreement"] <= 1 and res["magnitude_ratio"] >= 0
    for key in ("spearman_trained_vs_image_change", "spearman_randomised_vs_image_change"):
        assert -1 <= res[key] <= 1
    # No layer randomised: an exact copy, so the importances rank the same.
    copy0 = randomisation.randomised_copy(clf, 0, top_layers=0)
    x = torch.rand(4, *toy_images.shape[1:])
    assert torch.equal(copy0(x), clf(x))


def _importances(seed: int = 0, n: int = 64, v: int = 10):
    """Synthetic (n, v) importances: the image change of each node, spread widely as in the
    benchmark's twins, a trained classifier's own signal on top, and the randomised
    classifier's response to the image change alone (monotone, with its own noise)."""
    rng = np.random.default_rng(seed)
    change = np.exp(rng.normal(0.0, 1.0, (n, v)))
    trained = change + rng.uniform(0.0, 1.0, (n, v))
    randomised = 0.01 * change * np.exp(0.2 * rng.normal(size=(n, v)))
    return change, trained, randomised


def _plain_spearman(a, b) -> float:
    return float(np.mean([spearmanr(u, w)[0] for u, w in zip(a, b, strict=True)]))


def test_partial_rank_correlation_removes_the_shared_image_change():
    change, trained, randomised = _importances()
    # Both react most to the nodes that change the image most: the plain rank test fails...
    assert _plain_spearman(trained, randomised) > 0.8
    res = randomisation.partial_rank_correlation(trained, randomised, change)
    # ... and the partial one does not: nothing of the trained signal is shared.
    assert res["pooled"] <= 0.3 and res["per_image_mean"] <= 0.3
    lo, hi = res["pooled_ci95"]
    assert lo <= res["pooled"] <= hi
    assert (res["n_images"], res["n_nodes"], res["df"]) == (64, 10, 512)
    # An image whose trained ranking is exactly the image change's has no residual to compare.
    same_order = np.all(np.argsort(trained, 1) == np.argsort(change, 1), axis=1)
    assert res["n_undefined"] == int(same_order.sum())
    # A randomised classifier that follows the image change exactly shares nothing either.
    exact = randomisation.partial_rank_correlation(trained, 0.01 * change**1.5, change)
    assert exact["pooled"] == 0.0 and exact["per_image_mean"] == 0.0


def test_partial_rank_correlation_keeps_a_shared_signal():
    change, trained, _ = _importances()
    # The reverse: a "randomised" classifier that still carries the trained one's signal.
    noise = np.exp(0.05 * np.random.default_rng(1).normal(size=trained.shape))
    res = randomisation.partial_rank_correlation(trained, 0.01 * trained * noise, change)
    assert res["pooled"] > 0.8 and res["pooled_ci95"][0] > 0.7


def test_partial_rank_correlation_matches_the_textbook_formula():
    rng = np.random.default_rng(2)
    a, b, c = rng.normal(size=(3, 1, 12))
    b = b + a  # correlated beyond c
    r_ab, r_ac, r_bc = (spearmanr(u[0], w[0])[0] for u, w in ((a, b), (a, c), (b, c)))
    expected = (r_ab - r_ac * r_bc) / np.sqrt((1 - r_ac**2) * (1 - r_bc**2))
    res = randomisation.partial_rank_correlation(a, b, c, n_bootstrap=0)
    assert res["pooled"] == pytest.approx(expected)
    assert res["per_image_mean"] == pytest.approx(expected)
    assert np.isnan(res["pooled_ci95"]).all()
    # Ranks only: monotone transforms of any input change nothing.
    again = randomisation.partial_rank_correlation(np.exp(a), b**3, 2 * c + 1, n_bootstrap=0)
    assert again["pooled"] == pytest.approx(expected)


def test_partial_rank_correlation_degenerate_cases():
    change, trained, randomised = _importances(n=8)
    # A "trained" ranking that image change explains entirely leaves nothing to compare:
    # NaN, so that a check reading it fails (an explainer blind to the classifier lands here).
    blind = randomisation.partial_rank_correlation(change**2, randomised, change)
    assert np.isnan(blind["pooled"]) and blind["n_undefined"] == 8
    with_nan = change.copy()
    with_nan[0, 0] = np.nan
    res = randomisation.partial_rank_correlation(trained, randomised, with_nan)
    assert res["df"] == 7 * 8 and np.isfinite(res["pooled"])
    with pytest.raises(ShapeError, match="partial_rank_correlation"):
        randomisation.partial_rank_correlation(change, randomised[:, :3], change)


def test_magnitude_ratio():
    assert randomisation.magnitude_ratio([[1.0, 2.0]], [[-0.1, 0.2]]) == pytest.approx(0.1)
    assert np.isnan(randomisation.magnitude_ratio(np.zeros((2, 3)), np.ones((2, 3))))


class _Frozen(torch.nn.Module):
    """A classifier without parameters: re-initialisation leaves it as it is."""

    def __init__(self, clf: torch.nn.Module) -> None:
        super().__init__()
        self.__dict__["clf"] = clf  # not a submodule, so randomisation cannot reach it

    def forward(self, x):
        with torch.no_grad():
            return self.clf(x)


def _stub_glance(declare: bool) -> ToyRun:
    """A fitted-Glance stand-in over the toy world whose SCM is in raw context units."""
    mean, std = np.array([2.5, 150.0]), np.array([0.6, 40.0])
    z = toy.LinearSCM(3, {(0, 1): 0.8}).sample(3000, random_state=1)
    scm = _fitted_scm(z, np.r_[mean, 0.0], np.r_[std, 1.0])
    extra = {"scm_units_": "raw"} if declare else {}
    return ToyRun(
        toy.BrightnessClassifier(), context_mean_=mean, context_std_=std, scm_=scm, **extra
    )


def test_twin_from_glance_with_raw_unit_scm(toy_images):
    ref = InterventionalImportance(toy.make_twin(toy.BrightnessClassifier())).explain(toy_images)
    for declare in (True, False):  # declared by discovery, or recognised from the SCM's stats
        twin = Twin.from_glance(_stub_glance(declare))
        assert twin.node_kinds == ("context", "context", "concept")
        assert twin.descendants(0) == frozenset({1})
        np.testing.assert_allclose(twin.node_std[2], 1.0, atol=0.1)
        exp = InterventionalImportance(twin).explain(toy_images)
        np.testing.assert_allclose(exp.importance, ref.importance, atol=0.03)


def test_twin_from_glance_intervenes_on_a_context_in_its_fitted_scale(toy_images):
    """A context the encoder cannot read (scale near 0) is barely moved by an intervention, so
    it no longer borrows the importance of whatever else its dimension carries."""
    full = Twin.from_glance(ToyRun(toy.BrightnessClassifier()))
    np.testing.assert_allclose(full.node_std[:2], 1.0)  # no fitted scale: standardised units
    weak = Twin.from_glance(ToyRun(toy.BrightnessClassifier(), context_scale_=[1.0, 0.05]))
    np.testing.assert_allclose(weak.node_std[:2], [1.0, 0.05])
    a = InterventionalImportance(full).explain(toy_images).importance
    b = InterventionalImportance(weak).explain(toy_images).importance
    assert b[:, 1].mean() < 0.2 * a[:, 1].mean()  # brightness: the classifier's factor
    np.testing.assert_allclose(b[:, 0], a[:, 0], atol=1e-6)  # size: untouched
    for bad in ([1.0], [1.0, 0.0], [1.0, np.nan]):
        with pytest.raises(ConfigError, match="context_scale_"):
            Twin.from_glance(ToyRun(context_scale_=bad))
