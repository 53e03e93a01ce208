"""StyleGAN2-style residual discriminator with a minibatch standard-deviation layer."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from glance.surrogate.generator import channels_at, synthesis_resolution
from glance.surrogate.layers import EqualizedConv2d, EqualizedLinear, check_shape

__all__ = ["Discriminator", "minibatch_stddev"]


def minibatch_stddev(x: torch.Tensor, group_size: int, num_channels: int = 1) -> torch.Tensor:
    """Append the std over groups of samples as extra feature maps (StyleGAN's mbstd).

    ``x`` [N, C, H, W] -> [N, C + num_channels, H, W]. The group is the largest divisor of ``N``
    that is at most ``group_size``, so any batch size works (a batch of 1 gets zeros).
    """
    n, c, h, w = x.shape
    g = max(d for d in range(1, min(group_size, n) + 1) if n % d == 0)
    f = num_channels
    y = x.reshape(g, n // g, f, c // f, h, w)  # [G, M, F, c, H, W]
    y = y - y.mean(dim=0)
    y = (y.square().mean(dim=0) + 1e-8).sqrt()  # [M, F, c, H, W]
    y = y.mean(dim=(2, 3, 4))  # [M, F]
    y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)  # [N, F, H, W]
    return torch.cat([x, y], dim=1)


class DiscriminatorBlock(nn.Module):
    """Two 3x3 convolutions (the second halves the size) plus a 1x1 residual skip."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, in_channels, 3, activation="lrelu")
        self.conv1 = EqualizedConv2d(in_channels, out_channels, 3, activation="lrelu", down=2)
        self.skip = EqualizedConv2d(in_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # sqrt(0.5) keeps the variance of the sum of the two paths.
        return (self.skip(x) + self.conv1(self.conv0(x))) * math.sqrt(0.5)


class Discriminator(nn.Module):
    """Discriminator ``D``: images (N, C, R, R) in [0, 1] -> real/fake logits (N,).

    Parameters
    ----------
    img_resolution : int
        Input size ``R``; non powers of two are resized (bilinear) to the next power of two.
    img_channels : int
        Input channels.
    channel_base, channel_max : int
        Channels at resolution ``r`` are ``min(channel_base // r, channel_max)``.
    mbstd_group : int
        Group size of the minibatch standard-deviation layer.
    mbstd_channels : int
        Number of standard-deviation feature maps appended.
    channels_last : bool
        Convolve in the NHWC memory layout (the generator's, by default), whatever the layout of
        the images given: real images come NCHW, and oneDNN convolves NHWC faster on CPU
        (``benchmarks/bench_discriminator.py``). The logits are the same either way.

    Raises
    ------
    ShapeError
        If the images do not have shape (N, img_channels, R, R).
    """

    def __init__(
        self,
        img_resolution: int,
        img_channels: int,
        *,
        channel_base: int = 16384,
        channel_max: int = 256,
        mbstd_group: int = 4,
        mbstd_channels: int = 1,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.channels_last = channels_last
        self.mbstd_group, self.mbstd_channels = mbstd_group, mbstd_channels
        self.work_resolution = max(synthesis_resolution(img_resolution), 4)

        def ch(r: int) -> int:
            return channels_at(r, channel_base, channel_max)

        top = self.work_resolution
        self.from_rgb = EqualizedConv2d(img_channels, ch(top), 1, activation="lrelu")
        res = [top >> i for i in range(int(math.log2(top)) - 2)]  # top ... 8
        self.blocks = nn.Sequential(*[DiscriminatorBlock(ch(r), ch(r // 2)) for r in res])
        c4 = ch(4)
        if c4 % mbstd_channels:
            raise ValueError(f"mbstd_channels={mbstd_channels} must divide the 4x4 width {c4}")
        self.conv = EqualizedConv2d(c4 + mbstd_channels, c4, 3, activation="lrelu")
        self.fc = EqualizedLinear(c4 * 16, c4, activation="lrelu")
        self.out = EqualizedLinear(c4, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        r = self.img_resolution
        check_shape(images, (None, self.img_channels, r, r), "images")
        x = images * 2 - 1  # [0, 1] -> [-1, 1], centred inputs for the first layer
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if r != self.work_resolution:
            x = F.interpolate(
                x, size=(self.work_resolution,) * 2, mode="bilinear", align_corners=False
            )
        x = self.blocks(self.from_rgb(x))  # [N, C4, 4, 4]
        x = minibatch_stddev(x, self.mbstd_group, self.mbstd_channels)
        x = self.conv(x).flatten(1)
        return self.out(self.fc(x)).squeeze(1)  # [N]
