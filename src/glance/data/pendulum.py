"""Pendulum: RGB scenes of a pendulum and a light whose angles cast its shadow, from a known SCM.

After the pendulum scene of CausalVAE (Yang et al., CVPR 2021): a rod hangs from a fixed pivot
with a ball at its end, a point light (the yellow disc) sits on an arc above it, and the shadow
of rod and ball falls on the ground line at the bottom of the image. The label is read from the
shadow alone, so the two angles act on it only through the mediator ``shadow_length``.

Factors (columns of ``factors.csv``; the DAG, rule and descriptions are also in ``truth.json``)::

    pendulum_angle   root    U(-40, 44) degrees from the downward vertical (positive: ball right)
    light_angle      root    U(60, 135) degrees, the light's direction seen from the pivot,
                             counter-clockwise from the +x axis (90: straight above)
    shadow_length    pendulum_angle, light_angle -> shadow_length: length of the shadow on the
                             ground line, fraction of the image width
    shadow_position  pendulum_angle, light_angle -> shadow_position: centre of the shadow,
                             -1 (left edge) .. 1 (right edge)
    label            shadow_length -> label: 1 if shadow_length >= 0.2403 ("long"), else 0

The shadow is computed, without noise, by projecting the pendulum from the light onto the ground
line: its ends are the outermost rays from the light tangent to the pivot and to the ball (the rod
lies within their convex hull). ``SHADOW_THRESHOLD`` is the median of ``shadow_length`` under the
sampling distribution, so the classes are balanced. :func:`render_pendulum` draws the shadow from
``shadow_length`` and ``shadow_position`` as given, so a mediator can be intervened on alone;
after changing an angle, :func:`pendulum_descendants` recomputes the shadow and the label.

Scene coordinates (``truth.json["scene"]``) are fractions of the image side, ``y`` up from the
bottom edge. Layout (as for causal shapes)::

    DIR/truth.json
    DIR/<split>/factors.csv        filename,label,<factor>...   (filename relative to DIR/<split>)
    DIR/<split>/images/000000.png

References
----------
Yang, Liu, Chen, Shen, Hao and Wang, "CausalVAE: Disentangled Representation Learning via Neural
Structural Causal Models", CVPR 2021.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from glance._io import atomic_directory, atomic_write_json
from glance.data._output import check_output_dir
from glance.data._render import (
    check_n_and_seed,
    dag_truth,
    paint,
    sample_centres,
    split_tables,
    to_uint8,
    write_splits,
)
from glance.exceptions import DataValidationError

__all__ = [
    "PENDULUM_FACTORS",
    "SHADOW_THRESHOLD",
    "sample_pendulum_factors",
    "pendulum_descendants",
    "render_pendulum",
    "generate_pendulum",
]

logger = logging.getLogger(__name__)

PENDULUM_FACTORS = ("pendulum_angle", "light_angle", "shadow_length", "shadow_position")
PENDULUM_RANGE, LIGHT_RANGE = (-40.0, 44.0), (60.0, 135.0)
#: Median of shadow_length over the sampling distribution (midpoints of a 4000 x 4000 grid of
#: the two uniform angles), rounded; tests/data/test_data_pendulum.py recomputes it.
SHADOW_THRESHOLD = 0.2403
TRAIN_FRACTION = 0.8
GENERATOR = "glance.data.pendulum"
SIZES = (64, 128)
# Scene geometry, in fractions of the image side with y up from the bottom edge.
PIVOT, PIVOT_RADIUS, ROD_LENGTH, ROD_HALF_WIDTH = (0.5, 0.5), 0.02, 0.24, 0.012
BALL_RADIUS, LIGHT_DISTANCE, LIGHT_RADIUS = 0.06, 0.4, 0.055
GROUND, SHADOW_DEPTH = 0.16, 0.05  # ground line height; the shadow band below it
_EDGES = [
    ("pendulum_angle", "shadow_length"),
    ("light_angle", "shadow_length"),
    ("pendulum_angle", "shadow_position"),
    ("light_angle", "shadow_position"),
    ("shadow_length", "label"),
]
# Paint order: sky, ground, shadow, light, rod, ball, pivot (later layers cover earlier ones).
_PALETTE = np.array(
    [
        [0.70, 0.85, 0.97],
        [0.82, 0.72, 0.52],
        [0.28, 0.24, 0.20],
        [1.00, 0.82, 0.10],
        [0.45, 0.28, 0.12],
        [0.78, 0.16, 0.14],
        [0.20, 0.20, 0.20],
    ]
)
_DESCRIPTIONS = {
    "pendulum_angle": "angle of the rod from the downward vertical; positive: ball to the right",
    "light_angle": "direction of the light seen from the pivot, counter-clockwise from the +x "
    "axis (90: straight above the pivot)",
    "shadow_length": "length of the shadow of rod and ball on the ground line",
    "shadow_position": "centre of the shadow on the ground line: -1 left edge, 1 right edge",
}


def _ball_centre(pendulum_angle: Any) -> tuple[np.ndarray, np.ndarray]:
    theta = np.deg2rad(pendulum_angle)
    return PIVOT[0] + ROD_LENGTH * np.sin(theta), PIVOT[1] - ROD_LENGTH * np.cos(theta)


def _light_centre(light_angle: Any) -> tuple[np.ndarray, np.ndarray]:
    phi = np.deg2rad(light_angle)
    return PIVOT[0] + LIGHT_DISTANCE * np.cos(phi), PIVOT[1] + LIGHT_DISTANCE * np.sin(phi)


def _disc_shadow(cx: Any, cy: Any, radius: float, sx: Any, sy: Any) -> list[np.ndarray]:
    """Where the two rays from the light tangent to a disc (below it) meet the ground line."""
    direction = np.arctan2(cy - sy, cx - sx)
    half = np.arcsin(radius / np.hypot(cx - sx, cy - sy))
    return [sx + (GROUND - sy) / np.tan(direction + s * half) for s in (-1.0, 1.0)]


def _check_range(name: str, values: np.ndarray, bounds: tuple[float, float]) -> None:
    if not np.all((values >= bounds[0]) & (values <= bounds[1])):
        bad = values[~((values >= bounds[0]) & (values <= bounds[1]))].flat[0]
        raise DataValidationError(
            f"{name} of pendulum_descendants must lie in [{bounds[0]:g}, {bounds[1]:g}] degrees "
            f"(outside it the shadow can leave the image); got {bad!r}"
        )


def pendulum_descendants(pendulum_angle: Any, light_angle: Any) -> dict[str, np.ndarray]:
    """The factors the two root angles cause: ``shadow_length``, ``shadow_position``, ``label``.

    Parameters
    ----------
    pendulum_angle
        Degrees, scalar or array, within ``PENDULUM_RANGE``.
    light_angle
        Degrees, broadcastable with ``pendulum_angle``, within ``LIGHT_RANGE``.

    Returns
    -------
    dict of str to numpy.ndarray
        ``shadow_length`` (fraction of the image width), ``shadow_position`` (centre, -1..1) and
        ``label`` (int64, 1 if ``shadow_length >= SHADOW_THRESHOLD``), broadcast together.

    Raises
    ------
    DataValidationError
        An angle outside its range.

    Examples
    --------
    An intervention on the light, then the image of the intervened scene:

    >>> row = {"pendulum_angle": 10.0, "light_angle": 120.0}
    >>> row.update(pendulum_descendants(**row))
    >>> render_pendulum(row, 64).shape
    (64, 64, 3)
    """
    theta = np.asarray(pendulum_angle, dtype=np.float64)
    phi = np.asarray(light_angle, dtype=np.float64)
    _check_range("pendulum_angle", theta, PENDULUM_RANGE)
    _check_range("light_angle", phi, LIGHT_RANGE)
    sx, sy = _light_centre(phi)
    bx, by = _ball_centre(theta)
    ends = _disc_shadow(PIVOT[0], PIVOT[1], PIVOT_RADIUS, sx, sy)
    ends += _disc_shadow(bx, by, BALL_RADIUS, sx, sy)
    lo = np.minimum(np.minimum(ends[0], ends[1]), np.minimum(ends[2], ends[3]))
    hi = np.maximum(np.maximum(ends[0], ends[1]), np.maximum(ends[2], ends[3]))
    length = hi - lo
    return {
        "shadow_length": length,
        "shadow_position": lo + hi - 1.0,  # 2 * centre - 1
        "label": (length >= SHADOW_THRESHOLD).astype(np.int64),
    }


def sample_pendulum_factors(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw ``n`` factor vectors and labels from the SCM of the module docstring."""
    f = {
        "pendulum_angle": rng.uniform(*PENDULUM_RANGE, size=n),
        "light_angle": rng.uniform(*LIGHT_RANGE, size=n),
    }
    descendants = pendulum_descendants(f["pendulum_angle"], f["light_angle"])
    return {**f, **descendants}


