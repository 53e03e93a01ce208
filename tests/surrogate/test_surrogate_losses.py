"""Loss terms against analytic values, NaN safety, and the Dirac-GAN check of R1."""

from __future__ import annotations

import math

import pytest
import torch

from glance.exceptions import ShapeError
from glance.surrogate import Generator
from glance.training.losses import (
    adversarial_distillation,
    alignment_loss,
    covariance_penalty,
    d_logistic,
    distillation_kl,
    feature_matching,
    g_nonsaturating,
    hsic_dependence,
    intervention_readback,
    kl_standard_normal,
    latent_cycle,
    orthogonal_jacobian_penalty,
    r1_penalty,
    reconstruction_bce,
    reconstruction_l1,
    reconstruction_laplacian,
)


def _kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def test_distillation_kl_analytic():
    t_logits = torch.tensor([[math.log(0.75), math.log(0.25)]])
    s_logits = torch.tensor([[0.0, 0.0]])
    assert distillation_kl(t_logits, s_logits, 1.0).item() == pytest.approx(
        _kl([0.75, 0.25], [0.5, 0.5]), rel=1e-6
    )
    # temperature 2 on logits 2*log(p): softmax(f/2) = p again, and the T^2 factor applies
    got = distillation_kl(2 * t_logits, s_logits, 2.0).item()
    assert got == pytest.approx(4 * _kl([0.75, 0.25], [0.5, 0.5]), rel=1e-6)
    same = torch.randn(5, 10)
    assert distillation_kl(same, same + 3.0, 1.5).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_kl(same, torch.randn(5, 10)).item() > 0


def test_distillation_kl_rejects_mismatch():
    with pytest.raises(ShapeError):
        distillation_kl(torch.randn(4, 10), torch.randn(4, 9))
    with pytest.raises(ValueError, match="temperature"):
        distillation_kl(torch.randn(4, 10), torch.randn(4, 10), 0.0)


def test_adversarial_distillation_direction():
    s = torch.tensor([[math.log(0.9), math.log(0.1)]])
    f = torch.tensor([[0.0, 0.0]], requires_grad=True)
    loss = adversarial_distillation(s, f)
    assert loss.item() == pytest.approx(_kl([0.9, 0.1], [0.5, 0.5]), rel=1e-6)
    loss.backward()
    assert f.grad[0, 0] < 0 < f.grad[0, 1]  # pushes the classifier towards S's class 0


def test_alignment_loss_only_known_and_nan_safe():
    z = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    c = torch.tensor([[0.0, float("nan")], [3.0, 2.0]])
    loss = alignment_loss(z, c)
    assert loss.item() == pytest.approx((1.0 + 0.0 + 4.0) / 3)
    loss.backward()
    assert torch.isfinite(z.grad).all()
    assert z.grad[0, 1] == 0  # the unknown entry gets no gradient
    mask = torch.tensor([[True, True], [False, True]])
    assert alignment_loss(z, c, mask).item() == pytest.approx((1.0 + 4.0) / 2)
    none_known = alignment_loss(z, torch.full_like(c, float("nan")))
    assert none_known.item() == 0.0 and none_known.requires_grad


def test_kl_standard_normal_analytic():
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)]])
    want = 0.5 * (1.0 + 1.0 - 1 - 0) + 0.5 * (0 + 2.0 - 1 - math.log(2.0))
    assert kl_standard_normal(mu, logvar).item() == pytest.approx(want, rel=1e-6)
    assert kl_standard_normal(torch.zeros(3, 4), torch.zeros(3, 4)).item() == 0.0


def test_covariance_penalty_spares_aligned_pairs():
    n = 4000
    a0 = torch.randn(n)
    a1 = 0.8 * a0 + 0.6 * torch.randn(n)  # aligned dims correlate naturally
    free = torch.randn(n, 2)
    z = torch.stack([a0, a1, free[:, 0], free[:, 1]], dim=1)
    assert covariance_penalty(z, 2, 2).item() < 1e-3
    copy = torch.stack([a0, a1, a0, free[:, 1]], dim=1)  # a free dim copies a context
    # cov(free0, a0) = 1, cov(free0, a1) = 0.8 among 5 penalised pairs (1 free-free + 4 cross)
    got = covariance_penalty(copy, [0, 1], [2, 3]).item()
    assert got == pytest.approx((1.0 + 0.64) / 5, abs=0.05)
    with pytest.raises(ShapeError):
        covariance_penalty(z, 2, 3)


