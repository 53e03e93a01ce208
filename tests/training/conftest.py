"""Fixtures of the training tests: a tiny classifier and a tiny dataset with two contexts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from glance.data import ArrayDataset


class TinyCNN(nn.Module):
    """A 2-conv classifier of 16x16 one-channel images into 3 classes (random weights)."""

    def __init__(self, channels: int = 1, size: int = 16, n_classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, n_classes))
        self.in_channels, self.input_size = channels, (size, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def make_dataset(n: int = 64, size: int = 16, channels: int = 1, seed: int = 0) -> ArrayDataset:
    """Blobs whose radius ('thickness') and brightness ('intensity') are known contexts."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    radius = rng.uniform(2, size / 3, n)
    bright = rng.uniform(0.3, 1.0, n)
    cx, cy = rng.uniform(size / 3, 2 * size / 3, (2, n))
    d = np.sqrt((xx[None] - cx[:, None, None]) ** 2 + (yy[None] - cy[:, None, None]) ** 2)
    img = (d < radius[:, None, None]) * bright[:, None, None]
    img = np.repeat(img[:, None], channels, axis=1)
    images = (img * 255).round().astype(np.uint8)
    attrs = np.stack([radius, bright], axis=1)
    attrs[::7, 1] = np.nan  # weak supervision: some intensities unknown
    labels = np.digitize(radius, np.quantile(radius, [1 / 3, 2 / 3]))
    return ArrayDataset(
        images,
        labels=labels,
        attributes=attrs,
        attribute_names=["thickness", "intensity"],
        source="<blobs>",
    )


@pytest.fixture
def tiny_data() -> ArrayDataset:
    return make_dataset()


@pytest.fixture
def tiny_classifier() -> nn.Module:
    torch.manual_seed(0)
    return TinyCNN().eval()


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny networks run fastest on one thread; on a shared 2-core machine, intra-op threads
    spin against other processes and make every step several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
