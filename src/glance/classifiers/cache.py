"""Cache a classifier's features and logits of a dataset on disk, memory-mapped.

Surrogate training reads ``h(x)`` for every image many times; computing it once and reading it
back through ``np.memmap`` makes the first training stage take seconds. A cache is a directory::

    PATH/features.npy   float32 (N, C, h, w)
    PATH/logits.npy     float32 (N, K)
    PATH/labels.npy     int64 (N,)
    PATH/cache.json     layer, shapes, dataset source, classifier description (+ the caller's
                        ``meta``, e.g. what a fit needs to recognise its own cache)
    PATH/MANIFEST.json  sha256 of each file (written last; the directory appears atomically)

The arrays are written batch by batch with plain file writes, and :class:`FeatureRows` reads
rows back with positional reads: the bytes pass through the kernel's page cache, never through a
mapping of the file, so a cache much larger than memory is written and read with the process's
resident memory bounded by one batch. (Every page of a memory map that the process touched
counts in its resident set until the kernel reclaims it: reading all of a 1 GiB map here left
268 MiB resident, and a fit reads its features many times over.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from tqdm.auto import tqdm

from glance._io import atomic_directory, atomic_write_json, verify_manifest
from glance.classifiers.adapter import ClassifierAdapter
from glance.exceptions import CheckpointCorruptError, ConfigError
from glance.threads import torch_threads

__all__ = ["FeatureCache", "FeatureRows", "cache_features", "load_feature_cache"]


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

    def rows(self) -> FeatureRows:
        """A reader of :attr:`features` by rows that does not map the file (close it after)."""
        f = self.features
        return FeatureRows(f.filename, offset=f.offset, shape=f.shape, dtype=f.dtype)


class FeatureRows:
    """Rows of a cache's ``features.npy`` as float32 tensors, read with positional reads.

    Indexing takes what a tensor takes for its first dimension (an int, a slice with step 1,
    an integer array or tensor) and returns a new tensor; an index array is read in file order
    and the rows put back in the order asked. Nothing is mapped, so reading every row (e.g.
    encoding all training images) leaves the process's resident memory at one batch. The file
    stays open until :meth:`close` (also on ``with``); a pickled reader reopens it.

    Parameters
    ----------
    path
        The ``.npy`` file.
    offset
        Bytes before the first row (the ``.npy`` header).
    shape
        ``(n_samples, *row_shape)``.
    dtype
        Element type stored (rows are returned as float32).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        offset: int,
        shape: tuple[int, ...],
        dtype: Any = np.float32,
    ) -> None:
        self.path = Path(path)
        self.offset = int(offset)
        self.shape = tuple(int(k) for k in shape)
        self.dtype = np.dtype(dtype)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._fd: int | None = os.open(self.path, os.O_RDONLY)
        end = self.offset + self.shape[0] * self.row_bytes
        size = os.fstat(self._fd).st_size
        if size != end:
            self.close()
            raise CheckpointCorruptError(
                f"{self.path}: {size} bytes; {self.shape} {self.dtype} rows after a "
                f"{self.offset}-byte header need {end}"
            )

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> torch.Tensor:
        n = self.shape[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step != 1:
                return self[np.arange(start, stop, step)]
            out = np.empty((max(stop - start, 0), *self.shape[1:]), self.dtype)
            self._read(out, start)
        elif isinstance(key, (int, np.integer)):
            if not -n <= key < n:
                raise IndexError(f"row {key} out of range for {n} rows of {self.path}")
            out = np.empty(self.shape[1:], self.dtype)
            self._read(out, int(key) % n)
        else:
            idx = np.asarray(key.cpu() if isinstance(key, torch.Tensor) else key)
            if idx.dtype.kind not in "iu" or idx.ndim > 1:
                raise IndexError(
                    f"rows of {self.path} are indexed by an integer, a slice or a 1-D integer "
                    f"array; got an array of {idx.dtype} with shape {idx.shape}"
                )
            if idx.ndim == 0:
                return self[int(idx)]
            idx = idx.astype(np.int64)
            if idx.size and (idx.min() < -n or idx.max() >= n):
                raise IndexError(f"row index out of range for {n} rows of {self.path}")
            idx = idx % max(n, 1)
            out = np.empty((idx.size, *self.shape[1:]), self.dtype)
            for i in np.argsort(idx, kind="stable"):  # ascending file offsets
                self._read(out[i], int(idx[i]))
        return torch.from_numpy(out).float()

    def _read(self, out: np.ndarray, row: int) -> None:
        """Fill the C-contiguous ``out`` with the bytes from ``row`` on."""
        if self._fd is None:
            raise ValueError(f"read from a closed FeatureRows of {self.path}")
        if out.nbytes == 0:
            return
        view = memoryview(out).cast("B")
        pos, done = self.offset + row * self.row_bytes, 0
        while done < len(view):
            got = os.preadv(self._fd, [view[done:]], pos + done)
            if got == 0:
                raise CheckpointCorruptError(f"{self.path}: file ends before row {row}")
            done += got

    def close(self) -> None:
        """Close the file (idempotent)."""
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> FeatureRows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "_fd"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self._fd = os.open(self.path, os.O_RDONLY)


def cache_features(
    adapter: ClassifierAdapter,
    dataset: Any,
    path: str | os.PathLike[str],
    batch_size: int = 500,
    *,
    quiet: bool = True,
    num_threads: int | None = None,
    device: str | torch.device | None = None,
    meta: Mapping[str, Any] | None = None,
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
    device
        Where the classifier runs (default: where the images are loaded, the CPU); the images
        are moved there batch by batch.
    meta
        Extra JSON entries for ``cache.json`` (returned in :attr:`FeatureCache.meta`).

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
        **dict(meta or {}),
    }
    with atomic_directory(path) as tmp:
        with (
            _npy_writer(tmp / "features.npy", (n, *adapter.feature_shape)) as feats,
            _npy_writer(tmp / "logits.npy", (n, adapter.n_classes)) as logits,
            torch_threads(num_threads),
            torch.no_grad(),
            tqdm(total=n, desc="caching features", unit="img", disable=quiet, leave=False) as bar,
        ):
            for start in range(0, n, batch_size):
                images = dataset.load_images(np.arange(start, min(start + batch_size, n)))
                if device is not None:
                    images = images.to(device)
                out, f = adapter.forward_features(images)
                feats.write(np.ascontiguousarray(f.float().cpu().numpy()).data)  # in order
                logits.write(np.ascontiguousarray(out.float().cpu().numpy()).data)
                bar.update(len(images))
        np.save(tmp / "labels.npy", np.asarray(dataset.labels, dtype=np.int64))
        atomic_write_json(tmp / "cache.json", meta)
    return load_feature_cache(path)


@contextlib.contextmanager
def _npy_writer(path: Path, shape: tuple[int, ...]) -> Iterator[BinaryIO]:
    """A ``.npy`` file of float32 ``shape`` whose rows the caller appends in order; on a clean
    exit the size is checked and the file fsync'ed."""
    dtype = np.dtype(np.float32)
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh,
            {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape},
        )
        end = fh.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        yield fh
        fh.flush()
        if fh.tell() != end:
            raise RuntimeError(f"{path}: wrote {fh.tell()} bytes, expected {end}")
        os.fsync(fh.fileno())


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