def test_covariance_penalty_free_only_exact():
    z = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])  # cov = [[2, 2], [2, 2]]
    assert covariance_penalty(z, 0, 2).item() == pytest.approx(4.0)


def test_gan_losses_at_zero_logits():
    zero = torch.zeros(8)
    assert g_nonsaturating(zero).item() == pytest.approx(math.log(2))
    assert d_logistic(zero, zero).item() == pytest.approx(2 * math.log(2))
    assert d_logistic(torch.full((8,), 20.0), torch.full((8,), -20.0)).item() < 1e-8


def test_r1_penalty_linear_discriminator_is_squared_weight_norm():
    w = torch.randn(1, 3, 4, 4)
    images = torch.rand(5, 3, 4, 4, requires_grad=True)
    logits = (images * w).flatten(1).sum(1) + 0.3  # D(x) = w . x + b
    assert r1_penalty(logits, images).item() == pytest.approx(w.square().sum().item(), rel=1e-6)
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty(logits.detach(), images.detach())


def _dirac_gan(gamma: float, g_loss: str, steps: int = 500, lr: float = 0.1) -> float:
    """Dirac-GAN (Mescheder et al. 2018): G = theta, D(x) = psi * x, real data at 0.

    Simultaneous gradient descent from (theta, psi) = (1, 1); returns the final distance from
    the equilibrium (0, 0).
    """
    theta = torch.tensor(1.0, requires_grad=True)
    psi = torch.tensor(1.0, requires_grad=True)
    for _ in range(steps):
        real = torch.zeros(1, 1, 1, 1, requires_grad=True)
        real_logits = psi * real.flatten(1).sum(1)
        d_loss = d_logistic(real_logits, psi * theta.detach().reshape(1))
        if gamma > 0:
            d_loss = d_loss + gamma / 2 * r1_penalty(real_logits, real)
        fake_logits = psi.detach() * theta.reshape(1)
        if g_loss == "nonsaturating":
            loss_g = g_nonsaturating(fake_logits)
        else:  # minimax: G ascends the discriminator's loss
            loss_g = -d_logistic(real_logits.detach(), fake_logits)
        (g_psi,) = torch.autograd.grad(d_loss, psi)
        (g_theta,) = torch.autograd.grad(loss_g, theta)
        with torch.no_grad():
            psi -= lr * g_psi
            theta -= lr * g_theta
    return math.hypot(theta.item(), psi.item())


@pytest.mark.parametrize("g_loss", ["nonsaturating", "minimax"])
def test_dirac_gan_converges_with_r1_and_not_without(g_loss):
    assert _dirac_gan(1.0, g_loss) < 1e-2
    # Without R1 the iterates circle the equilibrium: the minimax game spirals outwards, the
    # non-saturating one stalls on an orbit whose radius shrinks only polynomially slowly.
    assert _dirac_gan(0.0, g_loss, steps=2000) > 0.2


def test_simple_regression_losses():
    a, b = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]])
    assert latent_cycle(a, b).item() == pytest.approx(2.5)
    assert feature_matching(a, b).item() == pytest.approx(2.5)
    assert reconstruction_l1(a, b).item() == pytest.approx(1.5)
    with pytest.raises(ShapeError):
        reconstruction_l1(a, b.t())


