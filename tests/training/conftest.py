"""Fixtures of the training tests: a tiny classifier and a tiny dataset with two contexts.

The classifier and the dataset themselves (``TinyCNN``, ``make_dataset``) are in tests/helpers.py.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from glance.data import ArrayDataset
from helpers import TinyCNN, make_dataset


@pytest.fixture
def tiny_data() -> ArrayDataset:
    return make_dataset()


@pytest.fixture
def tiny_classifier() -> nn.Module:
    torch.manual_seed(0)
    return TinyCNN().eval()


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Tiny networks run fastest on one thread; on a shared 2-core machine, intra-op threads
    spin against other processes and make every step several times slower."""
