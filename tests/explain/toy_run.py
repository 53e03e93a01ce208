"""A stand-in for a fitted ``glance.Glance`` over the analytic toy world (explain tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import glance.estimator
from glance.explain import toy
from glance.run import Run


class ToyRun:
    """What ``glance.load`` returns, reduced to what the explainers and ``glance explain`` read.

    ``clf`` defaults to the toy's size classifier; any extra keyword becomes a fitted attribute
    (``graph_``, ``scm_``, ``context_mean_`` ...).
    """

    concept_names_ = list(toy.NODES)
    context_names_ = ["size", "brightness"]
    image_shape_ = (1, 16, 16)

    def __init__(
        self, clf: torch.nn.Module | None = None, classes=("small", "large"), **attrs: Any
    ) -> None:
        self.clf = clf if clf is not None else toy.SizeClassifier()
        self.classes_ = list(classes)
        for name, value in attrs.items():
            setattr(self, name, value)

    def encode(self, x):
        return toy.measure(x)

    def generate(self, z):
        return toy.render(z)

    def classify(self, x):
        with torch.no_grad():
            return self.clf(x)

    def sample_concepts(self, n, random_state=0):
        return toy.sample_concepts(n, random_state=random_state)


def serve_toy_run(monkeypatch: pytest.MonkeyPatch, path: Path, **kwargs: Any) -> Path:
    """Make ``path`` an (empty) sealed run and have ``glance.load`` return a :class:`ToyRun`
    of it (``kwargs`` as for :class:`ToyRun`); return ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    with Run(path).writing():
        Run.create(path, {})

    def load(run: Any, classifier: Any = None, device: str = "cpu", **_: Any) -> ToyRun:
        return ToyRun(run_=Run.open(run), **kwargs)

    monkeypatch.setattr(glance.estimator, "load", load)
    return path
