"""The classifier's features of every training image, computed once per fit (issue 12).

A fit reads ``h(x)`` of its training images many times: every encoder step, every generator
step, and all of them to fit the concept mixture. Up to :data:`FEATURE_MEMORY_BUDGET` bytes they
are held in memory as one tensor. Above it they go to a feature cache
(:func:`glance.classifiers.cache_features`) in the fit's working area, written batch by batch
while the classifier runs, and are read back by rows (:class:`~glance.classifiers.FeatureRows`),
so the fit's memory does not grow with the number of images: 50,000 images at 128 px through
small-cnn are 96 x 32 x 32 floats each, 18.3 GiB.

A cache left by an interrupted fit is reused when the fit resumes only once it is verified: its
manifest, file sizes and shapes, what it was computed from (data fingerprint, classifier weights,
layer) and a few rows recomputed with the classifier. Anything else rebuilds it.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import torch

from glance.classifiers.cache import (
    FeatureCache,
    FeatureRows,
    cache_features,
    load_feature_cache,
)
from glance.exceptions import CheckpointCorruptError, CheckpointIncompatibleError

__all__ = [
    "FEATURE_MEMORY_BUDGET",
    "Features",
    "classifier_outputs",
    "close_features",
    "discard_feature_cache",
    "feature_batch",
    "feature_stats",
    "features_nbytes",
]

logger = logging.getLogger(__name__)

#: Bytes of float32 training features a fit holds in memory; above this it caches them on disk
#: in its working area (``RUN/checkpoints/features/``, or a temporary directory without a run)
#: and reads them back batch by batch. 1 GiB: small data keep today's in-memory path (no disk
#: I/O at all), while a fit of 50,000 128-px images (18.3 GiB of small-cnn features) stays
#: within a 2 GB peak resident memory.
FEATURE_MEMORY_BUDGET = 1 << 30

#: Images per classifier forward pass while the features are computed, at most; fewer for
#: images over 64 x 64 px (:func:`feature_batch`).
FEATURE_BATCH = 256

#: Pixels (images x H x W) per classifier forward pass: a CNN's activations grow with them (a
#: batch of 256 128-px images through small-cnn takes ~1 GB), so large images go in smaller
#: batches; up to 64 x 64 px the batch stays FEATURE_BATCH.
FEATURE_BATCH_PIXELS = FEATURE_BATCH * 64 * 64

_STATS_BATCH = 64  # rows per float64 update of the statistics (~50 MB at 96 x 32 x 32)
_SPOT_ROWS = 5  # rows of a reused cache recomputed to check it

#: The training features of a fit: a tensor in memory or rows read from a cache; both index
#: like a tensor's first dimension and return tensors.
Features: TypeAlias = torch.Tensor | FeatureRows


def features_nbytes(adapter: Any, n_images: int) -> int:
    """Bytes of float32 features of ``n_images`` images at the adapter's layer."""
    return 4 * int(n_images) * int(np.prod(adapter.feature_shape, dtype=np.int64))


@torch.no_grad()
def classifier_outputs(
    adapter: Any,
    dataset: Any,
    device: torch.device,
    *,
    cache_dir: Path,
    identity: Mapping[str, Any],
    quiet: bool = True,
    batch: int | None = None,
) -> tuple[torch.Tensor, Features]:
    """Logits (N, K) and features (N, C, h, w) of every image of ``dataset``, computed once.

    Parameters
    ----------
    adapter : ClassifierAdapter
    dataset : ImageDataset
    device
        Where the classifier runs; the results are on the CPU.
    cache_dir
        Where the features are cached when they exceed :data:`FEATURE_MEMORY_BUDGET`. The
        caller owns it exclusively (the run's lock, or a private temporary directory) and
        removes it when the fit is done.
    identity
        What the features are computed from (data fingerprint, classifier hash, layer), JSON;
        a cache found at ``cache_dir`` is reused only if it records the same.
    quiet
        No progress bar.
    batch
        Images per forward pass (default: :func:`feature_batch`).

    Returns
    -------
    logits : Tensor of shape (N, K)
    features : Tensor or FeatureRows of shape (N, C, h, w)
        A :class:`~glance.classifiers.FeatureRows` (to be closed by the caller) above the
        budget.
    """
    batch = feature_batch(dataset.image_shape) if batch is None else batch
    if features_nbytes(adapter, len(dataset)) <= FEATURE_MEMORY_BUDGET:
        return _in_memory(adapter, dataset, device, quiet, batch)
    want = json.loads(json.dumps(dict(identity)))  # as cache.json holds it
    cache = _verified_cache(cache_dir, adapter, dataset, device, want)
    if cache is None:
        _remove_leftovers(cache_dir)
        logger.info(
            "caching the classifier features of %d images (%.1f GiB > %.1f GiB) in %s",
            len(dataset),
            features_nbytes(adapter, len(dataset)) / 2**30,
            FEATURE_MEMORY_BUDGET / 2**30,
            cache_dir,
        )
        cache = cache_features(
            adapter, dataset, cache_dir, batch, quiet=quiet, device=device, meta={"fit": want}
        )
    return torch.from_numpy(np.array(cache.logits)), cache.rows()


