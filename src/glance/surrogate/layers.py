"""Building blocks of the generative surrogate: modulated convolution and equalised layers.

The layers follow StyleGAN2 (Karras et al., 2020): weights are stored with unit variance and
scaled at run time by ``1 / sqrt(fan_in)`` ("equalised learning rate"), so every layer learns at
the same speed whatever its width.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from glance.exceptions import ShapeError

__all__ = [
    "ModConvImpl",
    "modulated_conv2d",
    "preferred_modconv_impl",
    "check_shape",
    "EqualizedLinear",
    "EqualizedConv2d",
]

ModConvImpl = Literal["auto", "grouped", "scaled"]

# Measured by benchmarks/bench_modconv.py (benchmarks/results/modconv.json) on the project's shared
# 2-core CPU, 1 thread, best of interleaved rounds: a whole generator step (forward + backward,
# batch 64) runs 1.45x (48 channels) to 3.1x (128 channels) faster with the "scaled" form (scale
# the input, one convolution with the shared weight, demodulate the output) in NHWC layout than
# with one grouped convolution per sample, which cannot use NHWC (it folds the batch into the
# channels). A single isolated NCHW layer shows a smaller gap (scaled 1.06-1.16x faster), and at
# 2 threads on the loaded machine the isolated timings were too noisy to rank (0.3x-1.4x).
# CUDA: not measured in this project (no GPU was available); "scaled" is kept, as in
# stylegan2-ada's training path. Change this table only on new measurements.
_PREFERRED_IMPL: dict[str, Literal["grouped", "scaled"]] = {"cpu": "scaled", "cuda": "scaled"}


def preferred_modconv_impl(device: torch.device | str) -> Literal["grouped", "scaled"]:
    """Return the modulated-convolution form measured fastest on ``device``'s type."""
    return _PREFERRED_IMPL.get(torch.device(device).type, "scaled")


