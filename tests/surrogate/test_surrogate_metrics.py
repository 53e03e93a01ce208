"""Surrogate metrics on cases whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glance.exceptions import ShapeError
from glance.metrics.disentanglement import dci, discretize, mig, mig_reference
from glance.metrics.fidelity import (
    alignment_r2,
    alignment_slope,
    spearman_alignment,
    top1_agreement,
)
from glance.metrics.realism import fid, kid


def test_top1_agreement():
    a = torch.tensor([[0.0, 1.0], [2.0, 1.0], [0.0, 3.0], [5.0, 0.0]])
    b = np.array([[0.0, 9.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert top1_agreement(a, b) == 0.75
    assert top1_agreement(a, a) == 1.0
    assert top1_agreement(a, np.array([1, 0, 1, 0])) == 1.0  # class indices accepted
    with pytest.raises(ShapeError):
        top1_agreement(a, b[:3])


def test_alignment_r2_direct_and_linear():
    rng = np.random.default_rng(0)
    c = rng.normal(size=(500, 2))
    assert np.allclose(alignment_r2(c, c), 1.0)
    z = np.stack([2 * c[:, 0] + 1, c[:, 1] + 0.5 * rng.normal(size=500)], axis=1)
    direct = alignment_r2(z, c)
    linear = alignment_r2(z, c, method="linear")
    assert direct[0] < 0  # wrong scale and offset: the dim is a bad prediction as is
    assert linear[0] == pytest.approx(1.0)  # but perfectly linearly related
    assert linear[1] == pytest.approx(1 / 1.25, abs=0.05)  # var(c) / (var(c) + 0.25)
    assert direct[1] == pytest.approx(1 - 0.25, abs=0.06)


def test_alignment_r2_ignores_nan_and_reports_nan_when_unknown():
    c = np.array([[0.0, np.nan], [1.0, np.nan], [2.0, 1.0], [np.nan, np.nan]])
    z = np.array([[0.0, 5.0], [1.0, 6.0], [2.0, 7.0], [100.0, 8.0]])
    r2 = alignment_r2(z, c)
    assert r2[0] == pytest.approx(1.0)
    assert np.isnan(r2[1])  # only one known value
    with pytest.raises(ShapeError):
        alignment_r2(z, c[:, :1])


def test_alignment_slope_is_the_dim_change_per_unit_of_context():
    rng = np.random.default_rng(0)
    c = rng.normal(size=(4000, 3))
    calibrated = 0.3 * c[:, 1] + np.sqrt(0.3 * 0.7) * rng.normal(size=4000)  # E[c | z] = z
    z = np.stack([c[:, 0] + 0.1 * rng.normal(size=4000), calibrated, rng.normal(size=4000)], 1)
    slope = alignment_slope(z, c)
    assert slope[0] == pytest.approx(1.0, abs=0.02)  # the dim is its context
    assert slope[1] == pytest.approx(0.3, abs=0.03)  # a weak reader moves little per unit
    assert abs(slope[2]) < 0.05  # a dim that cannot read its context barely moves with it
    # scale-aware, unlike the correlation: twice the spread in z is twice the slope
    assert alignment_slope(2 * z, c)[0] == pytest.approx(2 * slope[0])


def test_alignment_slope_ignores_nan_and_reports_nan_when_unknown():
    c = np.array([[0.0, np.nan], [1.0, np.nan], [2.0, 1.0], [np.nan, np.nan]])
    z = np.array([[0.0, 5.0], [2.0, 6.0], [4.0, 7.0], [100.0, 8.0]])
    slope = alignment_slope(z, c)
    assert slope[0] == pytest.approx(2.0) and np.isnan(slope[1])
    assert np.isnan(alignment_slope(z, np.ones((4, 2)))).all()  # constant contexts
    with pytest.raises(ShapeError):
        alignment_slope(z, c[:, :1])


def test_spearman_alignment():
    x = np.linspace(0, 1, 50)
    assert spearman_alignment(x, np.exp(3 * x)) == pytest.approx(1.0)
    assert spearman_alignment(x, -x) == pytest.approx(-1.0)
    y = np.exp(x)
    y[::5] = np.nan
    assert spearman_alignment(x, y) == pytest.approx(1.0)
    both = spearman_alignment(np.stack([x, x], 1), np.stack([x, x[::-1]], 1))
    assert both.shape == (2,) and both[0] == pytest.approx(1) and both[1] == pytest.approx(-1)
    assert np.isnan(spearman_alignment(x, np.ones(50)))


def test_discretize():
    assert discretize(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [2, 0, 2, 1]
    bins = discretize(np.random.default_rng(0).normal(size=1000), n_bins=10)
    assert np.bincount(bins).tolist() == [100] * 10


def _factors(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(n, 3)), rng


def test_mig_perfect_permuted_codes_score_high():
    f, rng = _factors()
    codes = np.stack([np.exp(f[:, 2]), rng.normal(size=len(f)), f[:, 0] * 3, -f[:, 1]], 1)
    assert mig(f, codes) > 0.9


def test_mig_random_and_entangled_codes_score_low():
    f, rng = _factors()
    assert mig(f, rng.normal(size=(len(f), 4))) < 0.05
    mixed = f @ rng.normal(size=(3, 3))  # every code mixes every factor
    assert mig(f, mixed) < 0.35


def test_mig_reference_falls_with_noise_and_with_correlated_factors():
    rng = np.random.default_rng(0)
    a = rng.normal(size=3000)
    independent = np.stack([a, rng.normal(size=3000)], 1)
    correlated = np.stack([a, 0.95 * a + 0.3 * rng.normal(size=3000)], 1)
    perfect = mig_reference(independent, [1.0, 1.0], 6)
    assert perfect > 0.9
    assert mig_reference(independent, [0.9, 0.9], 6) < perfect - 0.2
    # The other factor's own code is a strong runner-up: low even for perfect codes.
    assert mig_reference(correlated, [1.0, 1.0], 6) < perfect - 0.3
    # Codes uncorrelated with their factor: nothing to gap.
    assert mig_reference(independent, [0.0, 0.0], 6) < 0.05


def test_mig_reference_rejects_bad_shapes():
    f = np.zeros((10, 2))
    with pytest.raises(ShapeError, match="one value per factor"):
        mig_reference(f, [1.0], 4)
    with pytest.raises(ShapeError, match="n_codes"):
        mig_reference(f, [1.0, 1.0], 1)


@pytest.mark.parametrize("method", ["gbt", "lasso"])
def test_dci_perfect_vs_random(method):
    f, rng = _factors(1500)
    perfect = np.stack([f[:, 1], f[:, 0], f[:, 2], rng.normal(size=len(f))], 1)
    good = dci(f, perfect, method=method)
    assert good["disentanglement"] > 0.9
    assert good["completeness"] > 0.9
    assert good["informativeness"] > 0.95
    bad = dci(f, rng.normal(size=(len(f), 4)), method=method)
    assert bad["informativeness"] < 0.1
    assert bad["disentanglement"] < good["disentanglement"] - 0.3


def test_dci_entangled_codes_are_not_disentangled():
    f, rng = _factors(1500)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    res = dci(f, f @ q, method="lasso")  # informative but rotated: every code mixes factors
    assert res["informativeness"] > 0.95
    assert res["disentanglement"] < 0.6 and res["completeness"] < 0.6


def test_dci_handles_nan_factors_and_single_factor():
    rng = np.random.default_rng(0)
    f0 = rng.uniform(size=600)
    codes = np.stack([f0, rng.normal(size=600)], 1)
    factors = f0.copy()
    factors[::3] = np.nan  # unknown for a third of the rows: those rows are skipped
    res = dci(factors, codes, method="lasso")
    assert res["disentanglement"] == 1.0  # one factor: every code can only explain it
    assert res["completeness"] > 0.9
    assert res["informativeness"] > 0.9


def test_fid_known_answers():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 8))
    assert fid(x, x) == pytest.approx(0.0, abs=1e-6)
    shifted = x + np.array([3.0] + [0.0] * 7)
    assert fid(x, shifted) == pytest.approx(9.0, rel=1e-6)  # same covariance: ||dmu||^2
    # N(0, I) vs N(0, 4I) in D dims: tr(I + 4I - 2*2I) = D
    assert fid(rng.normal(size=(20000, 4)), 2 * rng.normal(size=(20000, 4))) == pytest.approx(
        4.0, rel=0.05
    )
    maps = torch.randn(10, 8, 3, 3)
    assert fid(maps, maps) == pytest.approx(0.0, abs=1e-6)  # (N, C, h, w) pooled


def test_kid_known_answers():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(1000, 16)), rng.normal(size=(1000, 16))
    same = kid(a, b, n_subsets=10, subset_size=300)
    diff = kid(a, b + 1.0, n_subsets=10, subset_size=300)
    assert abs(same) < 0.01
    assert diff > 0.5
    with pytest.raises(ShapeError):
        kid(a, b[:, :3])
