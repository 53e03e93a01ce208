"""Edge correlation of reconstructions (glance.metrics.structure): known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from glance.exceptions import ShapeError
from glance.metrics.structure import edge_correlation


def _squares(n: int = 16, size: int = 32, seed: int = 0) -> np.ndarray:
    """Bright squares of random place and side on a dark ground, (n, 3, size, size)."""
    rng = np.random.default_rng(seed)
    x = np.full((n, 3, size, size), 0.1)
    for i in range(n):
        side = int(rng.integers(6, 14))
        r, c = rng.integers(0, size - side, size=2)
        x[i, :, r : r + side, c : c + side] = rng.uniform(0.6, 1.0, size=3)[:, None, None]
    return x


def test_a_perfect_reconstruction_scores_one() -> None:
    x = _squares()
    np.testing.assert_allclose(edge_correlation(x, x), 1.0)


def test_sharper_reconstructions_score_higher_and_other_images_low() -> None:
    x = _squares()
    blur = {s: gaussian_filter(x, sigma=(0, 0, s, s)) for s in (0.5, 1.0, 2.0, 4.0)}
    scores = [np.nanmean(edge_correlation(x, blur[s])) for s in (0.5, 1.0, 2.0, 4.0)]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] > 0.9
    other = np.nanmean(edge_correlation(x, np.roll(x, 1, axis=0)))
    assert other < 0.3 < scores[-1]


def test_what_every_image_shares_does_not_count() -> None:
    """A frame drawn in every image cancels with each set's mean: a reconstruction that draws
    the same image every time (the mean, a constant) scores 0, whatever it draws."""
    x = _squares()
    x[:, :, :2, :] = 1.0  # the same bar on top of every image
    same = np.broadcast_to(x.mean(axis=0), x.shape).copy()
    np.testing.assert_allclose(edge_correlation(x, same), 0.0)
    np.testing.assert_allclose(edge_correlation(x, np.full_like(x, 0.5)), 0.0)
    noise = same + np.random.default_rng(1).normal(0, 0.05, size=x.shape)
    assert abs(np.nanmean(edge_correlation(x, noise))) < 0.2
    # an image equal to its set's mean has no edges to match: NaN, not a score
    assert np.isnan(edge_correlation(np.repeat(x[:1], 4, axis=0), x[:4])).all()


def test_channels_are_averaged_and_tensors_accepted() -> None:
    import torch

    x = _squares()
    grey = x.mean(axis=1, keepdims=True)
    # a reconstruction with the right luminance edges but the channels swapped still matches
    np.testing.assert_allclose(edge_correlation(x, x[:, ::-1]), 1.0)
    r = edge_correlation(torch.as_tensor(grey), torch.as_tensor(grey))
    np.testing.assert_allclose(r, 1.0)


def test_bad_shapes_are_refused_with_the_shapes() -> None:
    x = _squares()
    with pytest.raises(ShapeError, match="same shape"):
        edge_correlation(x, x[:, :1])
    with pytest.raises(ShapeError, match="same shape"):
        edge_correlation(x[0], x[0])
