"""Disentanglement metrics: MIG (Chen et al., 2018) and DCI (Eastwood & Williams, 2018).

``factors`` are the ground-truth (or context) values, shape (N, K); ``codes`` are the concept
vectors, shape (N, D). Rows where a factor is NaN are ignored for that factor.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from sklearn.metrics import mutual_info_score

from glance.exceptions import ShapeError
from glance.metrics.fidelity import _as_2d

__all__ = ["mig", "mig_reference", "dci", "discretize"]


def discretize(values: np.ndarray, n_bins: int = 20) -> np.ndarray:
    """Integer labels for a 1-D array: its categories if it has at most ``n_bins`` distinct
    values, else equal-frequency (quantile) bins, which are robust to outliers."""
    uniq = np.unique(values)
    if uniq.size <= n_bins:
        return np.searchsorted(uniq, values)
    edges = np.quantile(values, np.linspace(0, 1, n_bins + 1)[1:-1])
    return np.searchsorted(edges, values, side="right")


def _check(factors: Any, codes: Any) -> tuple[np.ndarray, np.ndarray]:
    f, c = _as_2d(factors, "factors"), _as_2d(codes, "codes")
    if f.shape[0] != c.shape[0]:
        raise ShapeError(
            f"factors and codes must have the same number of rows; got "
            f"{f.shape[0]} and {c.shape[0]}"
        )
    if not np.all(np.isfinite(c)):
        raise ShapeError("codes must be finite (NaN/inf found)")
    return f, c


def mig(factors: Any, codes: Any, *, n_bins: int = 20) -> float:
    """Mutual information gap: per factor, the gap between the two codes most informative about
    it, divided by the factor's entropy; averaged over factors.

    Parameters
    ----------
    factors : array of shape (N, K)
        Ground-truth factors (NaN = unknown); discrete factors keep their categories.
    codes : array of shape (N, D), D >= 2
        Concept vectors.
    n_bins : int
        Bins used to discretise continuous codes and factors (equal-frequency).

    Returns
    -------
    float
        In [0, 1]: 1 when each factor is captured by exactly one code and no other code carries
        information about it; near 0 for codes unrelated to the factors. NaN if no factor has
        entropy.
    """
    f, c = _check(factors, codes)
    if c.shape[1] < 2:
        raise ShapeError(f"mig needs at least 2 codes; got {c.shape[1]}")
    gaps = []
    for k in range(f.shape[1]):
        ok = np.isfinite(f[:, k])
        fk = discretize(f[ok, k], n_bins)
        h = mutual_info_score(fk, fk)
        if h <= 0:
            continue
        mi = np.sort(
            [mutual_info_score(fk, discretize(c[ok, i], n_bins)) for i in range(c.shape[1])]
        )[::-1]
        gaps.append((mi[0] - mi[1]) / h)
    return float(np.mean(gaps)) if gaps else float("nan")


def mig_reference(
    factors: Any,
    r2: Any,
    n_codes: int,
    *,
    n_bins: int = 20,
    random_state: int = 0,
) -> float:
    """MIG of ideal codes exactly as aligned as a twin's: the reference a measured MIG is read
    against.

    Code ``k`` is ``sqrt(r2[k])`` times factor ``k`` standardised plus independent Gaussian
    noise of variance ``1 - r2[k]``, so that its squared correlation with the factor is
    ``r2[k]`` (MIG is scale-free, so only the correlation matters); the other ``n_codes - K``
    codes are independent noise, carrying nothing. MIG rewards a factor's best code for
    carrying more about it than the runner-up, so with factors correlated in the data (the
    embedded Morpho-MNIST's thickness → intensity, r = 0.91) the other factor's own code is a
    strong runner-up and even these ideal codes score low; a twin whose MIG is near this
    reference loses little to entanglement, one far below it does.

    Parameters
    ----------
    factors : array of shape (N, K)
        Ground-truth factors, as for :func:`mig`.
    r2 : array of shape (K,)
        Squared correlation of each factor's code with the factor (``alignment_r2(...,
        method="linear")``; clipped to [0, 1]; NaN = 0, a code of pure noise).
    n_codes : int
        Number of codes in all (>= K and >= 2), as in the measured concept space.
    n_bins, random_state
        As for :func:`mig`; the seed of the noise.
    """
    f = _as_2d(factors, "factors")
    r = np.nan_to_num(np.asarray(r2, dtype=np.float64).reshape(-1), nan=0.0).clip(0.0, 1.0)
    if r.shape[0] != f.shape[1]:
        raise ShapeError(f"r2 must have one value per factor ({f.shape[1]}); got {r.shape[0]}")
    if n_codes < max(2, f.shape[1]):
        raise ShapeError(f"n_codes must be >= max(2, number of factors); got {n_codes}")
    rng = np.random.default_rng(random_state)
    # Unknown (NaN) factor values get a code of noise: mig() ignores those rows for that factor.
    mu, sd = np.nanmean(f, axis=0), np.nanstd(f, axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    aligned = np.nan_to_num((f - mu) / sd) * np.sqrt(r) + rng.standard_normal(f.shape) * np.sqrt(
        1.0 - r
    )
    free = rng.standard_normal((f.shape[0], n_codes - f.shape[1]))
    return mig(f, np.concatenate([aligned, free], axis=1), n_bins=n_bins)


def _importances(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    method: str,
    random_state: int,
) -> tuple[np.ndarray, float]:
    """Importance of each code for one factor, and the held-out R^2 of the predictor."""
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import Lasso

    mu, sd = x_train.mean(0), x_train.std(0) + 1e-12
    ym, ys = y_train.mean(), y_train.std() + 1e-12
    xt, xs = (x_train - mu) / sd, (x_test - mu) / sd
    yt = (y_train - ym) / ys
    if method == "lasso":
        model = Lasso(alpha=0.01, max_iter=5000).fit(xt, yt)
        imp = np.abs(model.coef_)
    else:
        model = GradientBoostingRegressor(
            n_estimators=50, max_depth=3, subsample=0.8, random_state=random_state
        ).fit(xt, yt)
        imp = model.feature_importances_
    pred = model.predict(xs) * ys + ym
    ss_tot = np.sum((y_test - y_test.mean()) ** 2)
    r2 = 1.0 - np.sum((y_test - pred) ** 2) / ss_tot if ss_tot > 0 else np.nan
    return imp, float(r2)


def _entropy_rows(p: np.ndarray, base: int) -> np.ndarray:
    """Entropy (in base ``base``) of each row of a row-stochastic matrix."""
    if base <= 1:
        return np.zeros(p.shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(axis=1) / np.log(base)


def dci(
    factors: Any,
    codes: Any,
    *,
    method: Literal["gbt", "lasso"] = "gbt",
    test_fraction: float = 0.3,
    max_samples: int = 5000,
    random_state: int = 0,
) -> dict[str, float]:
    """DCI disentanglement, completeness and informativeness (Eastwood & Williams, 2018).

    One regressor per factor predicts it from all codes; its importances form the matrix
    ``R`` (D codes x K factors).

    Parameters
    ----------
    factors : array of shape (N, K)
        Ground-truth factors (NaN = unknown, those rows are skipped for that factor).
    codes : array of shape (N, D)
        Concept vectors.
    method : {"gbt", "lasso"}
        Gradient-boosted trees (non-linear, as in Locatello et al.'s benchmark) or Lasso on
        standardised codes (absolute coefficients; linear, fast).
    test_fraction : float
        Share of rows held out to measure informativeness.
    max_samples : int
        Rows used at most (a random subset), to bound the cost.
    random_state : int
        Seed of the split, the subset and the trees.

    Returns
    -------
    dict
        ``disentanglement`` (importance-weighted mean over codes of ``1 - H_K(P_i.)``),
        ``completeness`` (mean over factors of ``1 - H_D(P_.j)``) and ``informativeness`` (mean
        held-out R^2 of the per-factor predictors; higher is better). With a single factor,
        disentanglement is 1 by definition (every code can only explain that factor).
    """
    f, c = _check(factors, codes)
    rng = np.random.default_rng(random_state)
    n_codes, n_factors = c.shape[1], f.shape[1]
    r = np.zeros((n_codes, n_factors))
    r2s = []
    for k in range(n_factors):
        rows = np.flatnonzero(np.isfinite(f[:, k]))
        rows = rng.permutation(rows)[:max_samples]
        n_test = max(1, int(round(test_fraction * rows.size)))
        if rows.size - n_test < 2:
            raise ShapeError(f"factor {k} has only {rows.size} known values; dci needs more")
        te, tr = rows[:n_test], rows[n_test:]
        r[:, k], r2 = _importances(c[tr], f[tr, k], c[te], f[te, k], method, random_state)
        r2s.append(r2)
    total = r.sum()
    row_sum = r.sum(axis=1)
    code_w = row_sum / total if total > 0 else np.zeros(n_codes)
    p_rows = np.divide(r, row_sum[:, None], out=np.zeros_like(r), where=row_sum[:, None] > 0)
    d_i = 1.0 - _entropy_rows(p_rows, n_factors)
    col_sum = r.sum(axis=0)
    p_cols = np.divide(r, col_sum[None, :], out=np.zeros_like(r), where=col_sum[None, :] > 0)
    c_j = np.where(col_sum > 0, 1.0 - _entropy_rows(p_cols.T, n_codes), 0.0)
    return {
        "disentanglement": float(np.sum(code_w * d_i)),
        "completeness": float(np.mean(c_j)),
        "informativeness": float(np.nanmean(r2s)) if np.any(np.isfinite(r2s)) else float("nan"),
    }