def test_reconstruction_laplacian_weighs_every_band():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    assert reconstruction_laplacian(x, x).item() == pytest.approx(0.0, abs=1e-7)
    # a uniform offset lives in the low-pass level alone: it costs what pixel L1 charges
    assert reconstruction_laplacian(x + 0.3, x).item() == pytest.approx(0.3, rel=1e-5)
    # a thin line (2% of the pixels) costs more than in pixel L1: its fine band counts as much
    # as the flat background's coarse ones
    line = x.clone()
    line[..., 30, :] += 0.5
    assert reconstruction_laplacian(line, x).item() > 1.5 * reconstruction_l1(line, x).item()
    # smooth 32 px images have fewer levels than 64 px ones but the same contract
    small = torch.rand(1, 1, 28, 28)
    assert reconstruction_laplacian(small + 0.1, small).item() == pytest.approx(0.1, rel=1e-5)
    with pytest.raises(ShapeError):
        reconstruction_laplacian(x, x[:, :1])
    y = x.clone().requires_grad_(True)
    reconstruction_laplacian(y, torch.zeros_like(x)).backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_reconstruction_bce_pulls_a_saturated_pixel_back():
    import torch.nn.functional as F

    torch.manual_seed(0)
    x, y = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    assert reconstruction_bce(y, x).item() == pytest.approx(F.binary_cross_entropy(y, x).item())
    with pytest.raises(ShapeError):
        reconstruction_bce(y, x[:1])
    # A generator that learned to draw black: logits near -22 where the image is bright. An L1
    # no longer moves them (the sigmoid's slope is 3e-10); the cross-entropy pulls each by its
    # whole error, and does so in float32 under a bf16 image too.
    logits = torch.full((1, 1, 4, 4), -22.0, requires_grad=True)
    target = torch.ones(1, 1, 4, 4)
    reconstruction_l1(torch.sigmoid(logits), target).backward()
    assert logits.grad.abs().max().item() < 1e-9
    logits.grad = None
    reconstruction_bce(torch.sigmoid(logits), target).backward()
    assert logits.grad.numpy() == pytest.approx(-1.0 / 16, rel=1e-3)
    half = reconstruction_bce(torch.sigmoid(logits.detach().bfloat16()), target.bfloat16())
    assert half.dtype == torch.float32 and math.isfinite(half.item())
    # Pixels that float32 rounds to exactly 0 or 1 (logits beyond about -100 or 17, common for
    # saturated colours) get a finite gradient: a hand-written log(p) gives 0 / 0 there, and a
    # NaN in the first full step after the warm-up
    far = torch.tensor([-200.0, -30.0, 20.0, 200.0], requires_grad=True)
    p = torch.sigmoid(far)
    assert p[0].item() == 0.0 and p[-1].item() == 1.0
    loss = reconstruction_bce(p, torch.tensor([0.0, 0.5, 0.9, 1.0]))
    loss.backward()
    assert math.isfinite(loss.item()) and torch.isfinite(far.grad).all()
    assert far.grad[1].item() < -1e-3  # still pulled up, if less than at -22
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(reconstruction_bce(p.bfloat16(), torch.rand(4).bfloat16()))


