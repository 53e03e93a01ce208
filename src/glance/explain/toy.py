"""An analytic toy world where the right explanation is known by construction.

Images are 16×16 grey squares rendered from three concepts in standardised units: ``size``
(context), ``brightness`` (context) and ``concept_0`` (a free concept: horizontal position). A
linear structural causal model makes size cause brightness (``brightness = a · size + noise``);
position is independent. Two hand-set classifiers, written as small CNNs so that gradient
baselines and weight randomisation apply to them, decide from one factor only:

- :class:`SizeClassifier`: "large vs small" from the (soft) area of the square;
- :class:`BrightnessClassifier`: "bright vs dark" from the brightest pixel.

So for the size classifier the importance of ``size`` must dominate, and for the brightness
classifier ``size`` has a *total* effect (through brightness) but no *direct* one — exactly
``a`` times the direct effect of brightness. The module is public so that users and benchmarks can
check an explainer on it (in the spirit of ``captum.testing``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from glance.explain._twin import Twin

__all__ = [
    "IMAGE_SIZE",
    "NODES",
    "LinearSCM",
    "render",
    "measure",
    "SizeClassifier",
    "BrightnessClassifier",
    "make_twin",
    "sample_concepts",
]

IMAGE_SIZE = 16
NODES = ("size", "brightness", "concept_0")
_HALF_WIDTH = (3.5, 1.0)  # half-width of the square = 3.5 + 1.0 * size
_BRIGHT = (0.6, 0.12)  # grey level = 0.6 + 0.12 * brightness
_SHIFT = 1.0  # horizontal shift in pixels per unit of concept_0
_EDGE = 8.0  # sharpness of the soft edges (pixels⁻¹)


class LinearSCM:
    """A linear-Gaussian SCM over ``z`` dimensions (a :class:`~glance.explain.ZSpaceSCM`).

    Parameters
    ----------
    n_nodes
        Number of ``z`` dimensions.
    edges
        ``{(parent, child): coefficient}``; must form a DAG whose topological order is the index
        order (parents have smaller indices), which keeps the toy simple.
    """

    def __init__(self, n_nodes: int, edges: Mapping[tuple[int, int], float]) -> None:
        self.n_nodes = int(n_nodes)
        self.weights = np.zeros((self.n_nodes, self.n_nodes))
        for (p, c), w in edges.items():
            if not 0 <= p < c < self.n_nodes:
                raise ValueError(f"LinearSCM: edge ({p}, {c}) must satisfy 0 <= parent < child")
            self.weights[p, c] = float(w)

    def descendants(self, j: int) -> frozenset[int]:
        """Dimensions reachable from ``j`` along edges."""
        seen: set[int] = set()
        stack = [j]
        while stack:
            for c in np.flatnonzero(self.weights[stack.pop()]):
                if int(c) not in seen:
                    seen.add(int(c))
                    stack.append(int(c))
        return frozenset(seen)

    def counterfactual(self, z: np.ndarray, interventions: Mapping[int, np.ndarray]) -> np.ndarray:
        """Abduct residuals ``z - z W`` row by row, intervene, propagate in index order."""
        z = np.asarray(z, dtype=np.float64)
        residual = z - z @ self.weights
        out = z.copy()
        for j in range(self.n_nodes):
            if j in interventions:
                out[:, j] = np.broadcast_to(
                    np.asarray(interventions[j], dtype=np.float64), (len(z),)
                )
            else:
                out[:, j] = out @ self.weights[:, j] + residual[:, j]
        return out

    def sample(self, n: int, random_state: int = 0) -> np.ndarray:
        """Draw ``n`` rows with unit-variance noise scaled so every node has variance ≈ 1."""
        rng = np.random.default_rng(random_state)
        out = np.zeros((n, self.n_nodes))
        for j in range(self.n_nodes):
            w = self.weights[:, j]
            explained = float(np.sum(w**2))
            noise_sd = np.sqrt(max(1.0 - explained, 0.05))
            out[:, j] = out @ w + noise_sd * rng.standard_normal(n)
        return out


def render(z: torch.Tensor) -> torch.Tensor:
    """Render ``z (N, 3)`` as grey squares ``(N, 1, 16, 16)`` in ``[0, 1]``."""
    z = torch.as_tensor(z, dtype=torch.float32)
    coords = torch.arange(IMAGE_SIZE, dtype=torch.float32) + 0.5
    centre = IMAGE_SIZE / 2
    hw = (_HALF_WIDTH[0] + _HALF_WIDTH[1] * z[:, 0]).clamp(min=0.25)[:, None]
    cx = (centre + _SHIFT * z[:, 2])[:, None]
    mx = torch.sigmoid(_EDGE * (hw - (coords[None] - cx).abs()))  # [N, W]
    my = torch.sigmoid(_EDGE * (hw - (coords[None] - centre).abs()))  # [N, H]
    level = (_BRIGHT[0] + _BRIGHT[1] * z[:, 1]).clamp(0.05, 1.0)
    img = level[:, None, None] * my[:, :, None] * mx[:, None, :]
    return img[:, None].clamp(0.0, 1.0)


def measure(images: torch.Tensor) -> torch.Tensor:
    """Read ``z`` back from rendered squares (the toy's "encoder"): an approximate inverse."""
    x = torch.as_tensor(images, dtype=torch.float32)[:, 0]
    level = x.flatten(1).amax(1).clamp(min=1e-3)
    mask = x / level[:, None, None]
    area = mask.sum((1, 2))
    hw = area.sqrt() / 2
    coords = torch.arange(IMAGE_SIZE, dtype=torch.float32) + 0.5
    cx = (mask.sum(1) * coords).sum(1) / area.clamp(min=1e-6)
    return torch.stack(
        [
            (hw - _HALF_WIDTH[0]) / _HALF_WIDTH[1],
            (level - _BRIGHT[0]) / _BRIGHT[1],
            (cx - IMAGE_SIZE / 2) / _SHIFT,
        ],
        1,
    )


class SizeClassifier(nn.Module):
    """ "large" (class 1) vs "small" (class 0) from the area of the square.

    A 1×1 convolution gives a feature map; its sum divided by its maximum is the area of the
    square whatever its grey level; a linear layer compares it with the area at ``size = 0``.
    """

    def __init__(self, gain: float = 0.04) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        self.fc = nn.Linear(1, 2)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.zero_()
            area0 = float(self._area(render(torch.zeros(1, 3)))[0])
            self.fc.weight.copy_(torch.tensor([[-gain], [gain]]))
            self.fc.bias.copy_(torch.tensor([gain * area0, -gain * area0]))

    def _area(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)  # [N, 1, H, W]
        return (h.sum((2, 3)) / h.amax((2, 3)).abs().clamp(min=1e-3))[:, :1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self._area(x))


class BrightnessClassifier(nn.Module):
    """ "bright" (class 1) vs "dark" (class 0) from the brightest pixel of the image."""

    def __init__(self, gain: float = 40.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        self.fc = nn.Linear(1, 2)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.zero_()
            self.fc.weight.copy_(torch.tensor([[-gain], [gain]]))
            self.fc.bias.copy_(torch.tensor([gain * _BRIGHT[0], -gain * _BRIGHT[0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).amax((2, 3)))


def make_twin(
    classifier: nn.Module | None = None,
    *,
    coefficient: float = 0.8,
    with_scm: bool = True,
) -> Twin:
    """The toy :class:`~glance.explain.Twin`: renderer, analytic encoder, SCM ``size → brightness``.

    Parameters
    ----------
    classifier
        The "real" classifier; default :class:`SizeClassifier`.
    coefficient
        Strength of ``size → brightness`` in the linear SCM.
    with_scm
        ``False`` gives a twin without a causal model (total effects = direct effects).
    """
    clf = classifier if classifier is not None else SizeClassifier()
    clf.eval()
    scm = LinearSCM(3, {(0, 1): coefficient}) if with_scm else None

    def classify(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return clf(images)

    return Twin(
        encode=measure,
        generate=render,
        classify=classify,
        nodes=NODES,
        classes=("0", "1"),
        node_kinds=("context", "context", "concept"),
        scm=scm,
    )


def sample_concepts(n: int, *, coefficient: float = 0.8, random_state: int = 0) -> torch.Tensor:
    """``n`` concept rows from the toy SCM, clipped to the renderable range ``[-2.5, 2.5]``."""
    z = LinearSCM(3, {(0, 1): coefficient}).sample(n, random_state)
    return torch.as_tensor(np.clip(z, -2.5, 2.5), dtype=torch.float32)
