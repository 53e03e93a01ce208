"""Fixtures of the explain tests: the analytic toy world of glance.explain.toy."""

from __future__ import annotations

import pytest
import torch

from glance.explain import toy


@pytest.fixture(scope="module")
def toy_images() -> torch.Tensor:
    """24 toy squares drawn from the toy SCM (size → brightness, position independent)."""
    return toy.render(toy.sample_concepts(24, random_state=3))


@pytest.fixture(scope="module")
def size_twin():
    return toy.make_twin(toy.SizeClassifier())


@pytest.fixture(scope="module")
def bright_twin():
    return toy.make_twin(toy.BrightnessClassifier())