def _warm_up_on_bars(bce: float) -> tuple[float, float]:
    """A generator with StyleGAN's slow mapping network fitted to sparse images (a bright bar
    on black, 8% of the pixels) by the reconstruction loss alone; its mean pixel and L1."""
    torch.manual_seed(0)
    n = 256
    pos = torch.randint(2, 14, (n,))
    cols = torch.arange(16)
    x = ((cols >= pos[:, None]) & (cols < pos[:, None] + 2)).float()[:, None, None, :]
    x = x * (torch.arange(16)[:, None].ge(3) & torch.arange(16)[:, None].lt(13)).float()
    z = torch.nn.functional.one_hot(pos - 2, 12).float()
    g = Generator(
        12,
        16,
        1,
        w_dim=16,
        mapping_layers=2,
        channel_base=128,
        channel_max=16,
        mapping_lr_multiplier=0.01,
    )
    opt = torch.optim.Adam(g.parameters(), lr=2e-3, betas=(0.0, 0.99))
    for _ in range(300):
        idx = torch.randint(0, n, (32,))
        y = g(z[idx], noise_mode="none")
        loss = reconstruction_l1(y, x[idx])
        if bce:
            loss = loss + bce * reconstruction_bce(y, x[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        y = g(z, noise_mode="none")
    return y.mean().item(), reconstruction_l1(y, x).item()


def test_pixel_cross_entropy_keeps_a_warm_up_from_drawing_black():
    black_l1 = 0.078125  # the bars' mean pixel: what an all-black image costs
    # The L1 alone is lowest, for a generator that cannot use z yet, at the per-pixel median,
    # black, and it drives the output sigmoid there for good (the default preset's warm-up on
    # Morpho-MNIST, docs/faithfulness.md).
    mean, l1 = _warm_up_on_bars(0.0)
    assert mean < 1e-3 and l1 == pytest.approx(black_l1, abs=2e-3)
    mean, l1 = _warm_up_on_bars(0.1)
    assert mean > 0.02 and l1 < 0.85 * black_l1


class _DrawsItsInput(torch.nn.Module):
    def forward(self, z, noise_mode="random", generator=None):
        return z


@pytest.mark.parametrize("weight", [0.0, 0.25])
def test_both_generator_stages_add_the_cross_entropy_by_its_weight(weight):
    from glance.exceptions import ConfigError
    from glance.training.config import LossConfig
    from glance.training.tasks import GeneratorTask

    torch.manual_seed(0)
    y, x = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    cfg = LossConfig(reconstruction_loss="laplacian", reconstruction_bce=weight)
    task = GeneratorTask(_DrawsItsInput(), None, None, None, None, cfg)
    want = reconstruction_laplacian(y, x) + weight * reconstruction_bce(y, x)
    assert task.reconstruction(y, x).item() == pytest.approx(want.item())
    # the warm-up's loss is that term at the reconstruction weight (the full stage calls the
    # same method on its real images)
    out = task(x, None, y, y[:0], torch.Generator(), warmup=True)
    assert out["loss"].item() == pytest.approx(cfg.reconstruction * want.item())
    with pytest.raises(ConfigError, match="reconstruction_bce"):
        LossConfig.from_dict({"reconstruction_bce": -0.1})


def test_reconstruction_loss_is_a_config_choice():
    import dataclasses
    import typing

    from glance.exceptions import ConfigError
    from glance.training.config import LossConfig
    from glance.training.losses import RECONSTRUCTION_LOSSES

    # the config's choices are the registry's names (config.py cannot import the losses)
    field = {f.name: f for f in dataclasses.fields(LossConfig)}["reconstruction_loss"]
    hints = typing.get_type_hints(LossConfig)
    assert set(typing.get_args(hints[field.name])) == set(RECONSTRUCTION_LOSSES)
    assert LossConfig(reconstruction_loss="laplacian").reconstruction_loss == "laplacian"
    with pytest.raises(ConfigError, match="reconstruction_loss"):
        LossConfig.from_dict({"reconstruction_loss": "l2"})


class _Linear(torch.nn.Module):
    def __init__(self, columns):
        super().__init__()
        self.register_buffer("j", columns)  # [P, d] Jacobian

    def forward(self, z):
        return (z @ self.j.t()).reshape(z.shape[0], 1, 1, -1)


def test_orthogonal_jacobian_penalty_linear_generators():
    ortho = _Linear(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    z = torch.randn(4, 2)
    assert orthogonal_jacobian_penalty(ortho, z, 0.5).item() == pytest.approx(0.0, abs=1e-10)
    skew = _Linear(torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]))
    # Gram over pixels (mean over P=3): <c0, c1> / 3 = 1/3; both off-diagonal entries squared
    got = orthogonal_jacobian_penalty(skew, z, 0.5).item()
    assert got == pytest.approx(1 / 9, rel=1e-5)


def test_orthogonal_jacobian_penalty_on_generator_is_differentiable():
    g = Generator(4, 16, 1, w_dim=16, mapping_layers=1, channel_base=64, channel_max=8)
    z = torch.randn(3, 4)
    loss = orthogonal_jacobian_penalty(g, z, 0.1, dims=[0, 2])
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert g.mapping.layers[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="at least 2"):
        orthogonal_jacobian_penalty(g, z, 0.1, dims=[1])


def _readback_case(mix: torch.Tensor, moved, shift, weights=None):
    """A linear 'generator' whose image is ``z @ mix`` and a reader that reads the image back:
    moving dim k changes reader column c by ``shift * mix[k, c]``."""
    z = torch.randn(len(moved), mix.shape[0])
    gen = lambda zz: (zz @ mix).reshape(len(zz), 1, 1, -1)  # noqa: E731
    read = lambda img: img.reshape(len(img), -1)  # noqa: E731
    columns = torch.arange(mix.shape[1])
    w = torch.ones(len(moved), mix.shape[1]) if weights is None else weights
    return intervention_readback(gen, read, z, torch.tensor(moved), torch.tensor(shift), columns, w)


def test_intervention_readback_zero_only_for_a_disentangled_calibrated_generator():
    # three dims, two read columns (dims 0 and 1 aligned, dim 2 free)
    clean = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    got = _readback_case(clean, [0, 1, 2], [1.0, -0.5, 1.2]).item()
    assert got == pytest.approx(0.0, abs=1e-10)
    # dim 0 leaks into column 1 by half its shift: sample 0's "others" error (0.5)^2, of 3
    leak = torch.tensor([[1.0, 0.5], [0.0, 1.0], [0.0, 0.0]])
    assert _readback_case(leak, [0, 1, 2], [1.0, 1.0, 1.0]).item() == pytest.approx(0.25 / 3)
    # an under-drawn dim: column 0 moves by 0.5 of the asked 2.0 -> its own error (1.5)^2
    weak = torch.tensor([[0.25, 0.0], [0.0, 1.0], [0.0, 0.0]])
    assert _readback_case(weak, [0], [2.0]).item() == pytest.approx(2.25)
    # drawing nothing at all is no way out: the own error is the whole shift
    assert _readback_case(torch.zeros(3, 2), [0], [1.0]).item() == pytest.approx(1.0)
    # a free dim that moves a context is penalised too (mean over the two columns it moves)
    free = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert _readback_case(free, [2], [1.0]).item() == pytest.approx(0.5)


def test_intervention_readback_weights_leave_out_pairs():
    leak = torch.tensor([[1.0, 0.5], [0.0, 1.0], [0.0, 0.0]])
    w = torch.tensor([[1.0, 0.0]])  # column 1 not compared when dim 0 moves (linked)
    assert _readback_case(leak, [0], [1.0], w).item() == pytest.approx(0.0, abs=1e-10)
    with pytest.raises(ShapeError):
        _readback_case(leak, [0, 1], [1.0], torch.ones(2, 2))


def test_intervention_readback_reaches_the_generator():
    g = Generator(4, 16, 1, w_dim=16, mapping_layers=1, channel_base=64, channel_max=8)
    reader = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16 * 16, 2))
    reader.requires_grad_(False)
    z = torch.randn(3, 4)
    loss = intervention_readback(
        lambda zz: g(zz, noise_mode="const"),
        reader,
        z,
        torch.tensor([0, 1, 3]),
        torch.tensor([1.0, -1.0, 0.5]),
        torch.tensor([0, 1]),
        torch.ones(3, 2),
    )
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert g.mapping.layers[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in reader.parameters())


