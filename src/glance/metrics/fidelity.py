"""Fidelity and alignment metrics of the surrogate (DESIGN §2.5), over numpy or torch arrays."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from scipy import stats

from glance.exceptions import ShapeError

__all__ = ["top1_agreement", "alignment_r2", "alignment_slope", "spearman_alignment"]


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Float64 numpy copy of a numpy array, torch tensor or nested sequence."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ShapeError(f"{name} must be a numeric array; got {type(x).__name__}") from exc


def _as_2d(x: Any, name: str) -> np.ndarray:
    arr = _to_numpy(x, name)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ShapeError(f"{name} must have shape (N,) or (N, m); got {arr.shape}")
    return arr


def top1_agreement(logits_a: Any, logits_b: Any) -> float:
    """Fraction of samples whose arg-max class agrees between two sets of logits.

    Parameters
    ----------
    logits_a, logits_b : array of shape (N, K)
        E.g. the classifier's logits ``f(x)`` and the surrogate's ``S(E(h(x)))``. Class indices
        of shape (N,) are accepted too.

    Returns
    -------
    float
        In [0, 1]; NaN for an empty batch.
    """
    a, b = _to_numpy(logits_a, "logits_a"), _to_numpy(logits_b, "logits_b")
    pa = a.argmax(axis=1) if a.ndim == 2 else a
    pb = b.argmax(axis=1) if b.ndim == 2 else b
    if pa.shape != pb.shape or pa.ndim != 1:
        raise ShapeError(
            f"logits_a and logits_b must describe the same N samples; got {a.shape} and {b.shape}"
        )
    if pa.size == 0:
        return float("nan")
    return float(np.mean(pa == pb))


def alignment_r2(
    z_aligned: Any,
    contexts: Any,
    *,
    method: Literal["direct", "linear"] = "direct",
) -> np.ndarray:
    """R^2 of each aligned concept dim against its context, ignoring unknown (NaN) contexts.

    Parameters
    ----------
    z_aligned : array of shape (N, m)
        The aligned concept dims (posterior means).
    contexts : array of shape (N, m)
        The contexts in the units the dims are trained to match (standardised with the training
        mean and std); NaN where unknown.
    method : {"direct", "linear"}
        ``"direct"``: the dim is the prediction, ``R^2 = 1 - SS_res / SS_tot`` (can be negative;
        penalises offsets and wrong scales). ``"linear"``: R^2 of the best affine fit of the
        context on the dim (the squared Pearson correlation; scale-free).

    Returns
    -------
    ndarray of shape (m,)
        One value per context; NaN where fewer than 2 values are known or the context is constant.
    """
    if method not in ("direct", "linear"):
        raise ValueError(f"method must be 'direct' or 'linear'; got {method!r}")
    m, columns = _known_pairs(z_aligned, contexts)
    out = np.full(m, np.nan)
    for j, y, p in columns:
        if method == "direct":
            out[j] = 1.0 - np.sum((y - p) ** 2) / np.sum((y - y.mean()) ** 2)
        elif np.std(p) > 0:
            out[j] = np.corrcoef(p, y)[0, 1] ** 2
        else:
            out[j] = 0.0
    return out


def alignment_slope(z_aligned: Any, contexts: Any) -> np.ndarray:
    """Slope of each aligned concept dim regressed on its context, ignoring unknown contexts.

    ``cov(z_j, c_j) / var(c_j)``: how far apart, on average, the encoder places two images whose
    context differs by one unit. It is 1 for a dim that *is* its (standardised) context, about
    the squared correlation for a dim that predicts its context as well as it can without
    overfitting, and about 0 for a dim that cannot read its context (a shape's rotation, which
    its symmetry hides). The twin uses it as the size of a one-standard-deviation intervention
    on a context (:meth:`glance.explain.Twin.from_glance`), so that an intervention on a context
    moves the concept space as much as that change of the context moves it in the data.

    Parameters
    ----------
    z_aligned : array of shape (N, m)
        The aligned concept dims (posterior means).
    contexts : array of shape (N, m)
        The contexts in the units the dims are trained to match; NaN where unknown.

    Returns
    -------
    ndarray of shape (m,)
        One slope per context; NaN where fewer than 2 values are known or the context is
        constant.
    """
    m, columns = _known_pairs(z_aligned, contexts)
    out = np.full(m, np.nan)
    for j, y, p in columns:
        out[j] = np.mean((y - y.mean()) * (p - p.mean())) / np.mean((y - y.mean()) ** 2)
    return out


def _known_pairs(
    z_aligned: Any, contexts: Any
) -> tuple[int, list[tuple[int, np.ndarray, np.ndarray]]]:
    """``(m, [(j, context_j, dim_j)])`` over the rows where both are known, for every column
    with at least 2 such rows and a context that varies on them."""
    z, c = _as_2d(z_aligned, "z_aligned"), _as_2d(contexts, "contexts")
    if z.shape != c.shape:
        raise ShapeError(
            f"z_aligned and contexts must have the same shape; got {z.shape} and {c.shape}"
        )
    columns = []
    for j in range(z.shape[1]):
        ok = np.isfinite(c[:, j]) & np.isfinite(z[:, j])
        y, p = c[ok, j], z[ok, j]
        if y.size >= 2 and np.ptp(y) > 0:
            columns.append((j, y, p))
    return z.shape[1], columns


def spearman_alignment(aligned_values: Any, measured_values: Any) -> float | np.ndarray:
    """Spearman rank correlation between aligned dims and contexts measured on generated images.

    Pairs where either value is NaN are dropped.

    Parameters
    ----------
    aligned_values : array of shape (N,) or (N, m)
        The aligned dims fed to the generator.
    measured_values : array of the same shape
        The context measured on the generated images (e.g. morphometric thickness).

    Returns
    -------
    float or ndarray of shape (m,)
        A float for 1-D inputs, else one value per column; NaN where fewer than 3 pairs remain
        or one side is constant.
    """
    one_d = np.ndim(aligned_values) == 1
    a, m = _as_2d(aligned_values, "aligned_values"), _as_2d(measured_values, "measured_values")
    if a.shape != m.shape:
        raise ShapeError(
            f"aligned_values and measured_values must have the same shape; got "
            f"{a.shape} and {m.shape}"
        )
    out = np.full(a.shape[1], np.nan)
    for j in range(a.shape[1]):
        ok = np.isfinite(a[:, j]) & np.isfinite(m[:, j])
        x, y = a[ok, j], m[ok, j]
        if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
            continue
        out[j] = stats.spearmanr(x, y).statistic
    return float(out[0]) if one_d else out
