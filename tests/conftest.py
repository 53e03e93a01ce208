"""Shared test fixtures: every test starts from seeded RNGs (captum BaseTest style).

Shared helpers (a tiny CNN, a blob dataset, a torch thread limit) are in tests/helpers.py.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from helpers import torch_threads


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(1234)
    np.random.seed(1234)
    torch.manual_seed(1234)
    yield


@pytest.fixture
def one_torch_thread(monkeypatch):
    """Run the test on one torch intra-op thread, then restore the setting.

    Directories of tiny-network tests request it from an autouse fixture of their conftest.py.
    ``GLANCE_THREADS=1`` fixes glance's own choice too (also in subprocesses): tiny networks are
    fastest on one thread, and the bit-identity tests need a thread count that does not follow
    the machine's load.
    """
    monkeypatch.setenv("GLANCE_THREADS", "1")
    with torch_threads(1):
        yield
