from __future__ import annotations

import numpy as np
import pytest
from causal_helpers import linear_gaussian

from glance.causal import BackgroundKnowledge, CausalGraph, StructuralCausalModel
from glance.exceptions import ConfigError, DataValidationError, NotFittedError, ShapeError

# a -> b -> output_y, a -> output_y ; weights chosen for hand-computable answers
W = {("a", "b"): 2.0, ("b", "output_y"): -1.5, ("a", "output_y"): 0.5}
NAMES = ["a", "b", "output_y"]


@pytest.fixture(scope="module")
def data():
    return linear_gaussian(NAMES, W, 20000, seed=0)


@pytest.fixture(scope="module")
def scm(data):
    g = CausalGraph.from_edges(NAMES, [("a", "b"), ("b", "output_y"), ("a", "output_y")])
    return StructuralCausalModel(g).fit(data)


def test_do_matches_the_analytic_interventional_mean(scm):
    s = scm.do({"a": 1.0}, n_samples=20000, random_state=1)
    assert s.shape == (20000, 3)
    assert np.all(s[:, 0] == 1.0)
    # E[b | do(a=1)] = 2; E[y | do(a=1)] = 0.5 - 1.5 * 2 = -2.5
    assert s[:, 1].mean() == pytest.approx(2.0, abs=0.05)
    assert s[:, 2].mean() == pytest.approx(-2.5, abs=0.06)
    grid = scm.do({"b": [-1.0, 0.0, 3.0]}, n_samples=20000, random_state=1)
    assert grid.shape == (3, 20000, 3)
    # a is not a descendant of b: its distribution is unchanged; E[y | do(b)] = -1.5 b
    assert np.allclose(grid[:, :, 0].mean(1), 0.0, atol=0.03)
    assert np.allclose(grid[:, :, 2].mean(1), [1.5, 0.0, -4.5], atol=0.05)


def test_counterfactual_analytic(scm, data):
    rows = data[:5]
    cf = scm.counterfactual(rows, {"b": [0.0, 1.0]})
    assert cf.shape == (2, 5, 3)
    # y' = y + w_by (b' - b) with the noise of each row kept; a is untouched
    for k, v in enumerate([0.0, 1.0]):
        assert np.allclose(cf[k, :, 0], rows[:, 0])
        assert np.allclose(cf[k, :, 2], rows[:, 2] - 1.5 * (v - rows[:, 1]), atol=0.03)
    # do(a = a + 1) moves y by the total effect 0.5 - 3 = -2.5 for every row
    shifted = scm.counterfactual(rows, {"a": 1.0}, relative=True)
    assert np.allclose(shifted[:, 2] - rows[:, 2], -2.5, atol=0.03)
    per_row = scm.counterfactual(rows, {"a": rows[:, 0][None, :]})
    assert per_row.shape == (1, 5, 3) and np.allclose(per_row[0], rows)


@pytest.mark.parametrize("mechanism", ["linear", "mlp", "gbm"])
def test_abduction_reproduces_the_factual_rows(mechanism, data):
    g = CausalGraph.from_edges(NAMES, [("a", "b"), ("b", "output_y"), ("a", "output_y")])
    scm = StructuralCausalModel(g, mechanism=mechanism).fit(data[:2000])
    rows = data[2000:2050]
    same = scm.counterfactual(rows, {"b": rows[:, 1][None, :]})[0]
    assert np.allclose(same, rows, atol=1e-9)


def test_effects_and_global_importance(scm, data):
    sd = data.std(0)
    eff = scm.standardised_effects()
    assert eff[("a", "b")] == pytest.approx(2.0 * sd[0] / sd[1], abs=0.02)
    assert eff[("b", "output_y")] == pytest.approx(-1.5 * sd[1] / sd[2], abs=0.02)
    assert scm.total_effect("a", "output_y") == pytest.approx(-2.5 * sd[0] / sd[2], abs=0.02)
    imp = scm.global_importance()
    assert set(imp) == {"output_y"} and set(imp["output_y"]) == {"a", "b"}
    assert imp["output_y"]["a"] == pytest.approx(-2.5 * sd[0], abs=0.05)
    assert imp["output_y"]["b"] == pytest.approx(-1.5 * sd[1], abs=0.05)
    g = scm.to_graph()
    assert g.is_dag() and g.edge("a", "b").effect == pytest.approx(eff[("a", "b")])


def test_nonlinear_mechanisms_follow_the_curve():
    rng = np.random.default_rng(0)
    a = rng.uniform(-2, 2, 4000)
    b = np.tanh(2 * a) + 0.1 * rng.normal(size=4000)
    g = CausalGraph.from_edges(["a", "b"], [("a", "b")])
    for mechanism in ("mlp", "gbm"):
        scm = StructuralCausalModel(g, mechanism=mechanism).fit(np.c_[a, b])
        means = scm.do({"a": [-1.0, 0.25, 1.0]}, n_samples=4000)[:, :, 1].mean(1)
        assert np.allclose(means, np.tanh(2 * np.array([-1.0, 0.25, 1.0])), atol=0.08), mechanism
    lin = StructuralCausalModel(g).fit(np.c_[a, b])
    assert abs(lin.do({"a": 0.25}, n_samples=4000)[:, 1].mean() - np.tanh(0.5)) > 0.1


