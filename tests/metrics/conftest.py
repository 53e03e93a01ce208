"""Fixtures of the metrics tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Tiny networks run fastest on one thread (and thread counts fix the float sums)."""
