from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from causal_helpers import StubDataset as _Dataset
from causal_helpers import StubGlance as _Glance

from glance.causal import CausalGraph, StructuralCausalModel
from glance.causal.from_glance import discover_from_glance, discovery_data
from glance.exceptions import ConfigError, DataValidationError, DiscoveryError, NotFittedError


@pytest.fixture(scope="module")
def stub():
    data = _Dataset()
    return _Glance(data), data


def test_discovery_data_uses_observed_contexts_and_readings(stub):
    est, data = stub
    x, names, kinds = discovery_data(est, data, batch_size=128)
    assert names == ["thickness", "intensity", "concept_0", "output_thin", "output_thick"]
    assert kinds == ["context", "context", "concept", "output", "output"]
    assert np.array_equal(x[100:, 0], data.truth[100:, 0])  # observed where known
    reading = est.context_mean_[0] + est.context_std_[0] * data.pixels[:100, 0]
    assert np.allclose(x[:100, 0], reading, rtol=1e-5)  # the encoder's reading where missing
    x2, names2, _ = discovery_data(est, data, outputs=["thick"], max_images=300)
    assert x2.shape == (300, 4) and names2[-1] == "output_thick"
    with pytest.raises(ConfigError, match="unknown class"):
        discovery_data(est, data, outputs=["medium"])
    with pytest.raises(NotFittedError, match="fitted"):
        discovery_data(object(), data)


def test_discover_from_glance_returns_a_value_the_estimator_assigns(stub, tmp_path):
    est, data = stub
    result = discover_from_glance(est, data, n_resamples=4, n_jobs=1)
    assert not hasattr(est, "graph_")  # discovery returns a value; it assigns nothing
    assert isinstance(result.graph, CausalGraph) and isinstance(result.scm, StructuralCausalModel)
    g = est.global_explanation(data, n_resamples=4, n_jobs=1, out=tmp_path / "graph")
    assert g == result.graph
    assert isinstance(est.graph_, CausalGraph) and isinstance(est.scm_, StructuralCausalModel)
    assert est.scm_units_ == "raw"
    e = g.edge("thickness", "intensity")
    assert e is not None and e.effect > 0.5 and not e.directed  # honest: not orientable
    assert "thickness" in g.parents("output_thick") and "concept_0" in g.parents("output_thick")
    assert g.meta["assumptions"][0]["source"] == "thickness"  # chosen orientation recorded
    for name in ("graph.json", "graph.graphml", "graph.dot", "graph.png", "global_importance.json"):
        assert (tmp_path / "graph" / name).is_file()
    imp = json.loads((tmp_path / "graph" / "global_importance.json").read_text())["importance"]
    assert imp["output_thick"]["thickness"] > 0 > imp["output_thick"]["concept_0"]
    assert set(imp) == {"output_thin", "output_thick"}
    from glance.causal.from_glance import GlobalExplanation

    restored = _Glance(data)
    restored._set_global(GlobalExplanation.load(tmp_path / "graph"))
    assert restored.graph_ == g and restored.scm_units_ == "raw"
    assert restored.global_importance_ == json.loads(json.dumps(est.global_importance_))
    x, _, _ = discovery_data(est, data, max_images=50)
    assert np.allclose(
        restored.scm_.counterfactual(x, {"thickness": 3.0}),
        est.scm_.counterfactual(x, {"thickness": 3.0}),
    )
    with pytest.raises(DataValidationError, match="no images"):
        discover_from_glance(est, data, max_images=0)


class _CollapsedGlance(_Glance):
    """A second free concept that collapsed to a constant (a KL-collapsed dimension)."""

    concept_names_ = ["thickness", "intensity", "concept_0", "concept_1"]

    def encode(self, images):
        z = super().encode(images)
        return torch.cat([z, torch.full((len(z), 1), 0.25, dtype=z.dtype)], dim=1)

    def surrogate_logits(self, z):
        return super().surrogate_logits(z[:, :3])


def test_concept_policy(stub):
    _, data = stub
    est = _CollapsedGlance(data)
    with pytest.raises(DiscoveryError, match=r"\['concept_1'\] are constant"):
        discover_from_glance(est, data, n_resamples=0)
    g = discover_from_glance(est, data, n_resamples=0, concept_policy="drop").graph
    assert "concept_1" not in g.names and "concept_0" in g.names
    assert g.meta["dropped_nodes"][0]["node"] == "concept_1"


def test_drop_degenerate_only_drops_concepts():
    from glance.causal._checks import drop_degenerate

    rng = np.random.default_rng(0)
    a, c = rng.normal(size=(2, 200))
    x = np.c_[a, c, 2 * c + 1, rng.normal(size=200)]
    names = ["a", "concept_0", "concept_1", "output_y"]
    kinds = ["context", "concept", "concept", "output"]
    kept, kept_names, _, dropped = drop_degenerate(x, names, kinds)
    assert kept_names == ["a", "concept_0", "output_y"] and kept.shape == (200, 3)
    assert "duplicated" in dropped[0]["reason"]
    with pytest.raises(DiscoveryError, match="duplicated"):
        drop_degenerate(
            np.c_[a, a * 3, c], ["a", "b", "concept_0"], ["context", "context", "concept"]
        )


@pytest.mark.parametrize("n_resamples", [0, 2])
def test_discovery_options_reach_pc(stub, monkeypatch, n_resamples):
    """``max_k`` and ``kci_subsample`` are not lost between the estimator and PC."""
    import glance.causal.discovery as discovery
    from glance.causal import DiscoveryOptions

    seen = []
    real = discovery.run_pc

    def spy(x, names, rk, **kwargs):
        seen.append((x.shape[0], kwargs["max_k"], kwargs["ci_test"]))
        return real(x, names, rk, **kwargs)

    monkeypatch.setattr(discovery, "run_pc", spy)
    est, data = stub
    kw = dict(n_resamples=n_resamples, n_jobs=1, max_images=120)
    g = discover_from_glance(est, data, ci_test="kci", kci_subsample=60, max_k=1, **kw).graph
    assert seen and all(s == (60, 1, "kci") for s in seen)
    assert g.meta["params"]["max_k"] == 1 and g.meta["params"]["kci_subsample"] == 60
    seen.clear()
    options = DiscoveryOptions(max_k=0)
    discover_from_glance(est, data, options=options, **kw)
    assert seen and all(s == (120, 0, "fisherz") for s in seen)
    with pytest.raises(ConfigError, match="'max_k' of discover_from_glance"):
        discover_from_glance(est, data, max_k=-1, **kw)


def test_refit_scm_uses_the_recorded_mechanism(stub):
    from glance.causal.from_glance import refit_scm

    est, data = stub
    result = discover_from_glance(est, data, n_resamples=0, mechanism="mlp")
    assert result.graph.meta["scm"]["mechanism"] == "mlp"
    again = refit_scm(est, result.graph, data)
    assert again.scm.mechanism == "mlp"
