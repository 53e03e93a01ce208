"""The context reader's network, its settings and its training loop (see
:mod:`glance.metrics.readers`)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from glance.exceptions import ConfigError
from glance.threads import compute

__all__ = ["ReaderConfig", "ContextReaderNet", "shrink", "train_reader_net"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReaderConfig:
    """Architecture and training settings of a context reader (all recorded with it).

    The defaults train in about 15 s on 4,000 images of 32 px on one CPU thread (600 steps).
    """

    width: int = 32  # channels of the first conv layers (twice that in the last two)
    resolution: int = 32  # larger images are area-averaged down to this side
    max_images: int = 4000  # real training images used (a seeded subset of larger sets)
    heldout_fraction: float = 0.2
    epochs: float = 12.0
    min_steps: int = 150
    max_steps: int = 800
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    #: Read Morpho-MNIST morphometric contexts of single-channel images with the morphometrics
    #: (exact, not differentiable); ``False`` reads every context with the CNN (what a training
    #: loss needs: a gradient through the reader).
    morphometrics: bool = True

    def __post_init__(self) -> None:
        ints = ("width", "resolution", "max_images", "min_steps", "max_steps", "batch_size")
        for name in ints:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"'{name}' of ReaderConfig must be a positive int; got {v!r}")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ConfigError(
                f"'heldout_fraction' of ReaderConfig must lie in (0, 1); got "
                f"{self.heldout_fraction!r}"
            )
        for name in ("epochs", "lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(
                    f"'{name}' of ReaderConfig must be > 0; got {getattr(self, name)}"
                )

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return dataclasses.asdict(self)


def _coords(x: torch.Tensor) -> torch.Tensor:
    """Two channels holding each pixel's row and column in [-1, 1], shape (N, 2, H, W)."""
    n, _, h, w = x.shape
    yy = torch.linspace(-1.0, 1.0, h, dtype=x.dtype, device=x.device)
    xx = torch.linspace(-1.0, 1.0, w, dtype=x.dtype, device=x.device)
    grid = torch.stack(torch.meshgrid(yy, xx, indexing="ij"))  # [2, H, W]
    return grid.expand(n, 2, h, w)


class ContextReaderNet(nn.Module):
    """A small CNN from images to standardised contexts, for any channel count and size.

    Four 3x3 conv layers (batch norm, ReLU; three of them stride 2) over the image and two
    coordinate channels (CoordConv, Liu et al. 2018: global pooling alone would lose where the
    object is, and position is a context), average and max pooling, one linear layer. Images
    larger than ``resolution`` are area-averaged down to it first.

    Parameters
    ----------
    in_channels
        Image channels.
    n_outputs
        Contexts predicted.
    width
        Channels of the first two conv layers (twice that in the last two).
    resolution
        Largest image side the convolutions see.
    """

    def __init__(
        self, in_channels: int, n_outputs: int, *, width: int = 32, resolution: int = 32
    ) -> None:
        super().__init__()
        self.in_channels, self.n_outputs = int(in_channels), int(n_outputs)
        self.resolution = int(resolution)
        w = int(width)
        layers: list[nn.Module] = []
        for cin, cout, stride in (
            (in_channels + 2, w, 2),
            (w, w, 1),
            (w, 2 * w, 2),
            (2 * w, 2 * w, 2),
        ):
            layers += [
                nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(4 * w, n_outputs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Standardised contexts (N, n_outputs) of images (N, C, H, W) in [0, 1]."""
        x = shrink(images, self.resolution)
        f = self.features(torch.cat([x, _coords(x)], dim=1))  # [N, 2w, h, w]
        return self.head(torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1))


def shrink(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Images whose larger side exceeds ``resolution`` area-averaged down to it (else as is)."""
    h, w = images.shape[-2:]
    if max(h, w) <= resolution:
        return images
    scale = resolution / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.adaptive_avg_pool2d(images, size)


def train_reader_net(
    x: torch.Tensor, y: np.ndarray, cfg: ReaderConfig, random_state: int
) -> tuple[ContextReaderNet, int]:
    """Train the CNN on images ``x`` and standardised targets ``y`` (NaN = unknown, masked);
    return it (in eval mode) and the number of steps. Deterministic for a seed and thread count."""
    n = len(x)
    steps = int(min(cfg.max_steps, max(cfg.min_steps, math.ceil(cfg.epochs * n / cfg.batch_size))))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(random_state))
        net = ContextReaderNet(x.shape[1], y.shape[1], width=cfg.width, resolution=cfg.resolution)
    target = torch.as_tensor(np.nan_to_num(y), dtype=torch.float32)
    known = torch.as_tensor(np.isfinite(y), dtype=torch.float32)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    rng = np.random.default_rng(int(random_state))
    batch = min(cfg.batch_size, n)
    order = np.empty(0, dtype=np.int64)
    net.train()
    # evaluate() measures under no_grad; the reader is trained inside it
    with compute() as policy, torch.enable_grad():
        for _ in range(steps):
            policy.tick()
            if len(order) < batch:
                order = np.concatenate([order, rng.permutation(n)])
            b, order = torch.as_tensor(order[:batch]), order[batch:]
            err = (net(x[b]) - target[b]) ** 2 * known[b]
            loss = err.sum() / known[b].sum().clamp(min=1.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    return net, steps