def test_undirected_edges_become_recorded_assumptions(data):
    g = CausalGraph.from_edges(NAMES, [("b", "output_y"), ("a", "output_y")], [("a", "b")])
    scm = StructuralCausalModel(g).fit(data)
    assert scm.assumptions_ == [
        {"source": "a", "target": "b", "reason": "undirected in the graph; chosen by node order"}
    ]
    bk = BackgroundKnowledge().order("b", "a")
    scm = StructuralCausalModel(g, knowledge=bk).fit(data)
    assert list(scm.dag_.predecessors("a")) == ["b"]
    assert scm.assumptions_[0]["reason"] == "background knowledge"


def test_chain_component_is_oriented_without_new_v_structures():
    # x - y - z undirected: orienting must not create x -> y <- z
    g = CausalGraph.from_edges(["x", "y", "z"], [], [("x", "y"), ("y", "z")])
    data = linear_gaussian(["x", "y", "z"], {("x", "y"): 1.0, ("y", "z"): 1.0}, 500, seed=0)
    scm = StructuralCausalModel(g).fit(data)
    assert sorted(scm.dag_.edges) == [("x", "y"), ("y", "z")]
    assert [a["reason"] for a in scm.assumptions_] == [
        "undirected in the graph; chosen by node order",
        "implied by x -> y",
    ]


def test_errors(data):
    g = CausalGraph.from_edges(NAMES, [("a", "b")])
    scm = StructuralCausalModel(g)
    with pytest.raises(NotFittedError, match="not fitted"):
        scm.do({"a": 1.0})
    with pytest.raises(ShapeError, match=r"shape \(n_samples, 3\)"):
        scm.fit(data[:, :2])
    with pytest.raises(DataValidationError, match="lacks node"):
        scm.fit({"a": data[:, 0]})
    scm.fit({n: data[:, j] for j, n in enumerate(NAMES)})
    with pytest.raises(DataValidationError, match="unknown node 'c'"):
        scm.do({"c": 1.0})
    with pytest.raises(ShapeError, match="different numbers of settings"):
        scm.do({"a": [1.0, 2.0], "b": [1.0, 2.0, 3.0]})
    with pytest.raises(DataValidationError, match="non-finite"):
        scm.counterfactual(data[:2], {"a": np.nan})
    with pytest.raises(DataValidationError, match="NaN"):
        scm.counterfactual(np.full((1, 3), np.nan), {"a": 0.0})


def test_linear_scm_save_load_round_trip(scm, data, tmp_path):
    scm.save(tmp_path)
    back = StructuralCausalModel.load(tmp_path)
    rows = data[:20]
    ivs = {"a": [0.0, 1.5], "b": 2.0 * np.ones((2, 20))}
    assert np.allclose(back.counterfactual(rows, ivs), scm.counterfactual(rows, ivs))
    assert back.assumptions_ == scm.assumptions_ and sorted(back.dag_.edges) == sorted(
        scm.dag_.edges
    )
    assert back.global_importance()["output_y"] == pytest.approx(
        scm.global_importance()["output_y"]
    )
    s = back.do({"a": 1.0}, n_samples=5000, random_state=0)
    assert s[:, 2].mean() == pytest.approx(-2.5, abs=0.06)


def test_mlp_scm_save_load_round_trip(data, tmp_path):
    g = CausalGraph.from_edges(NAMES, [("a", "b"), ("b", "output_y")])
    mlp = StructuralCausalModel(g, mechanism="mlp").fit(data[:400])
    mlp.save(tmp_path)
    back = StructuralCausalModel.load(tmp_path)
    assert back.mechanism == "mlp"
    rows = data[:25]
    ivs = {"a": np.linspace(-2, 2, 25)}
    # The restored forward pass is the fitted network's, to float precision.
    np.testing.assert_allclose(back.counterfactual(rows, ivs), mlp.counterfactual(rows, ivs),
                               rtol=1e-9, atol=1e-9)  # fmt: skip
    np.testing.assert_allclose(back.abduct(rows), mlp.abduct(rows), rtol=1e-9, atol=1e-9)
    back.save(tmp_path / "again")  # a restored MLP SCM saves again
    again = StructuralCausalModel.load(tmp_path / "again")
    np.testing.assert_allclose(again.abduct(rows), mlp.abduct(rows), rtol=1e-9, atol=1e-9)


def test_gbm_scms_are_not_saved(data, tmp_path):
    g = CausalGraph.from_edges(NAMES, [("a", "b")])
    gbm = StructuralCausalModel(g, mechanism="gbm").fit(data[:300])
    with pytest.raises(ConfigError, match="only linear and mlp SCMs"):
        gbm.save(tmp_path)
    from glance.exceptions import CheckpointError

    with pytest.raises(CheckpointError):
        StructuralCausalModel.load(tmp_path / "missing")
