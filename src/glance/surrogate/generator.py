"""StyleGAN2-style generator: mapping network, synthesis network, and their composition.

``Generator(z) = SynthesisNetwork(MappingNetwork(z))``. The synthesis network starts from a
learned 4x4 constant and doubles the resolution per block with modulated/demodulated 3x3
convolutions, per-pixel noise inputs and skip-connection RGB outputs (Karras et al., 2020,
"Analyzing and Improving the Image Quality of StyleGAN").

Differences from the paper, and why:

- ``z`` is *not* normalised to unit length by default: in glance ``z`` is a concept vector whose
  aligned dimensions carry standardised context values, and their magnitude is the message.
- Upsampling is bilinear followed by the 3x3 convolution (instead of a transposed convolution and
  an FIR filter): simpler, and one plain convolution per layer is what runs fastest on CPU.
- Resolutions that are not a power of two (28 for MNIST) are synthesised at the next power of two
  and then centre-cropped when the difference is at most 1/8 of it (32 -> 28 crops 2 px of
  border, where MNIST digits are blank anyway), otherwise resized with antialiasing. Choose with
  ``fit_mode``.
- Images are returned in ``[0, 1]`` through a sigmoid of the summed RGB skips (gradients
  everywhere, unlike a clamp).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from glance.exceptions import ShapeError
from glance.surrogate.layers import EqualizedLinear, ModConvImpl, check_shape, modulated_conv2d

__all__ = ["MappingNetwork", "SynthesisLayer", "SynthesisBlock", "SynthesisNetwork", "Generator"]

NoiseMode = Literal["random", "const", "none"]
FitMode = Literal["auto", "crop", "resize"]
_SQRT2 = math.sqrt(2.0)


def synthesis_resolution(img_resolution: int) -> int:
    """Smallest power of two >= ``img_resolution`` (at least 4) that the synthesis runs at."""
    if img_resolution < 4:
        raise ShapeError(f"img_resolution must be at least 4; got {img_resolution}")
    return 1 << (img_resolution - 1).bit_length()


def channels_at(resolution: int, channel_base: int, channel_max: int) -> int:
    """Channel count of the block working at ``resolution`` (StyleGAN's ``base // res`` rule)."""
    return max(1, min(channel_base // resolution, channel_max))


def fit_to_resolution(x: torch.Tensor, resolution: int, mode: FitMode = "auto") -> torch.Tensor:
    """Centre-crop or resize square maps ``x`` [N, C, P, P] to [N, C, resolution, resolution]."""
    size = x.shape[-1]
    if size == resolution:
        return x
    if mode == "auto":
        mode = "crop" if 0 < size - resolution <= size // 8 else "resize"
    if mode == "crop" and size > resolution:
        lo = (size - resolution) // 2
        return x[:, :, lo : lo + resolution, lo : lo + resolution]
    return F.interpolate(
        x, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False
    )


class MappingNetwork(nn.Module):
    """MLP mapping concepts ``z`` (N, z_dim) to the intermediate latent ``w`` (N, w_dim).

    Parameters
    ----------
    z_dim : int
        Size of the concept vector.
    w_dim : int
        Size of the intermediate latent.
    num_layers : int
        Number of fully connected layers (leaky ReLU after each).
    lr_multiplier : float
        Learning-rate multiplier of the layers (StyleGAN uses 0.01).
    normalize_z : bool
        Normalise ``z`` to unit second moment (StyleGAN does; glance does not: module doc).
    """

    def __init__(
        self,
        z_dim: int,
        w_dim: int,
        num_layers: int = 4,
        *,
        lr_multiplier: float = 0.01,
        normalize_z: bool = False,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers of MappingNetwork must be >= 1; got {num_layers}")
        self.z_dim, self.w_dim, self.normalize_z = z_dim, w_dim, normalize_z
        dims = [z_dim] + [w_dim] * num_layers
        self.layers = nn.Sequential(
            *[
                EqualizedLinear(a, b, lr_multiplier=lr_multiplier, activation="lrelu")
                for a, b in zip(dims[:-1], dims[1:], strict=True)
            ]
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        check_shape(z, (None, self.z_dim), "z")
        if self.normalize_z:
            z = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        return self.layers(z)

    def macs(self) -> int:
        """Multiply-adds of one forward pass per sample."""
        return sum(layer.in_features * layer.out_features for layer in self.layers)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution + noise + bias + leaky ReLU, optionally upsampling 2x first."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        *,
        up: int = 1,
        use_noise: bool = True,
        modconv_impl: ModConvImpl = "auto",
    ) -> None:
        super().__init__()
        self.modconv_impl = modconv_impl
        self.in_channels, self.out_channels = in_channels, out_channels
        self.resolution, self.up, self.use_noise = resolution, up, use_noise
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        if use_noise:
            self.noise_strength = nn.Parameter(torch.zeros(()))
            self.register_buffer("noise_const", torch.randn(resolution, resolution))

    def forward(
        self,
        x: torch.Tensor,
        styles: torch.Tensor,
        noise_mode: NoiseMode = "random",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``x`` [N, I, R/up, R/up], ``styles = self.affine(w)`` [N, I] -> [N, O, R, R]."""
        # The sqrt(2) gain of the leaky ReLU is folded into the demodulation (free); bias and
        # noise strength are learned, so scaling them by the same gain is a reparametrisation.
        x = modulated_conv2d(
            x,
            self.weight,
            styles,
            up=self.up,
            gain=_SQRT2,
            bias=self.bias,
            impl=self.modconv_impl,
        )  # [N, O, R, R]
        if self.use_noise and noise_mode != "none":
            if noise_mode == "random":
                noise = torch.randn(
                    x.shape[0],
                    1,
                    self.resolution,
                    self.resolution,
                    generator=generator,
                    device=x.device,
                    dtype=x.dtype,
                )
            else:
                noise = self.noise_const
            # In place: x is a fresh output whose value no backward function needs.
            x = x.add_(noise * self.noise_strength)
        return F.leaky_relu(x, 0.2, inplace=True)

    def macs(self) -> int:
        """Multiply-adds per sample: convolution (at the output size), affine, demodulation."""
        conv = self.resolution**2 * self.out_channels * self.in_channels * 9
        demod = self.out_channels * self.in_channels
        return conv + demod + self.affine.in_features * self.affine.out_features


class ToRGB(nn.Module):
    """Modulated 1x1 convolution (no demodulation) to image channels."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        *,
        modconv_impl: ModConvImpl = "auto",
    ) -> None:
        super().__init__()
        self.modconv_impl = modconv_impl
        self.in_channels, self.out_channels, self.resolution = in_channels, out_channels, resolution
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
        """``x`` [N, I, R, R], ``styles = self.affine(w)`` [N, I] -> [N, C_img, R, R]."""
        return modulated_conv2d(
            x,
            self.weight,
            styles,
            demodulate=False,
            gain=self.weight_gain,
            bias=self.bias,
            impl=self.modconv_impl,
        )

    def macs(self) -> int:
        conv = self.resolution**2 * self.out_channels * self.in_channels
        return conv + self.affine.in_features * self.affine.out_features


class SynthesisBlock(nn.Module):
    """One resolution: (constant or 2x upsampling conv) + conv + RGB skip output."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        *,
        use_noise: bool = True,
        styled_input: bool = False,
        channels_last: bool = True,
        modconv_impl: ModConvImpl = "auto",
    ) -> None:
        super().__init__()
        self.resolution, self.channels_last = resolution, channels_last
        kw = dict(use_noise=use_noise, modconv_impl=modconv_impl)
        self.is_first = in_channels == 0
        if self.is_first:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
            # A learned constant alone makes every image's layout come from modulation, which a
            # short schedule does not learn: measured on the embedded digits (fast preset, same
            # seed) the constant plus a projection of the first style lowered FID 2.74 -> 2.33.
            self.input_proj = (
                EqualizedLinear(out_channels, out_channels * resolution * resolution)
                if styled_input
                else None
            )
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, **kw)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, **kw)
        self.torgb = ToRGB(out_channels, img_channels, w_dim, resolution, modconv_impl=modconv_impl)
        self.num_ws = (1 if self.is_first else 2) + 1

    def style_layers(self) -> list[SynthesisLayer | ToRGB]:
        """The layers that consume one ``w`` each, in order."""
        convs = [self.conv1] if self.is_first else [self.conv0, self.conv1]
        return [*convs, self.torgb]

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        styles: list[torch.Tensor],
        noise_mode: NoiseMode = "random",
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``styles``: one [N, I] per :meth:`style_layers` entry; returns the features and the
        running RGB image (logit scale)."""
        i = 0
        if self.is_first:
            x = self.const.unsqueeze(0).expand(styles[0].shape[0], -1, -1, -1)  # [N, C, 4, 4]
            if self.input_proj is not None:
                x = x + self.input_proj(styles[0]).view_as(x)
            if self.channels_last:
                # Every later op keeps the layout; oneDNN convolves NHWC without reorders
                # (1.2-1.5x faster per convolution on CPU, see benchmarks/bench_modconv.py).
                x = x.contiguous(memory_format=torch.channels_last)
        else:
            x = self.conv0(x, styles[0], noise_mode, generator)
            i = 1
        x = self.conv1(x, styles[i], noise_mode, generator)
        rgb = self.torgb(x, styles[i + 1])
        if img is not None:
            img = F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False)
            rgb = rgb + img
        return x, rgb

    def macs(self) -> int:
        proj = getattr(self, "input_proj", None)
        extra = proj.in_features * proj.out_features if proj is not None else 0
        return extra + sum(layer.macs() for layer in self.style_layers())


class SynthesisNetwork(nn.Module):
    """Intermediate latents -> images (N, C, R, R) in [0, 1].

    ``forward`` takes one ``w`` shared by every layer, shape (N, w_dim), or one per layer,
    shape (N, num_ws, w_dim) (style mixing). With a shared ``w`` all the per-layer style
    affines run as a single matrix product.

    Parameters
    ----------
    w_dim : int
        Size of the intermediate latent.
    img_resolution : int
        Output size ``R`` (>= 4; not necessarily a power of two, see the module doc).
    img_channels : int
        1 (grey) or 3 (RGB); any positive count works.
    channel_base, channel_max : int
        Channels at resolution ``r`` are ``min(channel_base // r, channel_max)``.
    use_noise : bool
        Per-pixel noise inputs.
    styled_input : bool
        The first block starts from the learned constant plus a linear projection of its style
        (a per-image layout), instead of the constant alone.
    fit_mode : {"auto", "crop", "resize"}
        How the power-of-two synthesis is brought to ``img_resolution``.
    channels_last : bool
        Run the feature maps in NHWC memory layout (faster on CPU; no effect on the values).
    modconv_impl : {"auto", "grouped", "scaled"}
        Form of :func:`modulated_conv2d`; ``"auto"`` uses the one measured fastest per device.
    """

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        *,
        channel_base: int = 16384,
        channel_max: int = 256,
        use_noise: bool = True,
        styled_input: bool = False,
        fit_mode: FitMode = "auto",
        channels_last: bool = True,
        modconv_impl: ModConvImpl = "auto",
    ) -> None:
        super().__init__()
        if img_channels < 1:
            raise ValueError(f"img_channels must be >= 1; got {img_channels}")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.synthesis_resolution = synthesis_resolution(img_resolution)
        self.fit_mode = fit_mode
        resolutions = [4 << i for i in range(int(math.log2(self.synthesis_resolution)) - 1)]
        blocks = []
        in_ch = 0
        for res in resolutions:
            out_ch = channels_at(res, channel_base, channel_max)
            blocks.append(
                SynthesisBlock(
                    in_ch,
                    out_ch,
                    w_dim,
                    res,
                    img_channels,
                    use_noise=use_noise,
                    styled_input=styled_input,
                    channels_last=channels_last,
                    modconv_impl=modconv_impl,
                )
            )
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.num_ws = sum(b.num_ws for b in blocks)

    def forward(
        self,
        ws: torch.Tensor,
        noise_mode: NoiseMode = "random",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        if noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode must be 'random', 'const' or 'none'; got {noise_mode!r}")
        styles = self.styles(ws)
        x = img = None
        i = 0
        for block in self.blocks:
            x, img = block(x, img, styles[i : i + block.num_ws], noise_mode, generator)
            i += block.num_ws
        img = fit_to_resolution(img, self.img_resolution, self.fit_mode)
        return torch.sigmoid(img).contiguous()  # [N, C, R, R], standard layout for callers

    def styles(self, ws: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer styles [N, I_l] from ``ws`` (N, w_dim) or (N, num_ws, w_dim)."""
        layers = [layer for block in self.blocks for layer in block.style_layers()]
        if ws.ndim == 3:
            check_shape(ws, (None, self.num_ws, self.w_dim), "ws")
            return [layer.affine(ws[:, i]) for i, layer in enumerate(layers)]
        check_shape(ws, (None, self.w_dim), "ws")
        # One product instead of one per layer: fewer, larger kernels (and thread wake-ups).
        affines = [layer.affine for layer in layers]
        weight = torch.cat([a.weight * a.weight_gain for a in affines])  # [sum I_l, w_dim]
        bias = torch.cat([a.bias * a.bias_gain for a in affines])
        return list(F.linear(ws, weight, bias).split([a.out_features for a in affines], dim=1))

    def macs(self) -> int:
        """Multiply-adds of one forward pass per image (convolutions and affines)."""
        return sum(b.macs() for b in self.blocks)


class Generator(nn.Module):
    """Generative surrogate ``G``: concepts ``z`` (N, z_dim) -> images (N, C, R, R) in [0, 1].

    Parameters
    ----------
    z_dim : int
        Size of the concept vector.
    img_resolution : int
        Output image size ``R`` (28 to 256; non powers of two are cropped/resized, see module doc).
    img_channels : int
        Output channels (1 or 3).
    w_dim : int
        Size of the intermediate latent ``w``.
    mapping_layers : int
        Depth of the mapping network.
    channel_base, channel_max : int
        Width of the synthesis network: ``min(channel_base // r, channel_max)`` channels at
        resolution ``r`` (e.g. ``channel_base=1536, channel_max=48`` for a small CPU model,
        ``32768, 512`` for the paper's).
    mapping_lr_multiplier : float
        Learning-rate multiplier of the mapping network.
    use_noise : bool
        Per-pixel noise inputs in the synthesis layers.
    styled_input : bool
        Start the synthesis from the constant plus a projection of the first style.
    fit_mode : {"auto", "crop", "resize"}
        How the power-of-two synthesis is brought to ``img_resolution``.
    channels_last : bool
        Run the feature maps in NHWC memory layout (faster on CPU; no effect on the values).
    modconv_impl : {"auto", "grouped", "scaled"}
        Form of :func:`modulated_conv2d`; ``"auto"`` uses the one measured fastest per device.

    Examples
    --------
    >>> g = Generator(8, 28, 1, w_dim=32, mapping_layers=2, channel_base=256, channel_max=16)
    >>> g(torch.zeros(2, 8), noise_mode="const").shape
    torch.Size([2, 1, 28, 28])
    """

    def __init__(
        self,
        z_dim: int,
        img_resolution: int,
        img_channels: int,
        *,
        w_dim: int = 256,
        mapping_layers: int = 4,
        channel_base: int = 16384,
        channel_max: int = 256,
        mapping_lr_multiplier: float = 0.01,
        use_noise: bool = True,
        styled_input: bool = False,
        fit_mode: FitMode = "auto",
        channels_last: bool = True,
        modconv_impl: ModConvImpl = "auto",
    ) -> None:
        super().__init__()
        self.z_dim, self.img_resolution, self.img_channels = z_dim, img_resolution, img_channels
        self.mapping = MappingNetwork(
            z_dim, w_dim, mapping_layers, lr_multiplier=mapping_lr_multiplier
        )
        self.synthesis = SynthesisNetwork(
            w_dim,
            img_resolution,
            img_channels,
            channel_base=channel_base,
            channel_max=channel_max,
            use_noise=use_noise,
            styled_input=styled_input,
            fit_mode=fit_mode,
            channels_last=channels_last,
            modconv_impl=modconv_impl,
        )

    def forward(
        self,
        z: torch.Tensor,
        noise_mode: NoiseMode = "random",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Images (N, C, R, R) in [0, 1]; ``generator`` seeds the noise when ``"random"``."""
        w = self.mapping(z)  # [N, w_dim], shared by every synthesis layer
        return self.synthesis(w, noise_mode=noise_mode, generator=generator)

    def macs_per_image(self) -> int:
        """Multiply-adds of one forward pass for one image (convolutions and linear layers)."""
        return self.mapping.macs() + self.synthesis.macs()

    def flops_per_image(self) -> int:
        """FLOPs (2 x multiply-adds) of one forward pass for one image.

        Counts the convolutions and linear layers, which are all but a few percent of the work;
        elementwise operations, upsampling and demodulation are not counted. A training step
        (forward + backward) costs about 3x this.
        """
        return 2 * self.macs_per_image()
