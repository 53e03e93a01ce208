"""ClassifierAdapter: features + logits in one pass, no side effects, clear errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from clf_testutils import SmallNet, model_snapshot
from torch import nn

from glance.classifiers import ClassifierAdapter, Normalize, RepeatChannels
from glance.data import ArrayDataset
from glance.exceptions import IncompatibleClassifierError, ShapeError


def test_auto_layer_is_last_spatial_conv_module_and_matches_manual_hook():
    net = SmallNet()
    adapter = ClassifierAdapter(net, input_size=16)
    assert adapter.layer_name == "features"
    assert adapter.feature_shape == (16, 8, 8)
    assert adapter.n_classes == 3 and adapter.in_channels == 1 and adapter.input_size == (16, 16)
    x = torch.rand(4, 1, 16, 16)
    logits, feats = adapter.forward_features(x)
    net.eval()
    with torch.no_grad():
        ref_feats = net.features(x)
        ref_logits = net(x)
    torch.testing.assert_close(feats, ref_feats)
    torch.testing.assert_close(logits, ref_logits)
    torch.testing.assert_close(adapter.logits(x), ref_logits)
    torch.testing.assert_close(adapter.features(x), ref_feats)


def test_explicit_layer_by_name_and_by_module():
    net = SmallNet()
    by_name = ClassifierAdapter(net, layer="features.2", input_size=16)
    by_module = ClassifierAdapter(net, layer=net.features[2], input_size=16)
    assert by_name.layer_name == by_module.layer_name == "features.2"
    assert by_name.feature_shape == (8, 16, 16)


def test_auto_layer_skips_maps_without_spatial_extent():
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),  # 8x8
        nn.Conv2d(4, 4, 8),  # 1x1: no spatial extent left
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    assert ClassifierAdapter(net, input_size=8).layer_name == "0"


def test_gradient_reaches_input_but_not_parameters():
    net = SmallNet()
    before = model_snapshot(net)
    adapter = ClassifierAdapter(net, input_size=16)
    x = torch.rand(3, 1, 16, 16, requires_grad=True)
    logits, feats = adapter.forward_features(x)
    (logits.sum() + feats.pow(2).mean()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())
    assert model_snapshot(net) == before


def test_model_left_exactly_as_it_was_with_mixed_modes_and_frozen_params():
    net = SmallNet()
    net.train()
    net.features[1].eval()  # a mixed-mode model: one BN already frozen by the user
    net.fc.weight.requires_grad_(False)
    x0 = torch.rand(8, 1, 16, 16)
    net(x0).sum().backward()  # the user's existing grads must survive untouched
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    before = model_snapshot(net)
    adapter = ClassifierAdapter(net, input_size=16)
    x = torch.rand(5, 1, 16, 16, requires_grad=True)
    adapter.logits(x).sum().backward()
    assert model_snapshot(net) == before
    for n, p in net.named_parameters():
        if n in grads:
            torch.testing.assert_close(p.grad, grads[n])
    # eval semantics during the call: BatchNorm running stats untouched, Dropout off
    a, b = adapter.logits(x), adapter.logits(x)
    torch.testing.assert_close(a, b)


class _Boom(RuntimeError):
    pass


def test_model_unchanged_after_an_exception_mid_forward():
    net = SmallNet()
    net.train()
    adapter = ClassifierAdapter(net, input_size=16)
    before = model_snapshot(net)

    def exploding_hook(_m, _i, _o):
        raise _Boom("injected")

    handle = net.fc.register_forward_hook(exploding_hook)
    try:
        with pytest.raises(_Boom):
            adapter.forward_features(torch.rand(2, 1, 16, 16, requires_grad=True))
    finally:
        handle.remove()
    assert model_snapshot(net) == before


def test_model_unchanged_after_constructor_error():
    net = SmallNet()
    net.train()
    before = model_snapshot(net)
    with pytest.raises(IncompatibleClassifierError):
        ClassifierAdapter(net, layer="fc", input_size=16)  # 2-D output: rejected
    assert model_snapshot(net) == before


def test_unknown_layer_name_lists_closest_names():
    with pytest.raises(IncompatibleClassifierError) as err:
        ClassifierAdapter(SmallNet(), layer="feature.4", input_size=16)
    msg = str(err.value)
    assert "'feature.4' does not exist" in msg and "features.4" in msg


def test_mlp_without_feature_map_is_rejected():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    with pytest.raises(IncompatibleClassifierError, match="no module with a 4-D"):
        ClassifierAdapter(mlp, in_channels=3, input_size=32)


def test_layer_with_non_spatial_output_is_rejected():
    with pytest.raises(IncompatibleClassifierError, match="not a 4-D"):
        ClassifierAdapter(SmallNet(), layer="fc", input_size=16)


def test_module_that_is_not_part_of_the_model_is_rejected():
    with pytest.raises(IncompatibleClassifierError, match="not a submodule"):
        ClassifierAdapter(SmallNet(), layer=nn.Conv2d(1, 1, 1), input_size=16)


def test_wrong_channel_count_fails_at_construction_with_hint():
    with pytest.raises(IncompatibleClassifierError) as err:
        ClassifierAdapter(SmallNet(in_channels=3), in_channels=1, input_size=16)
    msg = str(err.value)
    assert "(1, 1, 16, 16)" in msg and "expects 3 channels" in msg


def test_wrong_input_size_for_flattening_model_fails_at_construction():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 28 * 28, 2))
    assert ClassifierAdapter(net).input_size == (28, 28)  # probed
    with pytest.raises(IncompatibleClassifierError, match=r"\(1, 1, 32, 32\)"):
        ClassifierAdapter(net, input_size=32)


def test_repeat_channels_and_normalize_transforms():
    net = SmallNet(in_channels=3)
    tf = nn.Sequential(RepeatChannels(3), Normalize([0.5] * 3, [0.25] * 3))
    adapter = ClassifierAdapter(net, input_transform=tf, input_size=16)
    assert adapter.in_channels == 1  # probed through the transform
    x = torch.rand(2, 1, 16, 16, requires_grad=True)
    adapter.logits(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    net.eval()
    torch.testing.assert_close(adapter.logits(x), net((x.repeat(1, 3, 1, 1) - 0.5) / 0.25))


class _DictOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = SmallNet()

    def forward(self, x):
        y = self.net(x)
        return {"logits": y, "aux": y.detach() * 0}


class _TupleOut(_DictOut):
    def forward(self, x):
        return self.net(x), self.net.features(x)


def test_dict_and_tuple_outputs_need_an_output_key():
    with pytest.raises(IncompatibleClassifierError) as err:
        ClassifierAdapter(_DictOut(), input_size=16)
    assert "keys ['logits', 'aux']" in str(err.value) and "output_key" in str(err.value)
    with pytest.raises(IncompatibleClassifierError, match="tuple of 2"):
        ClassifierAdapter(_TupleOut(), input_size=16)
    assert ClassifierAdapter(_DictOut(), output_key="logits", input_size=16).n_classes == 3
    assert ClassifierAdapter(_TupleOut(), output_key=0, input_size=16).n_classes == 3
    assert ClassifierAdapter(_TupleOut(), output_key=lambda o: o[0], input_size=16).n_classes == 3
    with pytest.raises(IncompatibleClassifierError, match="does not select"):
        ClassifierAdapter(_DictOut(), output_key="scores", input_size=16)


def test_output_that_is_not_class_scores_is_rejected():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1))  # returns a feature map, not (N, K)
    with pytest.raises(IncompatibleClassifierError, match=r"class scores of shape \(N, K\)"):
        ClassifierAdapter(net, input_size=16)


def test_probability_outputs_and_nondeterminism_are_logged(caplog):
    class Noisy(SmallNet):
        def forward(self, x):
            return torch.softmax(super().forward(x) + torch.randn(x.shape[0], 3), dim=1)

    with caplog.at_level(logging.WARNING, logger="glance.classifiers.adapter"):
        ClassifierAdapter(Noisy(), input_size=16)
    text = caplog.text
    assert "probabilities" in text and "different outputs" in text and "drop" in text


def test_deterministic_model_gives_no_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="glance.classifiers.adapter"):
        ClassifierAdapter(SmallNet(), input_size=16)
    assert caplog.text == ""


def test_call_with_wrong_image_shape_raises_shape_error():
    adapter = ClassifierAdapter(SmallNet(), input_size=16)
    with pytest.raises(ShapeError, match=r"\(N, 1, 16, 16\); got \(2, 1, 20, 20\)"):
        adapter.logits(torch.rand(2, 1, 20, 20))
    with pytest.raises(ShapeError, match="float"):
        adapter.logits(torch.zeros(2, 1, 16, 16, dtype=torch.uint8))


def test_check_dataset_reports_channel_and_class_mismatch():
    adapter = ClassifierAdapter(SmallNet(in_channels=3), input_size=16)
    grey = ArrayDataset(np.zeros((4, 16, 16), np.uint8), labels=np.array([0, 1, 2, 0]))
    with pytest.raises(IncompatibleClassifierError, match="RepeatChannels"):
        adapter.check_dataset(grey)
    two_class = ArrayDataset(np.zeros((4, 3, 16, 16), np.uint8), labels=np.array([0, 1, 1, 0]))
    with pytest.raises(IncompatibleClassifierError, match="3 outputs.*2 classes"):
        adapter.check_dataset(two_class)
    adapter.check_dataset(ArrayDataset(np.zeros((3, 3, 16, 16), np.uint8), labels=[0, 1, 2]))


def test_invalid_parameters_are_named():
    with pytest.raises(IncompatibleClassifierError, match="nn.Module"):
        ClassifierAdapter(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(IncompatibleClassifierError, match="in_channels"):
        ClassifierAdapter(SmallNet(), in_channels=0)
    with pytest.raises(IncompatibleClassifierError, match="input_size"):
        ClassifierAdapter(SmallNet(), input_size="big")  # type: ignore[arg-type]
    with pytest.raises(IncompatibleClassifierError, match="layer must be"):
        ClassifierAdapter(SmallNet(), layer=3, input_size=16)  # type: ignore[arg-type]


def test_guessed_geometry_follows_the_dataset_but_stated_geometry_does_not():
    net = SmallNet(in_channels=3)
    guessed = ClassifierAdapter(net)  # no size stated: probed as 28 px
    assert guessed.input_size == (28, 28)
    rgb32 = ArrayDataset(np.zeros((3, 3, 32, 32), np.uint8), labels=[0, 1, 2])
    guessed.check_dataset(rgb32)
    assert guessed.input_size == (32, 32) and guessed.feature_shape == (16, 16, 16)
    stated = ClassifierAdapter(net, input_size=28)
    with pytest.raises(IncompatibleClassifierError, match=r"\(3, 32, 32\).*\(3, 28, 28\)"):
        stated.check_dataset(rgb32)
    flat = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 28 * 28, 3))
    fixed = ClassifierAdapter(flat)  # accepts 28 px only: a 32 px dataset is an error
    with pytest.raises(IncompatibleClassifierError, match=r"\(1, 32, 32\)"):
        fixed.check_dataset(ArrayDataset(np.zeros((3, 32, 32), np.uint8), labels=[0, 1, 2]))
    assert fixed.input_size == (28, 28)


def test_adapter_does_not_consume_the_global_rng():
    net = SmallNet()  # building the model draws from the global RNG; the adapter must not
    state = torch.get_rng_state()
    adapter = ClassifierAdapter(net)  # geometry probed, layer found, scores checked
    adapter.forward_features(torch.zeros(2, 1, 28, 28))
    assert torch.equal(state, torch.get_rng_state())


def test_normalize_rejects_non_positive_std():
    from glance.exceptions import ConfigError

    with pytest.raises(ConfigError, match="'std' parameter of Normalize"):
        Normalize([0.5], [0.0])


def test_concurrent_calls_restore_the_train_flags():
    import threading

    net = SmallNet()
    net.train()
    adapter = ClassifierAdapter(net, input_size=16)
    before = model_snapshot(net)
    errors = []

    def worker():
        try:
            for _ in range(20):
                adapter.logits(torch.rand(2, 1, 16, 16))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert model_snapshot(net) == before