def feature_batch(image_shape: tuple[int, ...]) -> int:
    """Images per classifier forward pass for images of ``image_shape`` (C, H, W)."""
    pixels = int(image_shape[-1]) * int(image_shape[-2])
    return max(1, min(FEATURE_BATCH, FEATURE_BATCH_PIXELS // pixels))


def close_features(features: Features) -> None:
    """Close the file of cached features (nothing for features in memory); idempotent."""
    if isinstance(features, FeatureRows):
        features.close()


def discard_feature_cache(features: Features, cache_dir: Path) -> None:
    """Close a finished fit's cached features and delete the cache (also a stale one left at
    ``cache_dir`` by an earlier attempt whose features were cached, when these are not)."""
    close_features(features)
    shutil.rmtree(cache_dir, ignore_errors=True)


def _in_memory(
    adapter: Any, dataset: Any, device: torch.device, quiet: bool, batch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    from tqdm.auto import tqdm

    n = len(dataset)
    logits = torch.empty(n, adapter.n_classes)
    feats = torch.empty(n, *adapter.feature_shape)  # filled in place: no second copy to concat
    for start in tqdm(range(0, n, batch), desc="classifier features", disable=quiet, leave=False):
        stop = min(start + batch, n)
        lo, fe = adapter.forward_features(dataset.load_images(np.arange(start, stop)).to(device))
        logits[start:stop] = lo.float().cpu()
        feats[start:stop] = fe.float().cpu()
    return logits, feats


def _verified_cache(
    path: Path, adapter: Any, dataset: Any, device: torch.device, want: dict[str, Any]
) -> FeatureCache | None:
    """The cache at ``path`` if it checks out against the classifier and data now, else None
    (a mismatching cache is removed, with a warning naming why)."""
    if not path.exists():
        return None
    try:
        cache = load_feature_cache(path)  # manifest, files present, shapes as cache.json says
        problem = _mismatch(cache, adapter, dataset, device, want)
    except (CheckpointCorruptError, CheckpointIncompatibleError) as exc:
        problem = str(exc).removeprefix(f"{path}: ")
    if problem is None:
        logger.info("reusing the feature cache %s (verified)", path)
        return cache
    logger.warning("rebuilding the feature cache %s: %s", path, problem)
    shutil.rmtree(path)  # before the rebuild, so that the disk never holds two
    return None


def _mismatch(
    cache: FeatureCache, adapter: Any, dataset: Any, device: torch.device, want: dict[str, Any]
) -> str | None:
    """Why ``cache`` cannot stand for the features of ``dataset`` now (None: it can)."""
    have = cache.meta.get("fit") or {}
    diff = sorted(k for k in {*want, *have} if want.get(k) != have.get(k))
    if diff:
        return f"computed from another {', '.join(diff)}"
    n, shape = len(dataset), tuple(adapter.feature_shape)
    if cache.features.shape != (n, *shape) or cache.logits.shape != (n, adapter.n_classes):
        return (
            f"arrays {cache.features.shape} and {cache.logits.shape}; the fit needs "
            f"{(n, *shape)} and {(n, adapter.n_classes)}"
        )
    logits = cache.logits
    size = Path(logits.filename).stat().st_size
    if size != logits.offset + logits.nbytes:
        return f"{logits.filename} has {size} bytes, not {logits.offset + logits.nbytes}"
    rows = np.unique(np.linspace(0, n - 1, _SPOT_ROWS).round().astype(np.int64))
    with cache.rows() as reader:  # raises CheckpointCorruptError on a wrong file size
        stored = reader[rows]
    lo, fe = adapter.forward_features(dataset.load_images(rows).to(device))
    for name, now, then in (
        ("features", fe, stored),
        ("logits", lo, torch.from_numpy(np.array(logits[rows]))),
    ):
        now = now.float().cpu()
        scale = 1.0 + float(then.abs().max()) if then.numel() else 1.0
        if not torch.allclose(now, then, rtol=1e-4, atol=1e-5 * scale):
            return f"the {name} of rows {rows.tolist()} differ from the classifier's now"
    return None


def _remove_leftovers(path: Path) -> None:
    """Remove what a killed build of the cache at ``path`` left (its temporary siblings)."""
    for left in [*path.parent.glob(f"{path.name}.tmp-*"), *path.parent.glob(f"{path.name}.old-*")]:
        logger.warning("removing %s left by an interrupted feature cache build", left)
        shutil.rmtree(left, ignore_errors=True)


def feature_stats(
    features: Features, batch: int = _STATS_BATCH
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (unbiased) std of ``features`` of shape (N, C, ...).

    Computed batch by batch in float64 (Chan et al.'s pairwise update of count, mean and sum
    of squared deviations), so neither a reshaped copy of all the features nor a float32
    running sum over millions of values is ever needed.

    Returns
    -------
    mean, std : Tensor of shape (C,), float64
    """
    c = features.shape[1]
    count = 0
    mean = torch.zeros(c, dtype=torch.float64)
    m2 = torch.zeros(c, dtype=torch.float64)
    for start in range(0, len(features), batch):
        x = features[start : start + batch].to(torch.float64)  # [B, C, h, w]
        dims = (0, *range(2, x.ndim))
        k = x.numel() // c
        mean_b = x.mean(dim=dims)
        m2_b = (x - mean_b.view(1, c, *[1] * (x.ndim - 2))).square_().sum(dim=dims)
        delta, total = mean_b - mean, count + k
        mean = mean + delta * (k / total)
        m2 = m2 + m2_b + delta.square() * (count * k / total)
        count = total
    return mean, (m2 / max(count - 1, 1)).sqrt()
