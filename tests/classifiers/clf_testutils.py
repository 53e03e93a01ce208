"""Helpers shared by the classifier tests: a snapshot of everything the adapter must not change."""

from __future__ import annotations

import hashlib

import torch
from torch import nn


def model_snapshot(model: nn.Module) -> dict:
    """Everything about ``model`` that the adapter promises to leave untouched."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict(keep_vars=False).items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return {
        "state_sha256": h.hexdigest(),
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "grads": {n: p.grad is None for n, p in model.named_parameters()},
        "training": {n: m.training for n, m in model.named_modules()},
        "hooks": sum(
            len(m._forward_hooks)
            + len(m._forward_pre_hooks)
            + len(m._backward_hooks)
            + len(getattr(m, "_backward_pre_hooks", {}))
            for m in model.modules()
        ),
        "param_ids": [id(p) for p in model.parameters()],
    }


class SmallNet(nn.Module):
    """A 2-conv classifier with BatchNorm and Dropout (train-mode sensitive)."""

    def __init__(self, in_channels: int = 1, n_classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(16, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.pool(self.features(x)).flatten(1)))
