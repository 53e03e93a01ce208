"""Morphometrics on drawn shapes with known answers, batch behaviour and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glance.data import load_embedded_digits
from glance.data.morphometrics import METRIC_NAMES, measure, measure_image
from glance.exceptions import DataValidationError


def _bar(width: int, length: int, size: int = 28, value: int = 255) -> np.ndarray:
    img = np.zeros((size, size), np.uint8)
    x0, y0 = size // 2 - width // 2, size // 2 - length // 2
    img[y0 : y0 + length, x0 : x0 + width] = value
    return img


def _sheared_bar(shear: float, half_width: float = 2.5, half_length: float = 16) -> np.ndarray:
    """A bar whose top leans right by ``shear`` px per px of height (y grows downwards)."""
    yy, xx = np.mgrid[0:56, 0:56] + 0.5
    inside = (np.abs(xx - 28 + shear * (yy - 28)) <= half_width) & (np.abs(yy - 28) <= half_length)
    return (inside * 255).astype(np.uint8)


@pytest.mark.parametrize(("width", "length"), [(2, 16), (3, 18), (4, 20), (5, 12)])
def test_bar_of_known_width_and_length(width, length):
    m = measure_image(_bar(width, length))
    assert m["thickness"] == pytest.approx(width, rel=0.1)
    assert m["area"] == pytest.approx(width * length, rel=0.05)
    assert m["height"] == pytest.approx(length, abs=0.5)
    # The parallelogram holds 98 % of the mass of the (cubic-smoothed) upsampled image, so it is
    # slightly wider than the bar. The medial axis of a rectangle is its centre line (length -
    # width) plus four diagonal branches of about width / sqrt(2) each to the corners.
    assert width <= m["width"] <= width + 2
    assert length - width <= m["length"] <= length + 2 * width
    assert m["slant"] == pytest.approx(0.0, abs=1e-6)
    assert m["intensity"] == 255


def test_thickness_grows_with_bar_width():
    # From 2 px up (1 px is below what the cubic upsampling resolves). Less than 1 px per px for
    # wide bars: the medial axis's corner branches, where the distance map is small, weigh more.
    widths = [measure_image(_bar(w, 24))["thickness"] for w in range(2, 9)]
    assert np.all((np.diff(widths) > 0.3) & (np.diff(widths) < 1.2))


@pytest.mark.parametrize("shear", [-0.5, -0.2, 0.0, 0.3, 0.6])
def test_known_shear_gives_its_slant(shear):
    m = measure_image(_sheared_bar(shear))
    assert m["slant"] == pytest.approx(np.arctan(shear), abs=0.01)
    assert m["height"] == pytest.approx(32, abs=1)


def test_intensity_is_the_median_stroke_level():
    img = _bar(4, 16, value=180)
    img[6:8, 12:16] = 120  # a darker minority of the stroke
    assert measure_image(img)["intensity"] == 180
    assert measure_image(img.astype(np.float64) / 255)["intensity"] == pytest.approx(180)


def test_batch_matches_single_and_workers_match_serial():
    images, _ = load_embedded_digits()
    batch = images[:40]
    serial = measure(batch, n_jobs=1, chunk_size=7)
    parallel = measure(batch, n_jobs=2, chunk_size=7)
    torch_in = measure(torch.from_numpy(batch[:, None]).float() / 255, n_jobs=1)
    one = measure_image(batch[5])
    for name in METRIC_NAMES:
        assert serial[name].shape == (40,)
        np.testing.assert_array_equal(serial[name], parallel[name])
        np.testing.assert_allclose(torch_in[name], serial[name], rtol=1e-5, atol=1e-5)
        assert serial[name][5] == pytest.approx(one[name])
    # MNIST digits: a few px thick, 15-25 px tall.
    assert 1.5 < np.median(serial["thickness"]) < 3.5
    assert 15 < np.median(serial["height"]) < 25


def test_blank_image_gives_nan():
    out = measure(np.zeros((2, 28, 28), np.uint8))
    assert all(np.isnan(out[name]).all() for name in METRIC_NAMES)
    assert measure(np.zeros((0, 28, 28), np.uint8))["area"].shape == (0,)


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (np.zeros((2, 3, 28, 28), np.uint8), "greyscale"),
        (np.zeros((28, 28), np.int32), "uint8 .* or float"),
        (np.full((28, 28), 2.0), "must lie in \\[0, 1\\]"),
        (np.full((28, 28), np.nan), "NaN"),
        (np.zeros(28, np.uint8), "greyscale"),
    ],
)
def test_bad_images_are_rejected(images, match):
    with pytest.raises(DataValidationError, match=match):
        measure(images)


def test_bad_parameters_are_rejected():
    img = _bar(3, 10)
    with pytest.raises(DataValidationError, match="threshold"):
        measure(img, threshold=1.5)
    with pytest.raises(DataValidationError, match="scale"):
        measure(img, scale=0)
    with pytest.raises(DataValidationError, match="n_jobs"):
        measure(np.stack([img] * 8), n_jobs=0, chunk_size=1)
    with pytest.raises(DataValidationError, match="single image"):
        measure_image(np.stack([img, img]))


@pytest.mark.parametrize("shape", [(28, 28), (17, 30), (5, 9)])
def test_fast_resampling_equals_skimage_pyramids(shape):
    from skimage import transform

    from glance.data.morphometrics import expand, reduce

    rng = np.random.default_rng(0)
    for img in (rng.random(shape), (rng.random(shape) > 0.7) * 0.8):
        np.testing.assert_allclose(
            expand(img, 4), transform.pyramid_expand(img, upscale=4, order=3), atol=1e-12
        )
        big = rng.random((shape[0] * 4, shape[1] * 4))
        np.testing.assert_allclose(
            reduce(big, 4), transform.pyramid_reduce(big, downscale=4, order=3), atol=1e-12
        )


def test_cropped_medial_axis_equals_full_image_computation():
    from scipy import ndimage as ndi
    from skimage import morphology

    from glance.data.morphometrics import Morphology

    images, _ = load_embedded_digits()
    edge = np.zeros((28, 28), np.uint8)
    edge[10:28, 0:4] = 255  # touches two image borders
    for img in [*images[:100], edge]:
        m = Morphology(img / 255.0)
        # The distance map is the EDT of the whole binary image (set_thickness reuses it) and
        # the skeleton is exactly skimage's medial axis of it, though computed on a crop.
        np.testing.assert_array_equal(m.distance, ndi.distance_transform_edt(m.binary))
        np.testing.assert_array_equal(m.skeleton, morphology.medial_axis(m.binary, rng=0))
