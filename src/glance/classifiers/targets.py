"""What a classifier is trained to predict: the label, an integer attribute, or a median split.

A target is written ``label``, ``COLUMN`` (classes are the column's integer values) or
``COLUMN:median`` (1 = above the training median, e.g. thick vs thin digits). The resolved spec is
a JSON-able dict saved with the classifier, so test data is labelled exactly as training data was
(the median threshold is the training one, never recomputed).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from glance.exceptions import ConfigError, DataValidationError

__all__ = ["parse_target", "resolve_target", "apply_target"]


def parse_target(target: str) -> dict[str, Any]:
    """Parse ``label`` / ``COLUMN`` / ``COLUMN:median`` into an (unresolved) spec."""
    if not isinstance(target, str) or not target.strip():
        raise ConfigError(f"target must be 'label', 'COLUMN' or 'COLUMN:median'; got {target!r}")
    target = target.strip()
    if target == "label":
        return {"kind": "label", "name": "label"}
    column, sep, mode = target.partition(":")
    if not sep:
        return {"kind": "column", "column": column, "name": target}
    if mode != "median" or not column:
        raise ConfigError(
            f"target {target!r}: the only supported split is 'COLUMN:median' "
            "(e.g. 'thickness:median')"
        )
    return {"kind": "median", "column": column, "name": target}


def _column(dataset: Any, column: str) -> np.ndarray:
    names = list(getattr(dataset, "attribute_names", []))
    if column not in names:
        raise DataValidationError(
            f"{getattr(dataset, 'source', 'dataset')}: no attribute column {column!r} for the "
            f"target; available: {', '.join(names) or '(none)'} (or use target 'label')"
        )
    return np.asarray(dataset.attributes[:, names.index(column)], dtype=np.float64)


def resolve_target(dataset: Any, target: str) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """Targets of ``dataset`` for training.

    Returns
    -------
    y : numpy.ndarray of shape (n_samples,)
        int64 class index, ``-1`` where unknown (missing label or attribute).
    classes : list of str
        Class names.
    spec : dict
        JSON-able description to pass to :func:`apply_target` on other data.
    """
    spec = parse_target(target)
    src = getattr(dataset, "source", "dataset")
    if spec["kind"] == "label":
        classes = [str(c) for c in dataset.classes]
        spec["classes"] = classes
    elif spec["kind"] == "column":
        v = _column(dataset, spec["column"])
        known = v[~np.isnan(v)]
        if known.size and not np.allclose(known, np.round(known)):
            raise DataValidationError(
                f"{src}: attribute {spec['column']!r} is continuous; a classification target "
                f"needs integer values. Use '{spec['column']}:median' to split it at its median."
            )
        values = sorted({int(x) for x in np.round(known)})
        spec["values"] = values
        classes = [f"{spec['column']}={x}" for x in values]
        spec["classes"] = classes
    else:
        v = _column(dataset, spec["column"])
        if np.isnan(v).all():
            raise DataValidationError(f"{src}: attribute {spec['column']!r} has no values")
        spec["threshold"] = float(np.nanmedian(v))
        classes = [
            f"{spec['column']}<={spec['threshold']:.4g}",
            f"{spec['column']}>{spec['threshold']:.4g}",
        ]
        spec["classes"] = classes
    y = apply_target(dataset, spec)
    found = np.unique(y[y >= 0])
    if found.size < 2:
        raise DataValidationError(
            f"{src}: target {target!r} has {found.size} distinct known value(s); a classifier "
            "needs at least 2 classes"
        )
    return y, classes, spec


def apply_target(dataset: Any, spec: dict[str, Any]) -> np.ndarray:
    """Class indices (``-1`` = unknown) of ``dataset`` under a resolved ``spec``."""
    kind = spec.get("kind")
    if kind == "label":
        y = np.asarray(dataset.labels, dtype=np.int64).copy()
        k = len(spec.get("classes") or dataset.classes)
        bad = (y >= k) | (y < -1)
        if bad.any():
            raise DataValidationError(
                f"{getattr(dataset, 'source', 'dataset')}: label {int(y[bad][0])} out of range "
                f"for a classifier with {k} classes"
            )
        return y
    v = _column(dataset, spec["column"])
    y = np.full(v.shape, -1, dtype=np.int64)
    known = ~np.isnan(v)
    if kind == "median":
        y[known] = (v[known] > float(spec["threshold"])).astype(np.int64)
        return y
    if kind == "column":
        index = {int(x): i for i, x in enumerate(spec["values"])}
        for row in np.flatnonzero(known):
            y[row] = index.get(int(round(v[row])), -1)  # unseen values count as unknown
        return y
    raise ConfigError(f"unknown target kind {kind!r} in classifier description")
