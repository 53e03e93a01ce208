"""A stand-in for a fitted ``glance.Glance`` over the analytic toy world (explain tests)."""

from __future__ import annotations

from typing import Any

import torch

from glance.explain import toy


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
