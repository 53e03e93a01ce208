"""The networks can learn: G fits targets from their codes, D separates two image sets."""

from __future__ import annotations

import torch

from glance.surrogate import ConceptEncoder, Discriminator, Generator, SurrogateHead
from glance.training.losses import d_logistic, distillation_kl, reconstruction_l1


def _blobs(n: int, res: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of a bright disc whose centre is the code (2 dims in [-1, 1])."""
    codes = torch.rand(n, 2, generator=gen) * 2 - 1
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, res), torch.linspace(-1, 1, res), indexing="ij")
    d2 = (xx - codes[:, 0, None, None] * 0.5) ** 2 + (yy - codes[:, 1, None, None] * 0.5) ** 2
    return codes, torch.sigmoid((0.12 - d2) * 40).unsqueeze(1)  # [N, 1, R, R]


def test_generator_learns_to_render_codes():
    gen = torch.Generator().manual_seed(0)
    codes, images = _blobs(32, 16, gen)
    g = Generator(
        2,
        16,
        1,
        w_dim=32,
        mapping_layers=2,
        channel_base=256,
        channel_max=32,
        mapping_lr_multiplier=0.1,
    )
    opt = torch.optim.Adam(g.parameters(), lr=3e-3, betas=(0.0, 0.99))
    start = reconstruction_l1(g(codes, noise_mode="const"), images).item()
    for _ in range(150):
        opt.zero_grad()
        reconstruction_l1(g(codes, noise_mode="const"), images).backward()
        opt.step()
    end = reconstruction_l1(g(codes, noise_mode="const"), images).item()
    assert end < 0.35 * start, (start, end)


def test_discriminator_separates_two_image_sets():
    gen = torch.Generator().manual_seed(1)
    _, real = _blobs(32, 16, gen)
    fake = torch.rand(32, 1, 16, 16, generator=gen)
    d = Discriminator(16, 1, channel_base=256, channel_max=32)
    opt = torch.optim.Adam(d.parameters(), lr=2e-3, betas=(0.0, 0.99))
    for _ in range(40):
        opt.zero_grad()
        d_logistic(d(real), d(fake)).backward()
        opt.step()
    with torch.no_grad():
        assert (d(real) > 0).float().mean() > 0.9
        assert (d(fake) < 0).float().mean() > 0.9


def test_encoder_and_head_distil_a_linear_teacher():
    gen = torch.Generator().manual_seed(2)
    feats = torch.randn(256, 16, 3, 3, generator=gen)
    teacher = feats.mean(dim=(2, 3)) @ torch.randn(16, 4, generator=gen) * 3  # [N, 4] logits
    enc, head = ConceptEncoder((16, 3, 3), 6, hidden=32), SurrogateHead(6, 4, hidden=32)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=3e-3)
    for _ in range(200):
        opt.zero_grad()
        distillation_kl(teacher, head(enc(feats)[0]), 2.0).backward()
        opt.step()
    with torch.no_grad():
        agree = (head(enc(feats)[0]).argmax(1) == teacher.argmax(1)).float().mean()
    assert agree > 0.9
