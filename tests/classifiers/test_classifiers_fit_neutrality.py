"""Architecture neutrality end to end: a tiny-preset Glance fit through each architecture (slow)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from clf_testutils import model_snapshot
from test_classifiers_neutrality import ARCHS

from glance.data import ArrayDataset
from glance.estimator import Glance

CONFIG = {
    "train": {
        "encoder_steps": 4,
        "generator_steps": 3,
        "encoder_batch": 8,
        "generator_batch": 4,
        "eval_images": 16,
    }
}


def _rgb_dataset(n: int, size: int) -> ArrayDataset:
    rng = np.random.default_rng(0)
    brightness = rng.uniform(0.2, 1.0, n)
    images = rng.uniform(0, 1, (n, 3, size, size)) * brightness[:, None, None, None] * 255
    return ArrayDataset(
        images.astype(np.uint8),
        labels=rng.integers(0, 4, n),
        attributes=brightness[:, None],
        attribute_names=["brightness"],
        classes=["a", "b", "c", "d"],
        source="rgb-toy",
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ARCHS))
def test_tiny_fit_through_architecture(name):
    make, size, _explicit, expected_layer = ARCHS[name]
    model = make().eval()
    before = model_snapshot(model)
    est = Glance(model, contexts=["brightness"], preset="tiny", config=CONFIG, quiet=True)
    data = _rgb_dataset(24, size)
    est.fit(data)
    assert est.adapter_.layer_name == expected_layer
    z = est.encode(data.load_images(np.arange(4)))
    assert z.shape[0] == 4 and torch.isfinite(torch.as_tensor(z)).all()
    assert model_snapshot(model) == before
