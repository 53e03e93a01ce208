"""Fixtures of the surrogate tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Run each test on one intra-op thread, then restore the setting.

    These tests use small tensors; on a shared 2-core machine, two OpenMP threads waiting on
    each other's barriers made them 10-100x slower (measured), and results do not depend on it.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
