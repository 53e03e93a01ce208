"""End to end on a real (tiny) Glance fit: discovery → SCM → explain → verified counterfactuals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from glance.data import ArrayDataset
from glance.explain import LocalExplainer, Twin, explain
from helpers import TinyCNN

pytestmark = pytest.mark.slow


def _blobs(n: int = 96, size: int = 16) -> ArrayDataset:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    radius, bright = rng.uniform(2, 6, n), rng.uniform(0.3, 1.0, n)
    d = np.sqrt((xx - size / 2) ** 2 + (yy - size / 2) ** 2)
    img = (d[None] < radius[:, None, None]) * bright[:, None, None]
    return ArrayDataset(
        (img * 255).round().astype(np.uint8),
        labels=(radius > 4).astype(int),
        attributes=np.c_[radius, bright],
        attribute_names=["radius", "bright"],
    )


@pytest.fixture(scope="module")
def fitted():
    import glance

    torch.manual_seed(0)
    data = _blobs()
    # no declared geometry: the adapter probes it, then adopts the data's 16x16
    clf = TinyCNN(n_classes=2, declare_geometry=False).eval()
    est = glance.Glance(clf, contexts=["radius", "bright"], preset="tiny", quiet=True)
    est.fit(data)
    est.global_explanation(data, n_resamples=0)
    return est, data


def test_explain_a_fitted_glance(fitted):
    est, data = fitted
    x = data.load_images(np.arange(6)).float()
    twin = Twin.from_glance(est)
    assert twin.nodes == tuple(est.concept_names_)
    assert twin.scm is not None
    # Interventions are bounded by the central 99% of the fitted aggregate posterior.
    zs = est.sample_concepts(4096, random_state=0).numpy()
    lo, hi = twin.node_range.T
    assert np.all(lo < hi)
    assert np.mean((zs >= lo) & (zs <= hi)) == pytest.approx(0.99, abs=0.01)
    exp = explain(est, x)
    assert exp.importance.shape == (6, len(est.concept_names_))
    np.testing.assert_array_equal(exp.prediction, est.classify(x).argmax(1).numpy())
    cf = exp.counterfactual
    # Every reported prediction is the real classifier's on the regenerated counterfactual.
    z = est.encode(x)
    for i, nodes in enumerate(cf.nodes):
        ivs = {
            twin.nodes.index(k): z[i : i + 1, twin.nodes.index(k)]
            + v * float(twin.node_std[twin.nodes.index(k)])
            for k, v in nodes.items()
        }
        zp = twin.intervene(z[i : i + 1], ivs)
        assert int(est.classify(est.generate(zp)).argmax(1)) == cf.prediction[i]
    json.dumps(exp.to_dict())
    # Batched and one by one agree on a real generator too.
    one = LocalExplainer(est, batch_size=1).explain(x[:2])
    np.testing.assert_allclose(one.importance, exp.importance[:2], atol=1e-5)
