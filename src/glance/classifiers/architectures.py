"""Reference classifier architectures and the module glance saves, loads and trains.

Every architecture is a builder ``(n_classes, in_channels, input_size) -> nn.Module`` registered in
:data:`ARCHITECTURES`. :class:`ReferenceClassifier` wraps the built network with its own input
normalisation, so the module takes float images in ``[0, 1]`` like every glance boundary, and
carries the metadata (classes, input size, channels) that the adapter and the CLI read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torchvision
from torch import nn

from glance.exceptions import ConfigError
from glance.registry import Registry

__all__ = [
    "ARCHITECTURES",
    "ArchSpec",
    "ReferenceClassifier",
    "SmallCNN",
    "build_classifier",
]


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """A registered architecture.

    Attributes
    ----------
    build
        ``build(n_classes, in_channels, input_size) -> nn.Module``.
    head_key
        State-dict key of the final layer's weight (its first dimension is the class count).
    first_conv_key
        State-dict key of the first convolution's weight (dimension 1 is the input channels).
    description
        One line for ``--help`` and error messages.
    """

    build: Callable[[int, int, tuple[int, int]], nn.Module]
    head_key: str
    first_conv_key: str
    description: str


ARCHITECTURES: Registry[ArchSpec] = Registry("classifier architecture")


def _conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class SmallCNN(nn.Module):
    """A compact CNN for 28-64 px images with 1 or 3 channels.

    Two 2x pooling stages keep a 7x7 feature map at 28 px (the layer GLANCE explains is
    ``features``). The head pools that map to 3x3 rather than 1x1: where strokes are matters for
    digits, and the pooling keeps the network independent of the input size.

    Parameters
    ----------
    n_classes
        Number of class scores.
    in_channels
        Image channels.
    width
        Channels of the first stage (doubled at each stage).
    """

    def __init__(self, n_classes: int, in_channels: int = 1, width: int = 24) -> None:
        super().__init__()
        w = int(width)
        # One conv at full resolution (the costliest on CPU), two at 1/2, one at 1/4.
        self.features = nn.Sequential(
            *_conv_block(in_channels, w),
            nn.MaxPool2d(2),
            *_conv_block(w, 2 * w),
            *_conv_block(2 * w, 2 * w),
            nn.MaxPool2d(2),
            *_conv_block(2 * w, 4 * w),
        )
        self.pool = nn.AdaptiveAvgPool2d(3)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(4 * w * 9, 128),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(128, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


ARCHITECTURES.register(
    "small-cnn",
    ArchSpec(
        build=lambda k, c, size: SmallCNN(k, c),
        head_key="head.5.weight",
        first_conv_key="features.0.weight",
        description="compact 4-conv CNN for 28-64 px digits/shapes (fast on CPU)",
    ),
)


def _small_input(size: tuple[int, int]) -> bool:
    return min(size) <= 64


def _build_resnet(depth: int) -> Callable[[int, int, tuple[int, int]], nn.Module]:
    def build(k: int, c: int, size: tuple[int, int]) -> nn.Module:
        net = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=k)
        if _small_input(size):
            # CIFAR-style stem: a 7x7/2 conv + max-pool would shrink 28 px to 7 px before
            # layer1 and leave no spatial extent for the explained features.
            net.conv1 = nn.Conv2d(c, 64, 3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif c != 3:
            net.conv1 = nn.Conv2d(c, 64, 7, stride=2, padding=3, bias=False)
        return net

    return build


for _depth in (18, 34):
    ARCHITECTURES.register(
        f"resnet{_depth}",
        ArchSpec(
            build=_build_resnet(_depth),
            head_key="fc.weight",
            first_conv_key="conv1.weight",
            description=f"torchvision ResNet-{_depth} (3x3 stem, no max-pool below 64 px)",
        ),
    )


class _SmallInputVGG(nn.Module):
    """VGG features with global pooling and one linear layer (for inputs of 64 px or less)."""

    def __init__(self, features: nn.Sequential, n_classes: int) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.3), nn.Linear(512, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def _build_vgg11(k: int, c: int, size: tuple[int, int]) -> nn.Module:
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["A"], batch_norm=True)
    features[0] = nn.Conv2d(c, 64, 3, padding=1)
    if _small_input(size):
        # Five 2x pools leave < 2 px at 28-32 px, so drop the last one; the 25088-wide head
        # (built for 224 px) gives way to global pooling and one linear layer.
        return _SmallInputVGG(features[:-1], k)
    net = torchvision.models.VGG(features, num_classes=k)
    return net


ARCHITECTURES.register(
    "vgg11",
    ArchSpec(
        build=_build_vgg11,
        head_key="classifier.1.weight",
        first_conv_key="features.0.weight",
        description="torchvision VGG-11-BN (last pool and big head dropped below 64 px)",
    ),
)


def _build_mobilenet(k: int, c: int, size: tuple[int, int]) -> nn.Module:
    net = torchvision.models.mobilenet_v3_small(weights=None, num_classes=k)
    stem = net.features[0][0]
    stride = 1 if _small_input(size) else 2  # keep resolution for small inputs
    net.features[0][0] = nn.Conv2d(c, stem.out_channels, 3, stride=stride, padding=1, bias=False)
    return net


ARCHITECTURES.register(
    "mobilenet_v3_small",
    ArchSpec(
        build=_build_mobilenet,
        head_key="classifier.3.weight",
        first_conv_key="features.0.0.weight",
        description="torchvision MobileNetV3-Small (stride-1 stem below 64 px)",
    ),
)


def build_classifier(
    arch: str, n_classes: int, in_channels: int, input_size: Sequence[int]
) -> nn.Module:
    """Build the bare network ``arch`` (random weights).

    Raises
    ------
    UnknownNameError
        ``arch`` is not registered (the valid names are listed).
    ConfigError
        A non-positive class count, channel count or size.
    """
    spec = ARCHITECTURES.get(arch)
    size = tuple(int(s) for s in input_size)
    if n_classes < 2:
        raise ConfigError(f"a classifier needs n_classes >= 2; got {n_classes}")
    if in_channels < 1 or len(size) != 2 or min(size) < 8:
        raise ConfigError(
            f"{arch}: in_channels must be >= 1 and input_size (H, W) at least 8 px; got "
            f"in_channels={in_channels}, input_size={size}"
        )
    return spec.build(int(n_classes), int(in_channels), size)  # type: ignore[arg-type]


class ReferenceClassifier(nn.Module):
    """A network plus its input normalisation and metadata; takes ``[0, 1]`` images.

    Parameters
    ----------
    net
        The bare network (e.g. from :func:`build_classifier`).
    arch
        Registered architecture name.
    classes
        Class names, one per output.
    in_channels, input_size
        Image geometry the network was trained at.
    mean, std
        Per-channel normalisation applied inside :meth:`forward`.
    meta
        Free-form metadata (target spec, accuracy, training history) saved with the weights.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        arch: str,
        classes: Sequence[str],
        in_channels: int,
        input_size: Sequence[int],
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        meta: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.arch = arch
        self.classes = [str(c) for c in classes]
        self.n_classes = len(self.classes)
        self.in_channels = int(in_channels)
        self.input_size = tuple(int(s) for s in input_size)
        mean_t = torch.as_tensor(list(mean), dtype=torch.float32).reshape(1, -1, 1, 1)
        std_t = torch.as_tensor(list(std), dtype=torch.float32).reshape(1, -1, 1, 1)
        if (std_t <= 0).any() or not torch.isfinite(mean_t).all():
            raise ConfigError(f"normalisation std must be > 0 and mean finite; got {mean}, {std}")
        # Not persistent: the weights file holds only the network; the JSON holds these.
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("std", std_t, persistent=False)
        self.meta: dict[str, Any] = dict(meta or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)

    @property
    def normalization(self) -> dict[str, list[float]]:
        """``{"mean": [...], "std": [...]}`` as applied in :meth:`forward`."""
        return {"mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist()}

    def extra_repr(self) -> str:
        return (
            f"arch={self.arch!r}, n_classes={self.n_classes}, in_channels={self.in_channels}, "
            f"input_size={self.input_size}"
        )