def check_shape(x: torch.Tensor, shape: tuple[int | None, ...], name: str) -> None:
    """Raise :class:`ShapeError` unless ``x`` has ``shape`` (``None`` matches any size)."""
    if not isinstance(x, torch.Tensor):
        raise ShapeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    ok = x.ndim == len(shape) and all(
        s is None or s == d for s, d in zip(shape, x.shape, strict=True)
    )
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ShapeError(f"{name} must have shape {want}; got {tuple(x.shape)}")


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    *,
    up: int = 1,
    padding: int | None = None,
    impl: ModConvImpl = "auto",
    gain: float = 1.0,
    bias: torch.Tensor | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Convolve each sample with its own style-modulated (and demodulated) weight.

    For sample ``n`` the effective weight is ``w'[o, i] = weight[o, i] * styles[n, i]``, divided
    (if ``demodulate``) by ``sqrt(sum_{i,k} w'[o, i, k]^2 + eps)`` so every output channel has
    unit expected variance.

    Parameters
    ----------
    x : Tensor of shape (N, I, H, W)
        Input feature maps.
    weight : Tensor of shape (O, I, k, k)
        Shared convolution weight (already scaled, e.g. by the equalised-lr gain).
    styles : Tensor of shape (N, I)
        Per-sample, per-input-channel scales.
    demodulate : bool
        Normalise each output channel of the modulated weight to unit norm.
    up : int
        Bilinear upsampling factor applied to the input before the convolution (1 or 2).
    padding : int, optional
        Convolution padding; ``k // 2`` (same size output) by default.
    impl : {"auto", "grouped", "scaled"}
        ``"grouped"`` builds N weights and runs one grouped convolution; ``"scaled"`` scales the
        input, convolves with the shared weight and scales the output (mathematically the same).
        ``"auto"`` picks the form measured fastest for ``x``'s device.
    gain : float
        Constant output scale, folded into the (de)modulation so it costs no extra pass.
    bias : Tensor of shape (O,), optional
        Added to the output (fused with the demodulation: one pass over the output, not two).
    eps : float
        Added under the square root of the demodulation.

    Returns
    -------
    Tensor of shape (N, O, H * up, W * up)

    Raises
    ------
    ShapeError
        If the shapes of ``x``, ``weight`` and ``styles`` do not agree.
    """
    check_shape(weight, (None, None, None, None), "weight")
    out_ch, in_ch, kh, kw = weight.shape
    check_shape(x, (None, in_ch, None, None), "x")
    check_shape(styles, (x.shape[0], in_ch), "styles")
    if bias is not None:
        check_shape(bias, (out_ch,), "bias")
    if up not in (1, 2):
        raise ShapeError(f"up must be 1 or 2; got {up}")
    if padding is None:
        padding = kh // 2
    if impl == "auto":
        impl = preferred_modconv_impl(x.device)
    if impl == "scaled":
        return _modconv_scaled(x, weight, styles, demodulate, up, padding, gain, bias, eps)
    if impl == "grouped":
        return _modconv_grouped(x, weight, styles, demodulate, up, padding, gain, bias, eps)
    raise ValueError(f"impl must be 'auto', 'grouped' or 'scaled'; got {impl!r}")


def _demod_coefficients(weight: torch.Tensor, styles: torch.Tensor, eps: float) -> torch.Tensor:
    """``1 / ||weight[o] * styles[n]||`` for every (n, o), without building N weights."""
    w2 = weight.square().sum(dim=(2, 3))  # [O, I]
    return (styles.square() @ w2.t() + eps).rsqrt()  # [N, O]


def _upsample(x: torch.Tensor, up: int) -> torch.Tensor:
    if up == 1:
        return x
    return F.interpolate(x, scale_factor=up, mode="bilinear", align_corners=False)


def _modconv_scaled(x, weight, styles, demodulate, up, padding, gain, bias, eps):
    n = x.shape[0]
    # Scaling before the upsampling is exact (both are per-channel linear) and 4x cheaper.
    x = x * styles.reshape(n, -1, 1, 1)
    x = F.conv2d(_upsample(x, up), weight, padding=padding)  # [N, O, H', W']
    if demodulate:
        coef = (_demod_coefficients(weight, styles, eps) * gain).reshape(n, -1, 1, 1)
        if bias is None:
            return x * coef
        return torch.addcmul(bias.reshape(1, -1, 1, 1), x, coef)  # one pass: b + x * coef
    if bias is not None:
        return torch.add(bias.reshape(1, -1, 1, 1), x, alpha=gain)
    return x * gain if gain != 1.0 else x


def _modconv_grouped(x, weight, styles, demodulate, up, padding, gain, bias, eps):
    n = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    w = weight.unsqueeze(0) * styles.reshape(n, 1, in_ch, 1, 1)  # [N, O, I, k, k]
    if demodulate:
        w = w * (_demod_coefficients(weight, styles, eps) * gain).reshape(n, out_ch, 1, 1, 1)
    elif gain != 1.0:
        w = w * gain
    x = _upsample(x, up)
    h, wd = x.shape[2], x.shape[3]
    x = F.conv2d(
        x.reshape(1, n * in_ch, h, wd),
        w.reshape(n * out_ch, in_ch, kh, kw),
        None if bias is None else bias.repeat(n),
        padding=padding,
        groups=n,
    )
    return x.reshape(n, out_ch, x.shape[2], x.shape[3])


class EqualizedLinear(nn.Module):
    """Fully connected layer with the equalised learning rate of StyleGAN.

    Parameters
    ----------
    in_features, out_features : int
        Sizes of the input and output.
    bias_init : float
        Initial value of every bias entry.
    lr_multiplier : float
        Learning-rate multiplier (0.01 in StyleGAN's mapping network).
    activation : {"linear", "lrelu"}
        ``"lrelu"`` applies a leaky ReLU (slope 0.2) with gain ``sqrt(2)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_multiplier: float = 1.0,
        activation: Literal["linear", "lrelu"] = "linear",
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.weight_gain
        b = None if self.bias is None else self.bias * self.bias_gain
        x = F.linear(x, w, b)
        if self.activation == "lrelu":
            x = F.leaky_relu(x, 0.2) * math.sqrt(2.0)
        return x

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, activation={self.activation}"


def pooled_kernel(weight: torch.Tensor) -> torch.Tensor:
    """The kernel of a convolution by ``weight`` followed by a 2x2 average pool, to apply with
    stride 2 and the same padding: [O, I, k, k] -> [O, I, k + 1, k + 1] (``weight`` convolved
    with the 2x2 box / 4). Its windows are the pool's: odd sizes are floored as the pool floors
    them."""
    return 0.25 * (
        F.pad(weight, (0, 1, 0, 1))
        + F.pad(weight, (1, 0, 0, 1))
        + F.pad(weight, (0, 1, 1, 0))
        + F.pad(weight, (1, 0, 1, 0))
    )


class EqualizedConv2d(nn.Module):
    """Convolution with the equalised learning rate, optional 2x average-pool downsampling.

    Parameters
    ----------
    in_channels, out_channels, kernel_size : int
        Convolution sizes (padding keeps the spatial size).
    bias : bool
        Learn a per-channel bias.
    activation : {"linear", "lrelu"}
        ``"lrelu"`` applies a leaky ReLU (slope 0.2) with gain ``sqrt(2)``.
    down : int
        1, or 2 to halve the output size with a 2x2 average pool after the convolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        bias: bool = True,
        activation: Literal["linear", "lrelu"] = "linear",
        down: int = 1,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.down = down
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight * self.weight_gain
        if self.down == 2:
            # conv then a 2x2 average pool is one stride-2 convolution with the kernel convolved
            # with the 2x2 box: the same function (zero padding included) without computing the
            # full-size output (the fast discriminator's forward + backward at 64 px, on
            # generated images: 100 -> 76 ms on this project's CPU; bench_discriminator.py).
            x = F.conv2d(x, pooled_kernel(weight), self.bias, stride=2, padding=self.padding)
        else:
            x = F.conv2d(x, weight, self.bias, padding=self.padding)
        if self.activation == "lrelu":
            x = F.leaky_relu(x, 0.2) * math.sqrt(2.0)
        return x

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, activation={self.activation}, "
            f"down={self.down}"
        )
