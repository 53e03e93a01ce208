"""Fixtures of the causal tests."""

from __future__ import annotations

import pytest
from causal_helpers import FIVE_NODE_WEIGHTS, linear_gaussian


@pytest.fixture(scope="session")
def five_node_data():
    return linear_gaussian(list("abcde"), FIVE_NODE_WEIGHTS, 2000, seed=0)
