"""One entry point for every dataset layout glance reads: :func:`load_dataset`.

Layouts recognised, in this order:

- a Morpho-MNIST directory (``{split}-images-idx3-ubyte[.gz]``; splits ``train``, ``t10k``);
- a split folder: ``DIR/<split>/`` subfolders each holding one CSV (``factors.csv`` preferred)
  whose file names are relative to the subfolder, as written by ``glance data shapes``;
- a plain image folder with at most one CSV beside the images, or the CSV file itself, or a list
  file (``.txt``) of image paths;
- a single array file: ``.npz`` (``images`` uint8 (N, H, W) or (N, C, H, W), optional
  ``labels``) or an IDX images file (``*-idx3-ubyte[.gz]``, with its labels file if present).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from glance.data.base import ArrayDataset, ImageDataset
from glance.data.folder import ImageFolderDataset
from glance.data.idx import read_idx
from glance.data.mnist import MORPHO_SPLITS, list_morphomnist_splits, load_morphomnist
from glance.exceptions import DataValidationError

__all__ = ["load_dataset", "list_splits", "test_split", "load_array_file"]

#: Held-out split names, in order of preference.
_TEST_SPLITS = ("t10k", "test")
_SPLIT_ORDER = ("train", "val", "valid", "validation", "test", "test_reversed", "t10k")


def _split_csv(folder: Path) -> Path | None:
    """The CSV of a split folder: ``factors.csv`` if present, else the only ``*.csv``."""
    if (folder / "factors.csv").is_file():
        return folder / "factors.csv"
    csvs = sorted(folder.glob("*.csv"))
    if len(csvs) > 1:
        raise DataValidationError(
            f"{folder}: several CSV files ({', '.join(p.name for p in csvs)}); expected one "
            "(or a factors.csv)"
        )
    return csvs[0] if csvs else None


def _folder_splits(path: Path) -> list[str]:
    found = [p.name for p in path.iterdir() if p.is_dir() and _split_csv(p) is not None]
    rank = {s: k for k, s in enumerate(_SPLIT_ORDER)}
    return sorted(found, key=lambda s: (rank.get(s, len(rank)), s))


def list_splits(path: str | os.PathLike[str]) -> list[str]:
    """Split names of the dataset at ``path`` (training split first); ``[]`` if it has none.

    Raises
    ------
    DataValidationError
        ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise DataValidationError(f"{path}: no such dataset file or directory")
    if not path.is_dir():
        return []
    return list_morphomnist_splits(path) or _folder_splits(path)


def test_split(path: str | os.PathLike[str]) -> str | None:
    """The held-out split of the dataset at ``path`` (``t10k`` or ``test``), or None."""
    splits = list_splits(path)
    return next((s for s in _TEST_SPLITS if s in splits), None)


test_split.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite the name


def load_array_file(path: str | os.PathLike[str]) -> ArrayDataset:
    """Load an ``.npz`` (``images``, optional ``labels``) or an IDX images file as a dataset.

    Raises
    ------
    DataValidationError
        Missing ``images`` array, wrong dtype or shape, label count mismatch.
    """
    path = Path(path)
    labels = None
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                if "images" not in npz:
                    raise DataValidationError(
                        f"{path}: no array named 'images'; found {sorted(npz.files)}"
                    )
                images = npz["images"]
                labels = npz["labels"] if "labels" in npz else None
        except (ValueError, OSError, EOFError) as exc:
            raise DataValidationError(f"{path}: unreadable .npz ({exc})") from None
    else:
        images = read_idx(path)
        sibling = path.with_name(path.name.replace("-images-idx3-", "-labels-idx1-"))
        if sibling != path and sibling.is_file():
            labels = read_idx(sibling)
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise DataValidationError(
            f"{path}: expected uint8 images of shape (N, H, W) or (N, C, H, W); "
            f"got {images.dtype} of shape {images.shape}"
        )
    if labels is not None and (labels.ndim != 1 or len(labels) != len(images)):
        raise DataValidationError(
            f"{path}: {len(images)} images but labels of shape {labels.shape}"
        )
    return ArrayDataset(images, labels=labels, source=str(path))


def load_dataset(path: str | os.PathLike[str], split: str | None = None) -> ImageDataset:
    """Load the dataset at ``path`` in any layout glance reads (see the module docstring).

    Parameters
    ----------
    path
        Dataset directory or file.
    split
        Split to load; default the training split (``train``) where the dataset has splits.

    Returns
    -------
    ImageDataset
        An in-memory :class:`ArrayDataset` (Morpho-MNIST, arrays) or a streaming
        :class:`ImageFolderDataset`.

    Raises
    ------
    DataValidationError
        Unknown layout, unknown split (the available ones are listed), or any error of the
        underlying loader.
    """
    path = Path(path)
    dataset = _load(path, split)
    dataset.origin = (str(path.resolve()), split if split is not None else _default_split(path))
    return dataset


def _default_split(path: Path) -> str | None:
    splits = list_splits(path) if path.is_dir() else []
    return ("train" if "train" in splits else splits[0]) if splits else None


def _load(path: Path, split: str | None) -> ImageDataset:
    splits = list_splits(path)
    if path.is_file():
        if split is not None:
            raise DataValidationError(f"{path}: a single file has no splits; got split={split!r}")
        if path.suffix.lower() == ".csv":
            return ImageFolderDataset(path.parent, path)
        if path.suffix.lower() == ".txt":
            return ImageFolderDataset(path)
        return load_array_file(path)
    if splits:
        chosen = split or _default_split(path)
        if chosen not in splits:
            raise DataValidationError(f"{path}: no split {chosen!r}; available: {splits}")
        if list_morphomnist_splits(path):
            return load_morphomnist(path, chosen)
        return ImageFolderDataset(path / chosen, _split_csv(path / chosen))
    if split is not None:
        raise DataValidationError(
            f"{path}: no splits found (expected {'/'.join(MORPHO_SPLITS)} Morpho-MNIST files or "
            f"split subfolders with a CSV); got split={split!r}"
        )
    return ImageFolderDataset(path, _split_csv(path))
