"""Train and evaluate reference classifiers (Adam, held-out split, early stopping)."""

from __future__ import annotations

import copy
import logging
import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from glance.classifiers.architectures import ReferenceClassifier, build_classifier
from glance.classifiers.targets import apply_target, resolve_target
from glance.exceptions import ConfigError, DataValidationError, IncompatibleClassifierError
from glance.threads import torch_threads

__all__ = ["train_classifier", "evaluate_classifier", "predict"]

logger = logging.getLogger(__name__)


def _images_uint8(dataset: Any, indices: np.ndarray, chunk: int = 4096) -> torch.Tensor:
    """Images ``indices`` as one uint8 tensor (4x smaller than float; converted per batch)."""
    parts = []
    for start in range(0, len(indices), chunk):
        imgs = dataset.load_images(indices[start : start + chunk])
        parts.append((imgs * 255.0).round_().to(torch.uint8))
    return torch.cat(parts) if parts else torch.zeros((0, *dataset.image_shape), dtype=torch.uint8)


def _channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    x = images[:4096].float().div_(255.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return mean.tolist(), std.tolist()


def _check_params(epochs: int, batch_size: int, lr: float, val_fraction: float, patience: int):
    checks = {
        "epochs": (epochs, isinstance(epochs, int) and epochs >= 1, "an integer >= 1"),
        "batch_size": (
            batch_size,
            isinstance(batch_size, int) and batch_size >= 1,
            "an integer >= 1",
        ),
        "lr": (lr, isinstance(lr, (int, float)) and 0 < lr < 1, "a number in (0, 1)"),
        "val_fraction": (val_fraction, 0 < val_fraction < 0.9, "a number in (0, 0.9)"),
        "patience": (patience, isinstance(patience, int) and patience >= 1, "an integer >= 1"),
    }
    for name, (value, ok, what) in checks.items():
        if not ok:
            raise ConfigError(
                f"the {name!r} parameter of train_classifier must be {what}; got {value!r}"
            )


def _split(y: np.ndarray, val_fraction: float, gen: np.random.Generator):
    """Stratified train/validation split of the rows with a known target."""
    train, val = [], []
    for c in np.unique(y[y >= 0]):
        rows = gen.permutation(np.flatnonzero(y == c))
        n_val = max(1, int(round(len(rows) * val_fraction))) if len(rows) > 1 else 0
        val.append(rows[:n_val])
        train.append(rows[n_val:])
    return gen.permutation(np.concatenate(train)), np.sort(np.concatenate(val))


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Class scores of uint8 or float ``images`` (N, C, H, W) in eval mode, mode restored."""
    was = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        out = []
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size]
            x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
            out.append(model(x))
        return torch.cat(out) if out else torch.zeros((0, 0))
    finally:
        for m, flag in was:
            m.training = flag


def _evaluate(model: nn.Module, images: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    logits = predict(model, images)
    loss = nn.functional.cross_entropy(logits, y).item()
    return loss, (logits.argmax(1) == y).float().mean().item()


def _shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by whole pixels in [-max_shift, max_shift], filling with zeros."""
    n, _, h, w = x.shape
    d = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=gen).float()
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = -2.0 * d[:, 0] / w  # whole-pixel offsets in normalised coordinates
    theta[:, 1, 2] = -2.0 * d[:, 1] / h
    grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return nn.functional.grid_sample(x, grid, mode="nearest", align_corners=False)