def _stamp(
    index: np.ndarray,
    centres: np.ndarray,
    value: int,
    bounds: tuple[float, float, float, float],
    inside: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> None:
    """Set ``index`` to ``value`` where ``inside(x, y)``, testing only the samples within
    ``bounds`` (x0, x1, y0, y1): a small shape costs its bounding box, not the whole grid."""
    x0, x1, y0, y1 = bounds
    cols = np.nonzero((centres >= x0) & (centres <= x1))[0]
    rows = np.nonzero((1.0 - centres >= y0) & (1.0 - centres <= y1))[0]
    if cols.size and rows.size:
        window = index[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        window[inside(centres[cols][None, :], 1.0 - centres[rows][:, None])] = value


def _disc(
    cx: float, cy: float, r: float
) -> tuple[tuple[float, float, float, float], Callable[..., np.ndarray]]:
    return (cx - r, cx + r, cy - r, cy + r), lambda x, y: np.hypot(x - cx, y - cy) <= r


def _rod(
    bx: float, by: float
) -> tuple[tuple[float, float, float, float], Callable[..., np.ndarray]]:
    (ax, ay), w = PIVOT, ROD_HALF_WIDTH
    dx, dy = bx - ax, by - ay

    def inside(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        t = np.clip(((x - ax) * dx + (y - ay) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
        return np.hypot(x - ax - t * dx, y - ay - t * dy) <= w

    return (min(ax, bx) - w, max(ax, bx) + w, min(ay, by) - w, max(ay, by) + w), inside


def render_pendulum(factors: Mapping[str, float], size: int = 64) -> np.ndarray:
    """Render one scene (uint8 (size, size, 3)) from one factor vector, anti-aliased.

    Uses ``pendulum_angle``, ``light_angle``, ``shadow_length`` and ``shadow_position`` as given
    (other keys are ignored). The scene is drawn on a ``4 size`` grid of pixel-centre samples and
    area-averaged down. A pure function of its arguments: an oracle re-renders intervened scenes
    with it (see :func:`pendulum_descendants`).
    """
    c = sample_centres(size)
    y = 1.0 - c  # y up from the bottom edge, per row
    bx, by = _ball_centre(float(factors["pendulum_angle"]))
    lx, ly = _light_centre(float(factors["light_angle"]))
    mid = (float(factors["shadow_position"]) + 1.0) / 2.0
    index = np.zeros((len(c), len(c)), dtype=np.intp)  # palette index, in paint order
    index[y < GROUND] = 1
    band = (y < GROUND) & (y >= GROUND - SHADOW_DEPTH)
    index[np.ix_(band, np.abs(c - mid) <= float(factors["shadow_length"]) / 2.0)] = 2
    shapes = (
        _disc(lx, ly, LIGHT_RADIUS),
        _rod(bx, by),
        _disc(bx, by, BALL_RADIUS),
        _disc(*PIVOT, PIVOT_RADIUS),
    )
    for value, (bounds, inside) in enumerate(shapes, start=3):
        _stamp(index, c, value, bounds, inside)
    return to_uint8(paint(index, _PALETTE, size))


def _truth(size: int, seed: int, n: int) -> dict[str, Any]:
    return {
        "generator": GENERATOR,
        "image_size": size,
        "seed": seed,
        "n": n,
        **dag_truth(PENDULUM_FACTORS, _EDGES),
        "label_rule": {
            "factors": ["shadow_length"],
            "expression": f"label = 1 if shadow_length >= {SHADOW_THRESHOLD} else 0",
            "classes": ["short", "long"],
        },
        "descriptions": dict(_DESCRIPTIONS),
        "ranges": {"pendulum_angle": PENDULUM_RANGE, "light_angle": LIGHT_RANGE},
        "units": {
            "pendulum_angle": "degrees",
            "light_angle": "degrees",
            "shadow_length": "fraction of image width",
            "shadow_position": "[-1, 1] across the image width",
        },
        "scene": {
            "coordinates": "fractions of the image side, y up from the bottom edge",
            "pivot": PIVOT,
            "pivot_radius": PIVOT_RADIUS,
            "rod_length": ROD_LENGTH,
            "ball_radius": BALL_RADIUS,
            "light_distance_from_pivot": LIGHT_DISTANCE,
            "ground_line": GROUND,
            "shadow_band": [GROUND - SHADOW_DEPTH, GROUND],
        },
    }


def generate_pendulum(
    out: str | os.PathLike[str],
    *,
    n: int = 10_000,
    size: int = 64,
    seed: int = 0,
    n_jobs: int | None = None,
    chunk_size: int = 500,
    progress: bool = False,
    force: bool = False,
) -> Path:
    """Write a pendulum dataset to ``out`` (replaced atomically when complete).

    Parameters
    ----------
    out
        Output directory (layout in the module docstring), with a ``MANIFEST.json``.
    n
        Images in ``train`` + ``test`` (80 % / 20 %).
    size
        Image side in pixels: 64 or 128.
    seed
        Seed of every random choice: the same seed gives the same files.
    n_jobs
        Worker processes (None: all cores).
    chunk_size
        Images per worker task.
    progress
        Show a tqdm progress bar.
    force
        Replace a dataset this generator wrote at ``out`` before (otherwise refused).

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    DataValidationError
        Invalid ``n``, ``size`` or ``seed``, or an ``out`` that may not be replaced.
    """
    check_n_and_seed(n, seed)
    if size not in SIZES:
        raise DataValidationError(f"size must be 64 or 128; got {size!r}")
    check_output_dir(out, "truth.json", GENERATOR, force=force)
    factors = sample_pendulum_factors(n, np.random.default_rng(seed))
    tables = split_tables(factors, n, TRAIN_FRACTION)
    with atomic_directory(out) as tmp:
        write_splits(
            tmp,
            tables,
            render_pendulum,
            size=size,
            n_jobs=n_jobs,
            chunk_size=chunk_size,
            progress=progress,
            desc="pendulum",
        )
        atomic_write_json(tmp / "truth.json", _truth(size, seed, n))
    logger.info("wrote %d pendulum scenes (%d px) to %s", n, size, out)
    return Path(out)
