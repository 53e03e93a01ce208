"""Checks run before any structure search: causal-learn fails deep inside a CI test (singular
correlation matrix, ``math domain error``; causal-learn issues #155, #29) on data that can be
recognised up front, so we recognise it and name the columns."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from glance.causal.graph import NODE_KINDS, infer_kind
from glance.exceptions import DiscoveryError

__all__ = ["check_discovery_data", "resolve_names_kinds", "drop_degenerate"]


def _error(message: str, columns: Sequence[str]) -> DiscoveryError:
    """A DiscoveryError that also carries the offending column names (``exc.columns``)."""
    exc = DiscoveryError(message)
    exc.columns = list(columns)  # type: ignore[attr-defined]
    return exc


# A column whose variance left after regressing it on the others is below this fraction of its
# own variance is treated as collinear (Fisher-z partial correlations become +-1 or singular).
COLLINEAR_TOL = 1e-8


def resolve_names_kinds(
    n_columns: int, names: Sequence[str] | None, kinds: Sequence[str] | None
) -> tuple[list[str], list[str]]:
    """Default and validate node names (``x0..``) and kinds (from the naming convention)."""
    names = [f"x{i}" for i in range(n_columns)] if names is None else [str(n) for n in names]
    if len(names) != n_columns:
        raise DiscoveryError(f"'names' has {len(names)} entries; data has {n_columns} columns")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DiscoveryError(f"'names' must be unique; repeated: {dup}")
    kinds = [infer_kind(n) for n in names] if kinds is None else [str(k) for k in kinds]
    if len(kinds) != n_columns:
        raise DiscoveryError(f"'kinds' has {len(kinds)} entries; data has {n_columns} columns")
    bad = [(n, k) for n, k in zip(names, kinds, strict=True) if k not in NODE_KINDS]
    if bad:
        raise DiscoveryError(f"'kinds' must be one of {list(NODE_KINDS)}; got {bad}")
    return names, kinds


def check_discovery_data(data: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Return ``data`` as a float64 (n_samples, n_columns) array or raise :class:`DiscoveryError`.

    Detects: wrong shape, non-finite values, too few samples, constant columns, duplicated
    columns and (near-)collinear sets of columns, naming them in the message.
    """
    try:
        x = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DiscoveryError(f"'data' must be a numeric array; {exc}") from None
    if x.ndim != 2:
        raise DiscoveryError(f"'data' must have shape (n_samples, n_columns); got {x.shape}")
    n, p = x.shape
    if p < 2:
        raise DiscoveryError(f"'data' needs at least 2 columns; got {p}")
    bad = ~np.isfinite(x)
    if bad.any():
        cols = [f"{names[j]!r} ({int(bad[:, j].sum())} rows)" for j in np.flatnonzero(bad.any(0))]
        raise _error(
            f"'data' has NaN or infinite values in column(s) {', '.join(cols)}; "
            "drop or impute those rows first",
            [names[j] for j in np.flatnonzero(bad.any(0))],
        )
    if n < p + 2:
        raise DiscoveryError(
            f"'data' has {n} samples for {p} columns; conditional-independence tests need at "
            f"least n_columns + 2 = {p + 2} samples"
        )
    std = x.std(axis=0)
    scale = np.maximum(np.abs(x).max(axis=0), 1e-300)
    const = std <= 1e-12 * scale
    if const.any():
        cols = [names[j] for j in np.flatnonzero(const)]
        raise _error(f"column(s) {cols} are constant (variance 0); drop them", cols)
    z = (x - x.mean(0)) / std
    corr = (z.T @ z) / n
    _check_duplicates(corr, names)
    _check_collinear(z, corr, names)
    return x


def _check_duplicates(corr: np.ndarray, names: Sequence[str]) -> None:
    p = corr.shape[0]
    iu = np.triu_indices(p, 1)
    dup = np.abs(corr[iu]) >= 1 - COLLINEAR_TOL
    if dup.any():
        pairs = [
            f"{names[i]!r} {'=' if corr[i, j] > 0 else '= -'} (affine) {names[j]!r}"
            for i, j in zip(iu[0][dup], iu[1][dup], strict=True)
        ]
        cols = sorted({names[k] for k in (*iu[0][dup], *iu[1][dup])}, key=list(names).index)
        raise _error(
            f"duplicated columns: {', '.join(pairs)} (correlation +-1); drop or merge them", cols
        )


def _check_collinear(z: np.ndarray, corr: np.ndarray, names: Sequence[str]) -> None:
    evals, evecs = np.linalg.eigh(corr)
    if evals[0] >= COLLINEAR_TOL:
        return
    v = evecs[:, 0]
    involved = np.flatnonzero(np.abs(v) > 1e-3 * np.abs(v).max())
    # Express the column with the largest loading through the others, in standardised units.
    k = involved[np.argmax(np.abs(v[involved]))]
    others = [j for j in involved if j != k]
    terms = " + ".join(f"{-v[j] / v[k]:.3g}*{names[j]}" for j in others)
    raise _error(
        f"columns {[names[j] for j in involved]} are collinear (standardised {names[k]} ~= "
        f"{terms}; smallest correlation eigenvalue {evals[0]:.2e}); drop or merge one of them",
        [names[j] for j in involved],
    )


def drop_degenerate(
    x: np.ndarray, names: Sequence[str], kinds: Sequence[str], droppable: str = "concept"
) -> tuple[np.ndarray, list[str], list[str], list[dict[str, str]]]:
    """Drop ``droppable``-kind columns until :func:`check_discovery_data` passes.

    Each round drops the last droppable column the check names (a collapsed free concept,
    one of two copies). Returns the kept data, names and kinds and ``[{"node", "reason"}]``;
    raises the check's :class:`DiscoveryError` when a non-droppable column is at fault.
    """
    names, kinds, dropped = list(names), list(kinds), []
    while True:
        try:
            return check_discovery_data(x, names), names, kinds, dropped
        except DiscoveryError as exc:
            culprits = [
                c for c in getattr(exc, "columns", []) if kinds[names.index(c)] == droppable
            ]
            if not culprits:
                raise
            j = names.index(culprits[-1])
            dropped.append({"node": names[j], "reason": str(exc)})
            x = np.delete(x, j, axis=1)
            del names[j], kinds[j]