def _run_epoch(model, opt, sched, images, y, batch_size, gen, bar, max_shift=0) -> float:
    model.train()
    order = torch.randperm(len(y), generator=gen)
    total, seen = 0.0, 0
    for start in range(0, len(y), batch_size):
        idx = order[start : start + batch_size]
        if len(idx) < 2:
            continue  # BatchNorm cannot train on a single image
        x = images[idx].float().div_(255.0)
        if max_shift:
            x = _shift(x, max_shift, gen)
        loss = nn.functional.cross_entropy(model(x), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += loss.item() * len(idx)
        seen += len(idx)
        bar.update(len(idx))
        bar.set_postfix(loss=f"{total / seen:.3f}", refresh=False)
    if not math.isfinite(total):
        raise DataValidationError("training loss became non-finite; check the images/targets")
    return total / max(seen, 1)


def train_classifier(
    dataset: Any,
    arch: str = "small-cnn",
    target: str = "label",
    *,
    epochs: int = 6,
    batch_size: int = 128,
    lr: float = 3e-3,
    val_fraction: float = 0.1,
    patience: int = 2,
    seed: int = 0,
    val_dataset: Any = None,
    quiet: bool = False,
    num_threads: int | None = None,
    augment: bool = True,
) -> ReferenceClassifier:
    """Train a reference classifier on ``dataset``.

    Parameters
    ----------
    dataset
        An :class:`~glance.data.ImageDataset`.
    arch
        Registered architecture (``small-cnn``, ``resnet18``, ...).
    target
        ``label``, an integer attribute ``COLUMN`` or ``COLUMN:median``.
    epochs
        Maximum epochs (cosine learning-rate decay over them).
    batch_size, lr
        Adam mini-batch size and peak learning rate.
    val_fraction
        Held-out share of ``dataset`` (stratified) used for early stopping and the reported
        accuracy, unless ``val_dataset`` is given.
    patience
        Epochs without a better validation accuracy before stopping; the best weights are kept.
    seed
        Makes the split, initialisation and batch order reproducible (global RNG untouched).
    val_dataset
        Separate held-out data (labelled with the training target spec).
    quiet
        No progress bar.
    num_threads
        Torch threads during training (default: torch's current setting, all cores).
    augment
        Shift training images by up to 7 % of their side (whole pixels, zero fill); shapes,
        sizes and intensities are left as they are, so size/thickness targets stay valid.

    Returns
    -------
    ReferenceClassifier
        In eval mode; ``model.meta`` holds ``target`` (spec), ``accuracy`` (held-out),
        ``history`` and ``training`` details.
    """
    _check_params(epochs, batch_size, lr, val_fraction, patience)
    with torch_threads(num_threads):
        return _train(
            dataset,
            arch,
            target,
            epochs,
            batch_size,
            lr,
            val_fraction,
            patience,
            seed,
            val_dataset,
            quiet,
            augment,
        )


def _prepare(dataset, val_dataset, y_all, spec, val_fraction, seed):  # noqa: ANN001
    """Training and held-out images (uint8) and targets."""
    gen_np = np.random.default_rng(seed)
    if val_dataset is not None:
        if tuple(val_dataset.image_shape) != tuple(dataset.image_shape):
            raise IncompatibleClassifierError(
                f"{val_dataset.source}: images {tuple(val_dataset.image_shape)} differ from the "
                f"training images {tuple(dataset.image_shape)}"
            )
        train_idx = gen_np.permutation(np.flatnonzero(y_all >= 0))
        y_val_np = apply_target(val_dataset, spec)
        val_idx = np.flatnonzero(y_val_np >= 0)
        val = (_images_uint8(val_dataset, val_idx), torch.from_numpy(y_val_np[val_idx]))
    else:
        train_idx, val_idx = _split(y_all, val_fraction, gen_np)
        val = (_images_uint8(dataset, val_idx), torch.from_numpy(y_all[val_idx]))
    train = (_images_uint8(dataset, train_idx), torch.from_numpy(y_all[train_idx]))
    return train, val


def _fit(model, train, val, epochs, batch_size, lr, patience, seed, quiet, augment):  # noqa: ANN001
    """Adam + one-cycle schedule with early stopping; loads the best weights; returns history."""
    images, y_train = train
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * math.ceil(len(y_train) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.15
    )
    gen = torch.Generator().manual_seed(seed)
    max_shift = max(1, round(0.07 * min(images.shape[2:]))) if augment else 0
    history, best, best_acc, stale, t0 = [], None, -1.0, 0, time.perf_counter()
    for epoch in range(1, epochs + 1):
        desc = f"epoch {epoch}/{epochs}"
        with tqdm(total=len(y_train), desc=desc, disable=quiet, unit="img", leave=False) as bar:
            train_loss = _run_epoch(
                model, opt, sched, images, y_train, batch_size, gen, bar, max_shift
            )
        val_loss, val_acc = _evaluate(model, *val)
        history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "time_s": time.perf_counter() - t0,
            }
        )
        logger.info(
            "epoch %d: train loss %.4f, held-out loss %.4f, accuracy %.4f",
            epoch,
            train_loss,
            val_loss,
            val_acc,
        )
        if val_acc > best_acc:
            best, best_acc, stale = copy.deepcopy(model.net.state_dict()), val_acc, 0
        else:
            stale += 1
            if stale >= patience:
                logger.info("early stopping after epoch %d (best %.4f)", epoch, best_acc)
                break
    model.net.load_state_dict(best)
    return history, best_acc


