from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from glance.causal import CausalGraph, StructuralCausalModel
from glance.causal.from_glance import discover_from_glance, discovery_data
from glance.exceptions import ConfigError, DataValidationError, NotFittedError

N = 1500


class _Dataset:
    """Images whose pixels carry (thickness reading, intensity reading, free concept)."""

    def __init__(self, seed: int = 0, missing: int = 100):
        rng = np.random.default_rng(seed)
        t = 0.5 + rng.gamma(10, 1 / 5, N)
        i = 64 + 191 / (1 + np.exp(-(2 * (t - 2.5) + 0.5 * rng.normal(size=N))))
        free = rng.normal(size=N)
        self.truth = np.c_[t, i]
        # what the encoder reads: standardised contexts with a little reading noise
        read = (self.truth - self.truth.mean(0)) / self.truth.std(0)
        read = read + 0.05 * rng.normal(size=read.shape)
        self.pixels = np.c_[read, free].astype(np.float32)
        self.attribute_names = ["thickness", "intensity", "slant"]
        self.attributes = np.c_[self.truth, rng.normal(size=N)]
        self.attributes[:missing, 0] = np.nan  # weak supervision: some thickness unknown
        self.source = "stub"

    def __len__(self):
        return N

    def load_images(self, indices):
        return torch.from_numpy(self.pixels[np.asarray(indices)]).reshape(-1, 1, 1, 3)


class _Glance:
    context_names_ = ["thickness", "intensity"]
    concept_names_ = ["thickness", "intensity", "concept_0"]
    classes_ = ["thin", "thick"]

    def __init__(self, data: _Dataset):
        self.context_mean_ = data.truth.mean(0)
        self.context_std_ = data.truth.std(0)

    def encode(self, images):
        return images.reshape(len(images), 3).double()

    def surrogate_logits(self, z):
        thick = 2.0 * z[:, 0] - 0.8 * z[:, 2] + 0.2 * torch.tanh(3 * z[:, 0])
        return torch.stack([-thick + 0.1 * z[:, 2] ** 2, thick], dim=1)


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


def test_discover_from_glance_sets_state_and_writes_artefacts(stub, tmp_path):
    est, data = stub
    g = discover_from_glance(est, data, n_resamples=4, n_jobs=1, out=tmp_path / "graph")
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
    with pytest.raises(DataValidationError, match="no images"):
        discover_from_glance(est, data, max_images=0)
