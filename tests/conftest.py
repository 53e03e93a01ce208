"""Shared test fixtures: every test starts from seeded RNGs (captum BaseTest style)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(1234)
    np.random.seed(1234)
    torch.manual_seed(1234)
    yield
