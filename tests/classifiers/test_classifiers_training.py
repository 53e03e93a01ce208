"""Targets, training (held-out split, early stopping, determinism), evaluation, feature cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glance.classifiers import (
    ClassifierAdapter,
    apply_target,
    cache_features,
    evaluate_classifier,
    load_feature_cache,
    resolve_target,
    train_classifier,
)
from glance.data import ArrayDataset
from glance.exceptions import (
    CheckpointCorruptError,
    ConfigError,
    DataValidationError,
    IncompatibleClassifierError,
)


def toy_dataset(n: int = 240, seed: int = 0, size: int = 16) -> ArrayDataset:
    """Label = side of a bright bar (left/right); 'width' (continuous) and 'kind' (0/1/2)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    width = rng.uniform(1, 5, n)
    images = rng.integers(0, 40, (n, size, size)).astype(np.uint8)
    for i in range(n):
        w = int(round(width[i]))
        col = 2 if labels[i] == 0 else size - 2 - w
        images[i, 3:-3, col : col + w] = 230
    kind = rng.integers(0, 3, n).astype(float)
    kind[:5] = np.nan  # missing values are unknown targets, not a class
    return ArrayDataset(
        images,
        labels=labels,
        attributes=np.stack([width, kind], 1),
        attribute_names=["width", "kind"],
        classes=["left", "right"],
        source=f"toy{seed}",
    )


def test_targets_label_column_and_median():
    ds = toy_dataset()
    y, classes, spec = resolve_target(ds, "label")
    assert classes == ["left", "right"] and np.array_equal(y, ds.labels)
    y, classes, spec = resolve_target(ds, "kind")
    assert classes == ["kind=0", "kind=1", "kind=2"] and (y[:5] == -1).all()
    assert set(y[5:]) == {0, 1, 2}
    y, classes, spec = resolve_target(ds, "width:median")
    thr = np.median(ds.attribute("width"))
    assert spec["threshold"] == pytest.approx(thr)
    np.testing.assert_array_equal(y, (ds.attribute("width") > thr).astype(int))
    # other data is labelled with the *training* threshold, not its own median
    other = toy_dataset(seed=1)
    np.testing.assert_array_equal(
        apply_target(other, spec), (other.attribute("width") > thr).astype(int)
    )


@pytest.mark.parametrize(
    ("target", "error", "match"),
    [
        ("width", DataValidationError, "continuous.*width:median"),
        ("colour", DataValidationError, "no attribute column 'colour'.*width, kind"),
        ("width:mean", ConfigError, "COLUMN:median"),
        ("", ConfigError, "target must be"),
    ],
)
def test_bad_targets_are_explained(target, error, match):
    with pytest.raises(error, match=match):
        resolve_target(toy_dataset(), target)


def test_single_class_target_is_refused():
    ds = toy_dataset()
    ds.labels[:] = 1
    with pytest.raises(DataValidationError, match="at least 2 classes"):
        resolve_target(ds, "label")


def test_training_learns_reports_and_is_deterministic():
    ds = toy_dataset()
    state = torch.get_rng_state()
    a = train_classifier(ds, "small-cnn", epochs=3, lr=1e-2, seed=3, quiet=True)
    assert torch.equal(state, torch.get_rng_state())  # the caller's global RNG is untouched
    b = train_classifier(ds, "small-cnn", epochs=3, lr=1e-2, seed=3, quiet=True)
    for (k, va), vb in zip(a.net.state_dict().items(), b.net.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, msg=k)
    meta = a.meta
    assert meta["accuracy"] >= 0.9
    assert meta["training"]["n_val"] == 24 and meta["training"]["n_train"] == 216
    assert 1 <= meta["training"]["epochs_run"] <= 3 and len(meta["history"]) >= 1
    assert not a.training and a.classes == ["left", "right"] and a.input_size == (16, 16)
    test = evaluate_classifier(a, toy_dataset(seed=5))
    assert (
        test["accuracy"] >= 0.9
        and test["n"] == 240
        and set(test["per_class"])
        == {
            "left",
            "right",
        }
    )


