"""Fixtures of the surrogate tests."""

from __future__ import annotations

import pytest
import torch
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True)
def _one_thread():
    """Run each test on one torch and one BLAS thread, then restore the settings.

    These tests use small tensors; on a shared 2-core machine, two threads waiting on each
    other's barriers made them 10-100x slower (measured), and results do not depend on it.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)
