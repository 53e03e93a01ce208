"""Fixtures of the surrogate tests."""

from __future__ import annotations

import pytest
from threadpoolctl import threadpool_limits


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Run each test on one torch (shared ``one_torch_thread``) and one BLAS thread.

    These tests use small tensors; on a shared 2-core machine, two threads waiting on each
    other's barriers made them 10-100x slower (measured), and results do not depend on it.
    """
    with threadpool_limits(limits=1):
        yield