def test_hsic_dependence_sees_nonlinear_dependence_that_covariance_misses():
    g = torch.Generator().manual_seed(0)
    half = torch.randn(128, 2, generator=g)
    a = torch.cat([half, -half])  # symmetric: |a0| has exactly zero covariance with a0
    independent = hsic_dependence(a, torch.randn(256, 2, generator=g)).item()
    # |a0| is uncorrelated with a0 (zero covariance) yet a function of it
    folded = a[:, :1].abs()
    assert abs(torch.cov(torch.cat([a[:, :1], folded], 1).t())[0, 1].item()) < 1e-6
    dependent = hsic_dependence(a[:, :1], folded).item()
    assert dependent > 3 * independent
    assert hsic_dependence(a, a).item() == pytest.approx(1.0, abs=1e-5)
    # invariant to the scale of either side (median-heuristic bandwidths)
    assert hsic_dependence(a[:, :1], 10 * folded).item() == pytest.approx(dependent, rel=1e-4)


def test_hsic_dependence_gradient_and_shapes():
    a = torch.randn(32, 3, requires_grad=True)
    hsic_dependence(a, a.detach()[:, :1] ** 2).backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0
    with pytest.raises(ShapeError):
        hsic_dependence(torch.randn(3, 2), torch.randn(3, 2))
    with pytest.raises(ShapeError):
        hsic_dependence(torch.randn(8, 2), torch.randn(7, 2))
