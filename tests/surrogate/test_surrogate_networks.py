"""Shapes, gradients, determinism and FLOP counts of E, S, G and D."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from glance.exceptions import ShapeError
from glance.surrogate import (
    ConceptEncoder,
    Discriminator,
    EqualizedConv2d,
    Generator,
    MappingNetwork,
    SurrogateHead,
    SynthesisNetwork,
    fit_to_resolution,
    minibatch_stddev,
)

SMALL = dict(w_dim=32, mapping_layers=2, channel_base=256, channel_max=16)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("resolution", [28, 32, 64])
def test_generator_shapes_and_range(channels, resolution):
    g = Generator(6, resolution, channels, **SMALL)
    for mode in ("random", "const", "none"):
        x = g(torch.randn(3, 6) * 3, noise_mode=mode)
        assert x.shape == (3, channels, resolution, resolution)
        assert x.dtype == torch.float32
        assert torch.all((x >= 0) & (x <= 1))


@pytest.mark.parametrize("resolution", [8, 16, 48, 100])
def test_generator_other_resolutions(resolution):
    g = Generator(4, resolution, 3, **SMALL)
    assert g(torch.randn(2, 4)).shape == (2, 3, resolution, resolution)


def test_fit_to_resolution_crop_and_resize():
    x = torch.arange(32.0).reshape(1, 1, 1, 32).expand(1, 1, 32, 32)
    crop = fit_to_resolution(x, 28)  # 32 -> 28 is within 1/8: centre crop
    assert torch.equal(crop[0, 0, 0], torch.arange(2.0, 30.0))
    resized = fit_to_resolution(x, 20)  # too far for a crop: antialiased resize
    assert resized.shape == (1, 1, 20, 20)
    assert resized[0, 0, 0, 0] < 2 and resized[0, 0, 0, -1] > 29


def test_gradients_flow_from_images_to_z_and_every_parameter():
    g = Generator(5, 28, 1, **SMALL)
    z = torch.randn(4, 5, requires_grad=True)
    g(z).square().mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    for name, p in g.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    # noise strengths start at 0 but still receive gradient in "random" mode
    assert g.synthesis.blocks[-1].conv1.noise_strength.grad.abs() > 0


def test_generator_determinism_with_torch_generator():
    g = Generator(5, 32, 3, **SMALL)
    z = torch.randn(4, 5)
    with torch.no_grad():
        g.synthesis.blocks[-1].conv1.noise_strength.fill_(1.0)  # make noise visible
        a = g(z, generator=torch.Generator().manual_seed(7))
        b = g(z, generator=torch.Generator().manual_seed(7))
        c = g(z, generator=torch.Generator().manual_seed(8))
        d1, d2 = g(z, noise_mode="const"), g(z, noise_mode="const")
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(d1, d2)


def test_generator_construction_is_seeded_by_global_rng_only():
    torch.manual_seed(3)
    g1 = Generator(5, 28, 1, **SMALL)
    torch.manual_seed(3)
    g2 = Generator(5, 28, 1, **SMALL)
    for (n1, p1), (_, p2) in zip(g1.state_dict().items(), g2.state_dict().items(), strict=True):
        assert torch.equal(p1, p2), n1


def test_batch_results_equal_per_sample_results():
    g = Generator(5, 28, 1, **SMALL)
    z = torch.randn(4, 5)
    with torch.no_grad():
        batch = g(z, noise_mode="const")
        single = torch.cat([g(z[i : i + 1], noise_mode="const") for i in range(4)])
    torch.testing.assert_close(batch, single, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("resolution,channels", [(28, 1), (64, 3)])
def test_flops_per_image_matches_torch_flop_counter(resolution, channels):
    g = Generator(
        7, resolution, channels, w_dim=48, mapping_layers=3, channel_base=512, channel_max=24
    )
    with FlopCounterMode(display=False) as counter:
        g(torch.randn(2, 7), noise_mode="const")
    assert g.flops_per_image() * 2 == counter.get_total_flops()


def test_generator_rejects_bad_z_and_noise_mode():
    g = Generator(5, 28, 1, **SMALL)
    with pytest.raises(ShapeError, match="z"):
        g(torch.randn(2, 4))
    with pytest.raises(ValueError, match="noise_mode"):
        g(torch.randn(2, 5), noise_mode="loud")
    with pytest.raises(ShapeError, match="img_resolution"):
        Generator(5, 2, 1, **SMALL)


def test_mapping_does_not_normalise_z_by_default():
    m = MappingNetwork(4, 16, 2)
    z = torch.randn(3, 4)
    assert not torch.allclose(m(z), m(2 * z))  # magnitude of concepts matters
    mn = MappingNetwork(4, 16, 2, normalize_z=True)
    torch.testing.assert_close(mn(z), mn(2 * z))


def test_synthesis_num_ws_and_check():
    s = SynthesisNetwork(16, 32, 3, channel_base=128, channel_max=8)
    assert len(s.blocks) == 4  # 4, 8, 16, 32
    assert s.num_ws == 2 + 3 * 3
    with pytest.raises(ShapeError, match="ws"):
        s(torch.randn(2, s.num_ws + 1, 16))
    with pytest.raises(ShapeError, match="ws"):
        s(torch.randn(2, 15))


@pytest.mark.parametrize("resolution,channels", [(28, 1), (32, 3), (64, 3)])
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_discriminator_shapes(resolution, channels, batch):
    d = Discriminator(resolution, channels, channel_base=256, channel_max=16, mbstd_group=4)
    x = torch.rand(batch, channels, resolution, resolution, requires_grad=True)
    out = d(x)
    assert out.shape == (batch,)
    out.sum().backward()
    assert x.grad.abs().sum() > 0


def test_discriminator_rejects_wrong_images():
    d = Discriminator(28, 1, channel_base=256, channel_max=16)
    with pytest.raises(ShapeError, match="images"):
        d(torch.rand(2, 3, 28, 28))
    with pytest.raises(ShapeError, match="images"):
        d(torch.rand(2, 1, 32, 32))


@pytest.mark.parametrize("kernel", [1, 3])
@pytest.mark.parametrize("size", [8, 9, 64])
def test_downsampling_conv_is_conv_then_average_pool(kernel, size):
    """The stride-2 pooled kernel is the same function as conv then a 2x2 average pool (values
    and gradients, padding included, odd sizes floored like the pool)."""
    torch.manual_seed(0)
    conv = EqualizedConv2d(4, 5, kernel, activation="lrelu", down=2)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(3, 4, size, size, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    w_ref = conv.weight.detach().clone().requires_grad_()
    ref = F.conv2d(x_ref, w_ref * conv.weight_gain, conv.bias.detach(), padding=kernel // 2)
    ref = F.leaky_relu(F.avg_pool2d(ref, 2), 0.2) * 2**0.5
    out = conv(x)
    assert out.shape == ref.shape == (3, 5, size // 2, size // 2)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out)
    gx, gw = torch.autograd.grad(out, (x, conv.weight), grad)
    gx_ref, gw_ref = torch.autograd.grad(ref, (x_ref, w_ref), grad)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gw, gw_ref, rtol=1e-4, atol=1e-4)


def test_discriminator_is_the_same_for_either_layout():
    """Convolving channels-last (the default) or in the input's layout gives the same logits,
    from NCHW and NHWC images alike."""
    torch.manual_seed(0)
    nhwc = Discriminator(32, 3, channel_base=256, channel_max=16)
    nchw = Discriminator(32, 3, channel_base=256, channel_max=16, channels_last=False)
    nchw.load_state_dict(nhwc.state_dict())
    x = torch.rand(4, 3, 32, 32)
    ref = nchw(x)
    for net in (nhwc, nchw):
        for images in (x, x.contiguous(memory_format=torch.channels_last)):
            torch.testing.assert_close(net(images), ref, rtol=1e-5, atol=1e-6)


def test_minibatch_stddev_values():
    x = torch.zeros(4, 2, 3, 3)
    x[1] = 2.0  # group of 4: values 0, 2, 0, 0 -> std sqrt(0.75)
    y = minibatch_stddev(x, group_size=4)
    assert y.shape == (4, 3, 3, 3)
    torch.testing.assert_close(y[:, 2], torch.full((4, 3, 3), 0.75**0.5), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(
        minibatch_stddev(x[:1], 4)[:, 2], torch.zeros(1, 3, 3), atol=1e-3, rtol=0
    )


@pytest.mark.parametrize("shape", [(16, 1, 1), (64, 7, 7), (512, 4, 4), (2048, 16, 16), (32, 3, 5)])
def test_encoder_handles_feature_shapes(shape):
    enc = ConceptEncoder(shape, z_dim=10, hidden=32)
    feats = torch.randn(2, *shape) * 20 + 5
    mu, logvar = enc(feats)
    assert mu.shape == logvar.shape == (2, 10)
    assert torch.isfinite(mu).all() and torch.isfinite(logvar).all()
    assert logvar.abs().max() < enc.logvar_range


def test_encoder_feature_stats_standardise_inputs():
    enc = ConceptEncoder((8, 2, 2), z_dim=3, hidden=16)
    feats = torch.randn(5, 8, 2, 2)
    mean, std = torch.full((8,), 3.0), torch.full((8,), 10.0)
    out_ref = enc(feats)[0]
    enc.set_feature_stats(mean, std)
    torch.testing.assert_close(enc(feats * 10 + 3)[0], out_ref, rtol=1e-4, atol=1e-5)
    assert "feature_mean" in enc.state_dict()  # saved with the weights
    with pytest.raises(ShapeError):
        enc.set_feature_stats(torch.zeros(7), torch.ones(7))


def test_encoder_rejects_wrong_features_and_samples_differentiably():
    enc = ConceptEncoder((16, 4, 4), z_dim=3)
    with pytest.raises(ShapeError, match="features"):
        enc(torch.randn(2, 16, 5, 5))
    with pytest.raises(ShapeError, match="feature_shape"):
        ConceptEncoder((16, 4), z_dim=3)
    mu = torch.zeros(1000, 3, requires_grad=True)
    logvar = torch.full((1000, 3), 2 * torch.log(torch.tensor(2.0)).item(), requires_grad=True)
    z = ConceptEncoder.sample(mu, logvar, torch.Generator().manual_seed(0))
    assert 1.8 < z.std().item() < 2.2
    z.sum().backward()
    assert mu.grad is not None and logvar.grad is not None


def test_surrogate_head():
    head = SurrogateHead(6, 10, hidden=32)
    assert head(torch.randn(4, 6)).shape == (4, 10)
    with pytest.raises(ShapeError, match="z"):
        head(torch.randn(4, 5))
    linear = SurrogateHead(6, 3, n_layers=0)
    assert len(linear.net) == 1


def test_shared_w_fast_path_equals_per_layer_styles():
    s = SynthesisNetwork(16, 28, 1, channel_base=128, channel_max=8)
    w = torch.randn(3, 16)
    with torch.no_grad():
        shared = s(w, noise_mode="const")
        per_layer = s(w.unsqueeze(1).repeat(1, s.num_ws, 1), noise_mode="const")
    torch.testing.assert_close(shared, per_layer, rtol=1e-5, atol=1e-6)


def test_style_mixing_changes_only_what_it_should():
    s = SynthesisNetwork(16, 32, 3, channel_base=128, channel_max=8)
    w1, w2 = torch.randn(2, 16), torch.randn(2, 16)
    ws = w1.unsqueeze(1).repeat(1, s.num_ws, 1)
    ws[:, -1] = w2  # last ToRGB only
    with torch.no_grad():
        a, b = s(w1, noise_mode="const"), s(ws, noise_mode="const")
    assert not torch.allclose(a, b)


def test_channels_last_layout_gives_the_same_images():
    torch.manual_seed(0)
    g1 = Generator(5, 32, 3, channels_last=True, **SMALL)
    torch.manual_seed(0)
    g2 = Generator(5, 32, 3, channels_last=False, **SMALL)
    z = torch.randn(4, 5)
    with torch.no_grad():
        a, b = g1(z, noise_mode="const"), g2(z, noise_mode="const")
    assert a.is_contiguous() and b.is_contiguous()
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_grouped_and_scaled_generators_agree():
    torch.manual_seed(0)
    g1 = Generator(5, 28, 1, modconv_impl="grouped", channels_last=False, **SMALL)
    torch.manual_seed(0)
    g2 = Generator(5, 28, 1, modconv_impl="scaled", **SMALL)
    z = torch.randn(3, 5)
    with torch.no_grad():
        torch.testing.assert_close(
            g1(z, noise_mode="const"), g2(z, noise_mode="const"), rtol=1e-4, atol=1e-5
        )


def test_styled_input_gives_each_image_its_own_starting_layout():
    torch.manual_seed(0)
    g = Generator(5, 28, 1, styled_input=True, use_noise=False, **SMALL)
    block = g.synthesis.blocks[0]
    assert block.input_proj is not None
    seen = []
    hook = block.conv1.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    g(torch.randn(2, 5))
    hook.remove()
    x = seen[0]
    assert not torch.allclose(x[0], x[1])  # the constant alone would be the same for both
    z = torch.randn(3, 5, requires_grad=True)
    g(z).square().mean().backward()
    assert block.input_proj.weight.grad.abs().sum() > 0


def test_styled_input_flops_are_counted():
    g = Generator(7, 28, 1, styled_input=True, **SMALL)
    with FlopCounterMode(display=False) as counter:
        g(torch.randn(2, 7), noise_mode="const")
    assert g.flops_per_image() * 2 == counter.get_total_flops()


def test_generator_without_noise_has_no_noise_parameters():
    g = Generator(5, 28, 1, use_noise=False, **SMALL)
    assert not any("noise" in name for name, _ in g.named_parameters())
    z = torch.randn(2, 5)
    torch.testing.assert_close(g(z, noise_mode="random"), g(z, noise_mode="const"))


def test_feature_decoder_target_is_the_standardised_pooled_features():
    from glance.surrogate import ConceptEncoder
    from glance.training.losses import feature_reconstruction

    enc = ConceptEncoder((3, 8, 8), z_dim=5, hidden=16, pool_size=4, feature_decoder=True)
    enc.set_feature_stats(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 1.0, 0.5]))
    f = torch.randn(4, 3, 8, 8)
    target = enc.feature_target(f)
    expected = torch.nn.functional.avg_pool2d(
        (f - torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1))
        / torch.tensor([2.0, 1.0, 0.5]).view(1, 3, 1, 1),
        2,
    ).flatten(1)
    torch.testing.assert_close(target, expected)
    assert not target.requires_grad
    decoded = enc.decode_features(torch.randn(4, 5))
    assert decoded.shape == target.shape == (4, 3 * 4 * 4)
    loss = feature_reconstruction(decoded, target)
    torch.testing.assert_close(loss, ((decoded - target) ** 2).mean())
    loss.backward()  # reaches the decoder, not the (fixed) target
    assert enc.feature_decoder[0].weight.grad is not None
    with pytest.raises(ValueError, match="feature_decoder=True"):
        ConceptEncoder((3, 8, 8), z_dim=5).decode_features(torch.zeros(1, 5))
