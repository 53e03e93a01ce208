"""The dataset contract every glance component consumes.

An :class:`ImageDataset` yields ``(image, label, attributes)``: a float32 image of shape
``(C, H, W)`` in ``[0, 1]``, an int64 label (``-1`` when unknown) and a float32 vector of context
attributes (``NaN`` when missing, which makes the context weakly supervised).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from glance.exceptions import DataValidationError

#: A periodic context (an angle, a time of day) as a derived column ``sin(COLUMN/PERIOD)`` or
#: ``cos(COLUMN/PERIOD)``: the pair can be aligned and read out linearly where the raw value
#: cannot (359° is next to 0°). Give both as contexts, e.g. ``sin(rotation/360)`` and
#: ``cos(rotation/360)``.
PERIODIC = re.compile(r"^(sin|cos)\((.+)/([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\)$")


def periodic_column(name: str) -> tuple[str, str, float] | None:
    """``(function, column, period)`` of a derived periodic column name, else ``None``."""
    m = PERIODIC.match(name)
    if m is None or float(m.group(3)) <= 0:
        return None
    return m.group(1), m.group(2), float(m.group(3))


__all__ = ["ImageDataset", "ArrayDataset"]


def recorded(dataset: Any, name: str) -> np.ndarray | None:
    """The recorded values of context ``name`` in ``dataset`` (a column or a derived periodic
    one, see :meth:`ImageDataset.attribute`), or ``None`` when the data lacks it. Duck-typed
    datasets with ``attribute_names`` / ``attributes`` only are read by column."""
    has = getattr(dataset, "has_attribute", None)
    if has is not None:
        return np.asarray(dataset.attribute(name), dtype=np.float64) if has(name) else None
    names = list(getattr(dataset, "attribute_names", []) or [])
    attrs = getattr(dataset, "attributes", None)
    if attrs is None or name not in names:
        return None
    return np.asarray(attrs, dtype=np.float64)[:, names.index(name)]


class ImageDataset(Dataset):
    """Base class: images with optional labels and context attributes.

    Subclasses set ``labels`` (N,) int64, ``attributes`` (N, A) float64, ``attribute_names``,
    ``classes``, ``image_shape`` (C, H, W) and ``source``, and implement :meth:`_load_uint8`.
    ``origin`` is ``(absolute path, split)`` for a dataset read by
    :func:`glance.data.load_dataset` (a run records it to find its data again), else ``None``.
    """

    origin: tuple[str, str | None] | None = None
    labels: np.ndarray
    attributes: np.ndarray
    attribute_names: list[str]
    classes: list[str]
    image_shape: tuple[int, int, int]
    source: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def _load_uint8(self, indices: np.ndarray) -> np.ndarray:
        """Return images ``indices`` as uint8 of shape (n, C, H, W)."""
        raise NotImplementedError

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for dataset of {len(self)} images")
        i = int(i) % len(self)
        img = torch.from_numpy(self._load_uint8(np.array([i]))[0].astype(np.float32) / 255.0)
        label = torch.tensor(int(self.labels[i]), dtype=torch.int64)
        attrs = torch.from_numpy(self.attributes[i].astype(np.float32))
        return img, label, attrs

    def load_images(self, indices: Sequence[int] | np.ndarray | None = None) -> torch.Tensor:
        """Images ``indices`` (default: all) as a float32 tensor (n, C, H, W) in [0, 1]."""
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64)
        return torch.from_numpy(self._load_uint8(idx).astype(np.float32) / 255.0)

    def has_attribute(self, name: str) -> bool:
        """Whether :meth:`attribute` can give ``name`` (a column or a periodic derived one)."""
        derived = periodic_column(name)
        return name in self.attribute_names or (
            derived is not None and derived[1] in self.attribute_names
        )

    def attribute(self, name: str) -> np.ndarray:
        """The column ``name`` of :attr:`attributes` (NaN where missing), or a periodic derived
        column ``sin(COLUMN/PERIOD)`` / ``cos(COLUMN/PERIOD)`` (see :data:`PERIODIC`)."""
        if name in self.attribute_names:
            return self.attributes[:, self.attribute_names.index(name)]
        derived = periodic_column(name)
        if derived is not None and derived[1] in self.attribute_names:
            fn, column, period = derived
            raw = np.asarray(self.attributes[:, self.attribute_names.index(column)], np.float64)
            return (np.sin if fn == "sin" else np.cos)(2.0 * np.pi * raw / period)
        raise DataValidationError(
            f"{self.source}: no attribute column {name!r}; "
            f"available: {', '.join(self.attribute_names) or '(none)'} "
            "(a periodic one as sin(COLUMN/PERIOD) and cos(COLUMN/PERIOD))"
        )

    def subset(self, indices: Sequence[int] | np.ndarray) -> ArrayDataset:
        """An in-memory :class:`ArrayDataset` holding the images ``indices``."""
        idx = np.asarray(indices, dtype=np.int64)
        return ArrayDataset(
            self._load_uint8(idx),
            labels=self.labels[idx],
            attributes=self.attributes[idx],
            attribute_names=self.attribute_names,
            classes=self.classes,
            source=f"{self.source}[subset of {len(idx)}]",
        )


class ArrayDataset(ImageDataset):
    """An :class:`ImageDataset` over in-memory uint8 images.

    Parameters
    ----------
    images
        uint8 array of shape (N, H, W) (one channel) or (N, C, H, W).
    labels
        int array (N,), ``-1`` for unknown; default all unknown.
    attributes
        float array (N, A) with NaN for missing values; default no attributes.
    attribute_names
        A names, one per attribute column.
    classes
        Class names; default ``str(k)`` for ``k`` in ``0 .. max(label)``.
    """

    def __init__(
        self,
        images: np.ndarray,
        *,
        labels: np.ndarray | None = None,
        attributes: np.ndarray | None = None,
        attribute_names: Sequence[str] = (),
        classes: Sequence[str] | None = None,
        source: str = "<array>",
    ) -> None:
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise DataValidationError(f"{source}: images must be uint8; got dtype {images.dtype}")
        if images.ndim == 3:
            images = images[:, None]
        if images.ndim != 4:
            raise DataValidationError(
                f"{source}: images must have shape (N, H, W) or (N, C, H, W); got {images.shape}"
            )
        n = images.shape[0]
        labels = np.full(n, -1, np.int64) if labels is None else np.asarray(labels, np.int64)
        names = list(attribute_names)
        if attributes is None:
            attributes = np.zeros((n, len(names)), np.float64)
        attributes = np.asarray(attributes, np.float64).reshape(n, -1) if n else np.zeros((0, 0))
        if labels.shape != (n,):
            raise DataValidationError(f"{source}: {n} images but labels of shape {labels.shape}")
        if attributes.shape != (n, len(names)):
            raise DataValidationError(
                f"{source}: attributes of shape {attributes.shape}; expected ({n}, {len(names)})"
            )
        if np.isinf(attributes).any():
            row, col = np.argwhere(np.isinf(attributes))[0]
            raise DataValidationError(
                f"{source}: attribute {names[col]!r} is infinite at row {row}"
            )
        self.images = images
        self.labels = labels
        self.attributes = attributes
        self.attribute_names = names
        k = int(labels.max()) + 1 if n and labels.max() >= 0 else 0
        self.classes = list(classes) if classes is not None else [str(c) for c in range(k)]
        self.image_shape = tuple(int(s) for s in images.shape[1:])  # type: ignore[assignment]
        self.source = source

    def _load_uint8(self, indices: np.ndarray) -> np.ndarray:
        return self.images[indices]
