"""Cache a classifier's features and logits of a dataset on disk, memory-mapped.

Surrogate training reads ``h(x)`` for every image many times; computing it once and reading it
back through ``np.memmap`` makes the first training stage take seconds. A cache is a directory::

    PATH/features.npy   float32 (N, C, h, w)
    PATH/logits.npy     float32 (N, K)
    PATH/labels.npy     int64 (N,)
    PATH/cache.json     layer, shapes, dataset source, classifier description
    PATH/MANIFEST.json  sha256 of each file (written last; the directory appears atomically)
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from glance._io import atomic_directory, atomic_write_json, verify_manifest
from glance.classifiers.adapter import ClassifierAdapter
from glance.exceptions import CheckpointCorruptError, ConfigError
from glance.threads import torch_threads

__all__ = ["FeatureCache", "cache_features", "load_feature_cache"]


@dataclasses.dataclass(frozen=True)
class FeatureCache:
    """Memory-mapped features of a dataset.

    Attributes
    ----------
    features : numpy.memmap of shape (n_samples, C, h, w)
    logits : numpy.memmap of shape (n_samples, n_classes)
    labels : numpy.ndarray of shape (n_samples,)
    meta : dict
        ``layer``, ``feature_shape``, ``n_classes``, ``n_samples``, ``source``, ...
    path : pathlib.Path
    """

    features: np.ndarray
    logits: np.ndarray
    labels: np.ndarray
    meta: dict[str, Any]
    path: Path

    def __len__(self) -> int:
        return int(self.features.shape[0])


def cache_features(
    adapter: ClassifierAdapter,
    dataset: Any,
    path: str | os.PathLike[str],
    batch_size: int = 500,
    *,
    quiet: bool = True,
    num_threads: int | None = None,
) -> FeatureCache:
    """Compute the features and logits of every image of ``dataset`` into ``path``.

    Parameters
    ----------
    adapter
        The classifier adapter (its layer decides the features).
    dataset
        An :class:`~glance.data.ImageDataset` whose images fit the adapter.
    path
        Cache directory; replaced atomically if it exists.
    batch_size
        Images per forward pass.
    quiet
        No progress bar.
    num_threads
        Torch threads while computing (default: torch's current setting).

    Returns
    -------
    FeatureCache
        Read-only memory-mapped arrays.
    """
    if not isinstance(adapter, ClassifierAdapter):
        raise ConfigError(f"cache_features needs a ClassifierAdapter; got {type(adapter).__name__}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(
            f"the 'batch_size' parameter of cache_features must be an integer >= 1; "
            f"got {batch_size!r}"
        )
    adapter.check_dataset(dataset, n_labels=0)  # geometry only: the labels may be another task
    n = len(dataset)
    meta = {
        "layer": adapter.layer_name,
        "feature_shape": list(adapter.feature_shape),
        "n_classes": adapter.n_classes,
        "n_samples": n,
        "input_shape": [adapter.in_channels, *adapter.input_size],
        "source": str(getattr(dataset, "source", "")),
        "model": type(adapter.model).__name__,
        "dtype": "float32",
    }
    with atomic_directory(path) as tmp:
        feats = np.lib.format.open_memmap(
            tmp / "features.npy", mode="w+", dtype=np.float32, shape=(n, *adapter.feature_shape)
        )
        logits = np.lib.format.open_memmap(
            tmp / "logits.npy", mode="w+", dtype=np.float32, shape=(n, adapter.n_classes)
        )
        with (
            torch_threads(num_threads),
            torch.no_grad(),
            tqdm(total=n, desc="caching features", unit="img", disable=quiet, leave=False) as bar,
        ):
            for start in range(0, n, batch_size):
                idx = np.arange(start, min(start + batch_size, n))
                out, f = adapter.forward_features(dataset.load_images(idx))
                feats[idx[0] : idx[-1] + 1] = f.cpu().numpy()
                logits[idx[0] : idx[-1] + 1] = out.cpu().numpy()
                bar.update(len(idx))
        for arr in (feats, logits):
            arr.flush()
        del feats, logits  # close the maps before the directory is renamed
        np.save(tmp / "labels.npy", np.asarray(dataset.labels, dtype=np.int64))
        atomic_write_json(tmp / "cache.json", meta)
    return load_feature_cache(path)


def load_feature_cache(path: str | os.PathLike[str], *, check_hashes: bool = False) -> FeatureCache:
    """Open a cache written by :func:`cache_features` (arrays memory-mapped, read-only).

    Raises
    ------
    CheckpointCorruptError
        Missing or inconsistent files (e.g. a cache whose writing was interrupted).
    """
    path = Path(path)
    verify_manifest(path, check_hashes=check_hashes)
    try:
        meta = json.loads((path / "cache.json").read_text(encoding="utf-8"))
        feats = np.load(path / "features.npy", mmap_mode="r")
        logits = np.load(path / "logits.npy", mmap_mode="r")
        labels = np.load(path / "labels.npy")
    except (OSError, ValueError) as exc:
        raise CheckpointCorruptError(f"{path}: unreadable feature cache ({exc})") from None
    n = int(meta.get("n_samples", -1))
    if (
        feats.shape != (n, *meta.get("feature_shape", []))
        or logits.shape != (n, meta.get("n_classes"))
        or labels.shape != (n,)
    ):
        raise CheckpointCorruptError(
            f"{path}: arrays {feats.shape}, {logits.shape}, {labels.shape} do not match "
            f"cache.json (n_samples={n}, feature_shape={meta.get('feature_shape')})"
        )
    return FeatureCache(features=feats, logits=logits, labels=labels, meta=meta, path=path)
