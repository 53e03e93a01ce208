"""Batched intervention machinery shared by the explainers.

A local explanation asks many questions of the form "what does the real classifier say about
``G(z')`` where ``z'`` is ``z`` after intervening on some nodes". :func:`render_requests` answers a
whole list of them with one SCM call per request (each covering many rows) and one chunked
generator + classifier pass over all rows together.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from glance.explain._twin import Twin

__all__ = ["Request", "Renderer", "Batch", "render_requests", "to_uint8"]


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``[0, 1]`` float images → uint8 array (what is stored and drawn)."""
    return (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


@dataclass
class Request:
    """Rows ``z`` (n, d) with per-row hard interventions ``{dim: values (n,)}``."""

    z: torch.Tensor
    interventions: dict[int, torch.Tensor]
    total: bool = True


@dataclass
class Renderer:
    """Generate and classify concept rows in chunks, counting the work (for the timings)."""

    twin: Twin
    batch_size: int = 256
    keep_images: bool = True
    n_rendered: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def __call__(
        self, z: torch.Tensor, part: str = "render", keep_images: bool | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Return (real-classifier probabilities (n, K) float64, uint8 images or None)."""
        keep = self.keep_images if keep_images is None else keep_images
        t0 = time.perf_counter()
        probs, imgs = [], []
        for s in range(0, z.shape[0], self.batch_size):
            x = self.twin.generate(z[s : s + self.batch_size])
            probs.append(torch.softmax(self.twin.classify(x).float(), dim=1).cpu().numpy())
            if keep:
                imgs.append(to_uint8(x))
        self.n_rendered += int(z.shape[0])
        self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - t0
        if not probs:
            return np.zeros((0, len(self.twin.classes))), None
        p = np.concatenate(probs).astype(np.float64)
        return p, (np.concatenate(imgs) if keep else None)


def render_requests(
    renderer: Renderer, requests: Sequence[Request], part: str
) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Answer every request with one batched generator + classifier pass."""
    t0 = time.perf_counter()
    zs = [renderer.twin.intervene(r.z, r.interventions, total=r.total) for r in requests]
    renderer.seconds["scm"] = renderer.seconds.get("scm", 0.0) + time.perf_counter() - t0
    if not zs:
        return []
    probs, imgs = renderer(torch.cat(zs), part)
    out, s = [], 0
    for zr in zs:
        n = zr.shape[0]
        out.append((probs[s : s + n], None if imgs is None else imgs[s : s + n]))
        s += n
    return out


@dataclass
class Batch:
    """What every explainer computes first for a mini-batch of images."""

    images: torch.Tensor  # [N, C, H, W]
    z: torch.Tensor  # [N, d]
    probabilities: np.ndarray  # real f(x), [N, K]
    reconstruction_probabilities: np.ndarray  # real f(G(E(x))), [N, K]
    reconstructions: np.ndarray | None  # uint8 [N, C, H, W]

    @property
    def prediction(self) -> np.ndarray:
        return self.probabilities.argmax(1)

    @classmethod
    def prepare(cls, renderer: Renderer, images: torch.Tensor) -> Batch:
        """Classify the inputs, encode them, and render and classify the reconstructions."""
        twin = renderer.twin
        t0 = time.perf_counter()
        probs = torch.softmax(twin.classify(images).float(), dim=1).cpu().numpy()
        z = twin.encode(images).detach().float()
        renderer.seconds["encode"] = renderer.seconds.get("encode", 0.0) + time.perf_counter() - t0
        p0, img0 = renderer(z, "reconstruction", keep_images=True)  # always shown
        return cls(images, z, probs.astype(np.float64), p0, img0)


def shifted(
    twin: Twin, z: torch.Tensor, j: int, deltas: Sequence[float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``z`` repeated per delta (delta-major) and the shifted values of dim ``j``
    (:meth:`Twin.shift`: ``δ`` node stds, or ``δ`` levels of a discrete node)."""
    n = z.shape[0]
    d = torch.as_tensor(np.asarray(deltas, dtype=np.float32)).repeat_interleave(n)
    zr = z.repeat(len(deltas), 1)
    return zr, twin.shift(j, zr[:, j], d.to(zr.dtype))