def _train(  # noqa: ANN001
    dataset,
    arch,
    target,
    epochs,
    batch_size,
    lr,
    val_fraction,
    patience,
    seed,
    val_dataset,
    quiet,
    augment,
) -> ReferenceClassifier:
    if len(dataset) < 4:
        raise DataValidationError(f"{dataset.source}: too few images to train ({len(dataset)})")
    y_all, classes, spec = resolve_target(dataset, target)
    c, h, w = dataset.image_shape
    train, val = _prepare(dataset, val_dataset, y_all, spec, val_fraction, seed)
    mean, std = _channel_stats(train[0])
    logger.info(
        "training %s on %d images (%d held out), target %r, %d threads",
        arch,
        len(train[1]),
        len(val[1]),
        target,
        torch.get_num_threads(),
    )
    t0 = time.perf_counter()
    # Seeded initialisation and dropout without touching the caller's global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_classifier(arch, len(classes), c, (h, w))
        model = ReferenceClassifier(
            net, arch=arch, classes=classes, in_channels=c, input_size=(h, w), mean=mean, std=std
        )
        history, best_acc = _fit(
            model, train, val, epochs, batch_size, lr, patience, seed, quiet, augment
        )
    wall = time.perf_counter() - t0
    model.meta = {
        "target": spec,
        "accuracy": best_acc,
        "history": history,
        "training": {
            "seed": seed, "epochs_run": len(history), "max_epochs": epochs,
            "batch_size": batch_size, "lr": lr, "augment": augment, "n_train": int(len(train[1])),
            "n_val": int(len(val[1])), "wall_time_s": wall,
            "data": str(getattr(dataset, "source", "")),
        },
    }  # fmt: skip
    logger.info("held-out accuracy %.4f (%d images) after %.1f s", best_acc, len(val[1]), wall)
    return model.eval()


def evaluate_classifier(
    model: nn.Module, dataset: Any, target: Any = None, batch_size: int = 512
) -> dict[str, Any]:
    """Accuracy of ``model`` on ``dataset``.

    Parameters
    ----------
    model
        A classifier taking ``[0, 1]`` images; a :class:`ReferenceClassifier`'s saved target
        spec is used unless ``target`` (a spec dict or a target string) is given.
    dataset
        Labelled :class:`~glance.data.ImageDataset` with images of the model's input shape.

    Returns
    -------
    dict
        ``accuracy``, ``n`` (images with a known target), ``per_class`` accuracy, ``target``.
    """
    spec = target if isinstance(target, dict) else None
    if spec is None and isinstance(target, str):
        spec = resolve_target(dataset, target)[2]
    if spec is None:
        spec = getattr(model, "meta", {}).get("target") or {"kind": "label"}
    expected = (getattr(model, "in_channels", None), *getattr(model, "input_size", (None, None)))
    if None not in expected and tuple(dataset.image_shape) != expected:
        raise IncompatibleClassifierError(
            f"{dataset.source}: images of shape {tuple(dataset.image_shape)} but the classifier "
            f"takes {expected}"
        )
    y_np = apply_target(dataset, spec)
    idx = np.flatnonzero(y_np >= 0)
    if not idx.size:
        raise DataValidationError(f"{dataset.source}: no images with a known target")
    y = torch.from_numpy(y_np[idx])
    correct = torch.zeros(0, dtype=torch.bool)
    for start in range(0, len(idx), 4096):
        chunk = idx[start : start + 4096]
        logits = predict(model, dataset.load_images(chunk), batch_size)
        n_out = logits.shape[1]
        if int(y.max()) >= n_out:
            raise IncompatibleClassifierError(
                f"classifier has {n_out} outputs, {dataset.source} has labels up to {int(y.max())}"
            )
        correct = torch.cat([correct, logits.argmax(1) == y[start : start + len(chunk)]])
    classes = getattr(model, "classes", None) or [str(k) for k in range(int(y.max()) + 1)]
    per_class = {
        str(classes[k]) if k < len(classes) else str(k): float(correct[y == k].float().mean())
        for k in torch.unique(y).tolist()
    }
    return {
        "accuracy": float(correct.float().mean()),
        "n": int(len(idx)),
        "per_class": per_class,
        "target": spec,
    }
