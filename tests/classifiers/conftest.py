"""Classifier tests run torch on one thread: on a busy 2-core machine two threads contend badly."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """Every classifier test runs under the shared ``one_torch_thread`` fixture."""
