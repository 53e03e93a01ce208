"""Architecture neutrality: torchvision CNNs and a custom Sequential go through the adapter."""

from __future__ import annotations

import pytest
import torch
import torchvision
from clf_testutils import model_snapshot
from torch import nn

from glance.classifiers import ClassifierAdapter

# (constructor, input size, explicit layer, expected automatic layer)
ARCHS = {
    "resnet18": (
        lambda: torchvision.models.resnet18(weights=None, num_classes=4),
        64,
        "layer3.1",
        "layer4",
    ),
    "vgg11": (
        lambda: torchvision.models.vgg11(weights=None, num_classes=4),
        32,
        "features.10",
        "features.18",
    ),
    "densenet121": (
        lambda: torchvision.models.densenet121(weights=None, num_classes=4),
        32,
        "features.denseblock3",
        "features.transition3.conv",
    ),
    "mobilenet_v3_small": (
        lambda: torchvision.models.mobilenet_v3_small(weights=None, num_classes=4),
        64,
        "features.8",
        "features",
    ),
    "efficientnet_b0": (
        lambda: torchvision.models.efficientnet_b0(weights=None, num_classes=4),
        64,
        "features.6",
        "features",
    ),
    "sequential": (
        lambda: nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, 4),
        ),
        32,
        "0",
        "3",
    ),
}


@pytest.mark.parametrize("name", list(ARCHS))
def test_architecture_goes_through_adapter(name):
    make, size, explicit, expected_auto = ARCHS[name]
    model = make()
    model.train()  # the adapter must use eval mode and give the train flag back
    before = model_snapshot(model)

    auto = ClassifierAdapter(model, in_channels=3, input_size=size)
    assert auto.layer_name == expected_auto
    c, h, w = auto.feature_shape
    assert h * w > 1 and auto.n_classes == 4

    x = torch.rand(2, 3, size, size, requires_grad=True)
    logits, feats = auto.forward_features(x)
    assert logits.shape == (2, 4) and feats.shape == (2, c, h, w)
    (logits.sum() + feats.mean()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0

    manual = ClassifierAdapter(model, layer=explicit, in_channels=3, input_size=size)
    feats2 = manual.features(x.detach())
    assert feats2.ndim == 4 and feats2.shape[1:] == manual.feature_shape
    torch.testing.assert_close(manual.logits(x.detach()), logits.detach())

    assert model_snapshot(model) == before
    assert all(p.grad is None for p in model.parameters())
