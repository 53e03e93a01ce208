"""Image-quality metrics on the explained classifier's features (no Inception download).

FID (Heusel et al., 2017) and KID (Binkowski et al., 2018) compare the distributions of feature
vectors of real and generated images. glance computes them on the features of the classifier
being explained (``adapter.features(images)``), which knows the domain; the numbers are
comparable between runs on the same classifier and layer, not with published Inception FIDs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from glance.exceptions import ShapeError
from glance.metrics.fidelity import _to_numpy

__all__ = ["fid", "kid", "pool_features"]


def pool_features(feats: Any, name: str = "features") -> np.ndarray:
    """(N, D) float64 features; (N, C, h, w) maps are averaged over space first."""
    x = _to_numpy(feats, name)
    if x.ndim == 4:
        x = x.mean(axis=(2, 3))
    if x.ndim != 2:
        raise ShapeError(f"{name} must have shape (N, D) or (N, C, h, w); got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ShapeError(f"{name} must be finite (NaN/inf found)")
    return x


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def fid(feats_real: Any, feats_fake: Any) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets.

    ``||mu_r - mu_f||^2 + tr(S_r + S_f - 2 (S_r^1/2 S_f S_r^1/2)^1/2)``; the trace of the matrix
    square root is computed from the eigenvalues of a symmetric PSD matrix, which is stable
    where ``scipy.linalg.sqrtm`` of the non-symmetric product can return complex noise.

    Parameters
    ----------
    feats_real, feats_fake : array of shape (N, D) or (N, C, h, w)
        Features of real and generated images (N >= 2 each).

    Returns
    -------
    float
        >= 0; 0 for identical sets.
    """
    a, b = pool_features(feats_real, "feats_real"), pool_features(feats_fake, "feats_fake")
    if a.shape[1] != b.shape[1] or min(a.shape[0], b.shape[0]) < 2:
        raise ShapeError(
            f"feats_real and feats_fake need the same width and >= 2 rows; got "
            f"{a.shape} and {b.shape}"
        )
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    s_a, s_b = np.atleast_2d(s_a), np.atleast_2d(s_b)
    root = _sqrtm_psd(s_a)
    mid = np.linalg.eigvalsh(root @ s_b @ root)
    tr_covmean = np.sqrt(np.clip(mid, 0.0, None)).sum()
    value = np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2.0 * tr_covmean
    return float(max(value, 0.0))


def kid(
    feats_real: Any,
    feats_fake: Any,
    *,
    n_subsets: int = 100,
    subset_size: int = 1000,
    random_state: int = 0,
) -> float:
    """Kernel inception distance: unbiased MMD^2 with the kernel ``(x.y / D + 1)^3``.

    Averaged over ``n_subsets`` random subsets of ``min(subset_size, N_real, N_fake)`` rows.

    Returns
    -------
    float
        Near 0 (it can be slightly negative: the estimator is unbiased) for samples of the same
        distribution; positive otherwise.
    """
    a, b = pool_features(feats_real, "feats_real"), pool_features(feats_fake, "feats_fake")
    if a.shape[1] != b.shape[1]:
        raise ShapeError(
            f"feats_real and feats_fake need the same width; got {a.shape} and {b.shape}"
        )
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise ShapeError("kid needs at least 2 rows in each feature set")
    rng = np.random.default_rng(random_state)
    d = a.shape[1]
    values = []
    for _ in range(n_subsets):
        x = a[rng.choice(a.shape[0], m, replace=False)]
        y = b[rng.choice(b.shape[0], m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values.append(off - 2.0 * kxy.mean())
    return float(np.mean(values))