def test_median_target_with_separate_validation_data():
    ds = toy_dataset(n=300)
    model = train_classifier(
        ds,
        "small-cnn",
        "width:median",
        epochs=4,
        lr=1e-2,
        val_dataset=toy_dataset(seed=7),
        quiet=True,
    )
    assert model.meta["target"]["kind"] == "median" and model.meta["training"]["n_val"] == 240
    result = evaluate_classifier(model, toy_dataset(seed=8))
    assert result["target"]["threshold"] == model.meta["target"]["threshold"]
    assert result["accuracy"] > 0.7  # bar width is visible, but near the median it is ambiguous


def test_early_stopping_stops_when_held_out_accuracy_stalls():
    model = train_classifier(toy_dataset(), "small-cnn", epochs=6, lr=1e-9, patience=1, quiet=True)
    assert model.meta["training"]["epochs_run"] == 2


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": -1}, "batch_size"),
        ({"lr": 5.0}, "lr"),
        ({"val_fraction": 0.95}, "val_fraction"),
        ({"patience": 0}, "patience"),
    ],
)
def test_bad_training_parameters_are_named(kwargs, name):
    with pytest.raises(ConfigError, match=f"'{name}' parameter of train_classifier"):
        train_classifier(toy_dataset(n=20), **kwargs)


def test_evaluate_rejects_images_of_another_shape():
    model = train_classifier(toy_dataset(n=40), epochs=1, quiet=True)
    with pytest.raises(IncompatibleClassifierError, match=r"\(1, 20, 20\).*\(1, 16, 16\)"):
        evaluate_classifier(model, toy_dataset(n=10, size=20))


def test_feature_cache_matches_adapter_and_is_memory_mapped(tmp_path):
    ds = toy_dataset(n=70)
    model = train_classifier(ds, epochs=1, quiet=True)
    adapter = ClassifierAdapter(model)
    cache = cache_features(adapter, ds, tmp_path / "cache", batch_size=32)
    assert isinstance(cache.features, np.memmap) and len(cache) == 70
    assert cache.features.shape == (70, *adapter.feature_shape)
    logits, feats = adapter.forward_features(ds.load_images(np.arange(40, 50)))
    np.testing.assert_allclose(cache.features[40:50], feats.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(cache.logits[40:50], logits.detach().numpy(), atol=1e-5)
    np.testing.assert_array_equal(cache.labels, ds.labels)
    again = load_feature_cache(tmp_path / "cache", check_hashes=True)
    assert again.meta["layer"] == adapter.layer_name == "net.features"
    (tmp_path / "cache" / "logits.npy").unlink()
    with pytest.raises(CheckpointCorruptError, match="logits.npy"):
        load_feature_cache(tmp_path / "cache")


class _FailingDataset(ArrayDataset):
    def load_images(self, indices=None):
        if indices is not None and int(np.min(indices)) >= 32:
            raise OSError("disk went away")
        return super().load_images(indices)


def test_feature_cache_interrupted_leaves_nothing_behind(tmp_path):
    ds = toy_dataset(n=70)
    adapter = ClassifierAdapter(train_classifier(ds, epochs=1, quiet=True))
    bad = _FailingDataset(ds.images, labels=ds.labels)
    with pytest.raises(OSError, match="disk went away"):
        cache_features(adapter, bad, tmp_path / "cache", batch_size=32)
    assert list(tmp_path.iterdir()) == []


def test_feature_cache_rejects_wrong_geometry(tmp_path):
    adapter = ClassifierAdapter(train_classifier(toy_dataset(n=40), epochs=1, quiet=True))
    with pytest.raises(IncompatibleClassifierError, match=r"\(1, 20, 20\)"):
        cache_features(adapter, toy_dataset(n=10, size=20), tmp_path / "c")


def test_shift_augmentation_moves_whole_pixels_within_the_limit():
    from glance.classifiers.training import _shift

    x = torch.zeros(64, 1, 16, 16)
    x[:, 0, 8, 8] = 1.0
    out = _shift(x, 2, torch.Generator().manual_seed(0))
    assert torch.equal(out.sum(dim=(1, 2, 3)), torch.ones(64))  # exact copies, no blur
    rows, cols = (out[:, 0] == 1).nonzero()[:, 1], (out[:, 0] == 1).nonzero()[:, 2]
    assert (rows - 8).abs().max() <= 2 and (cols - 8).abs().max() <= 2
    assert len({(int(r), int(c)) for r, c in zip(rows, cols, strict=True)}) > 10  # varied shifts
