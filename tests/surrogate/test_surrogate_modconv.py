"""Modulated convolution: both forms equal a per-sample reference and each other."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from glance.exceptions import ShapeError
from glance.surrogate import modulated_conv2d, preferred_modconv_impl


def _reference(x, weight, styles, demodulate, up, gain, bias=None):
    """One plain convolution per sample with an explicitly built weight."""
    outs = []
    for n in range(x.shape[0]):
        w = weight * styles[n].reshape(1, -1, 1, 1)
        if demodulate:
            w = w / (w.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8).sqrt()
        xi = x[n : n + 1]
        if up == 2:
            xi = F.interpolate(xi, scale_factor=2, mode="bilinear", align_corners=False)
        outs.append(F.conv2d(xi, w * gain, bias, padding=weight.shape[-1] // 2))
    return torch.cat(outs)


@pytest.mark.parametrize("impl", ["grouped", "scaled"])
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("use_bias", [False, True])
@pytest.mark.parametrize("gain", [1.0, 1.7])
def test_modconv_matches_reference(impl, demodulate, up, k, use_bias, gain):
    x = torch.randn(3, 5, 6, 6, dtype=torch.float64)
    weight = torch.randn(4, 5, k, k, dtype=torch.float64)
    styles = torch.randn(3, 5, dtype=torch.float64)
    bias = torch.randn(4, dtype=torch.float64) if use_bias else None
    got = modulated_conv2d(x, weight, styles, demodulate, up=up, impl=impl, gain=gain, bias=bias)
    want = _reference(x, weight, styles, demodulate, up, gain, bias)
    assert got.shape == (3, 4, 6 * up, 6 * up)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_forms_agree_in_float32_and_in_gradients():
    x = torch.randn(8, 32, 16, 16, requires_grad=True)
    w = torch.randn(32, 32, 3, 3, requires_grad=True)
    s = torch.randn(8, 32, requires_grad=True)
    grads = {}
    outs = {}
    for impl in ("grouped", "scaled"):
        y = modulated_conv2d(x, w, s, impl=impl, up=2)
        outs[impl] = y.detach()
        grads[impl] = torch.autograd.grad(y.square().mean(), (x, w, s))
    torch.testing.assert_close(outs["grouped"], outs["scaled"], rtol=1e-4, atol=1e-4)
    for a, b in zip(grads["grouped"], grads["scaled"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_demodulated_output_has_unit_variance_for_unit_input():
    x = torch.randn(64, 64, 16, 16)
    w = torch.randn(64, 64, 3, 3)
    s = torch.rand(64, 64) * 3 + 0.1  # styles of any scale are normalised away
    y = modulated_conv2d(x, w, s)
    assert 0.8 < y.var().item() < 1.2


def test_auto_uses_the_measured_form():
    assert preferred_modconv_impl("cpu") in ("grouped", "scaled")
    x, w, s = torch.randn(2, 3, 4, 4), torch.randn(5, 3, 3, 3), torch.randn(2, 3)
    auto = modulated_conv2d(x, w, s)
    explicit = modulated_conv2d(x, w, s, impl=preferred_modconv_impl("cpu"))
    assert torch.equal(auto, explicit)


@pytest.mark.parametrize(
    "x_shape,w_shape,s_shape",
    [
        ((2, 3, 4, 4), (5, 4, 3, 3), (2, 3)),  # channels of x vs weight
        ((2, 3, 4, 4), (5, 3, 3, 3), (2, 4)),  # styles width
        ((2, 3, 4, 4), (5, 3, 3, 3), (3, 3)),  # styles batch
        ((3, 4, 4), (5, 3, 3, 3), (2, 3)),  # x not 4-D
    ],
)
def test_shape_errors(x_shape, w_shape, s_shape):
    with pytest.raises(ShapeError):
        modulated_conv2d(torch.randn(x_shape), torch.randn(w_shape), torch.randn(s_shape))


def test_bias_shape_checked():
    x, w, s = torch.randn(2, 3, 4, 4), torch.randn(5, 3, 3, 3), torch.randn(2, 3)
    with pytest.raises(ShapeError, match="bias"):
        modulated_conv2d(x, w, s, bias=torch.zeros(3))


def test_bad_impl_and_up_rejected():
    x, w, s = torch.randn(2, 3, 4, 4), torch.randn(5, 3, 3, 3), torch.randn(2, 3)
    with pytest.raises(ValueError, match="impl"):
        modulated_conv2d(x, w, s, impl="fast")
    with pytest.raises(ShapeError, match="up"):
        modulated_conv2d(x, w, s, up=3)
