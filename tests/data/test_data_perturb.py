"""Perturbations reach their targets as the morphometrics measure them."""

from __future__ import annotations

import numpy as np
import pytest

from glance.data import load_embedded_digits
from glance.data.morphometrics import measure, measure_image
from glance.data.perturb import set_intensity, set_slant, set_thickness
from glance.exceptions import DataValidationError


@pytest.fixture(scope="module")
def digits():
    return load_embedded_digits()[0][:30]


def test_set_thickness_hits_targets(digits):
    targets = np.linspace(1.3, 4.5, len(digits))
    out = np.stack([set_thickness(img, t) for img, t in zip(digits, targets, strict=True)])
    assert out.dtype == np.uint8 and out.shape == digits.shape
    measured = measure(out, n_jobs=1)["thickness"]
    err = np.abs(measured - targets)
    assert np.median(err) < 0.1
    assert np.corrcoef(measured, targets)[0, 1] > 0.97


def test_set_thickness_thickens_and_thins_one_digit(digits):
    base = measure_image(digits[0])["thickness"]
    thick = measure_image(set_thickness(digits[0], base + 1.5))["thickness"]
    thin = measure_image(set_thickness(digits[0], max(base - 0.8, 1.0)))["thickness"]
    assert thin < base < thick
    assert thick == pytest.approx(base + 1.5, abs=0.15)


def test_set_intensity_is_exact_up_to_rounding(digits):
    for target in (64.0, 130.5, 255.0):
        out = set_intensity(digits[1], target)
        assert measure_image(out)["intensity"] == pytest.approx(target, abs=1.0)


def test_set_slant_hits_targets(digits):
    for k, target in enumerate((-0.6, -0.2, 0.0, 0.3, 0.7)):
        out = set_slant(digits[k], target)
        assert measure_image(out)["slant"] == pytest.approx(target, abs=0.03)


def test_perturbations_reject_bad_input(digits):
    blank = np.zeros((28, 28), np.uint8)
    for func, target in ((set_thickness, 2.0), (set_intensity, 100.0), (set_slant, 0.1)):
        with pytest.raises(DataValidationError, match="blank"):
            func(blank, target)
        with pytest.raises(DataValidationError, match="one image"):
            func(digits[:2], target)
    with pytest.raises(DataValidationError, match="target thickness"):
        set_thickness(digits[0], -1.0)
    with pytest.raises(DataValidationError, match="max_iter"):
        set_thickness(digits[0], 2.0, max_iter=-1)
    with pytest.raises(DataValidationError, match="tol"):
        set_thickness(digits[0], 2.0, tol=0)
    with pytest.raises(DataValidationError, match="target intensity"):
        set_intensity(digits[0], 300.0)
    with pytest.raises(DataValidationError, match="target slant"):
        set_slant(digits[0], float("nan"))
