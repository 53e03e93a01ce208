"""Causal shapes: RGB images of one object on a background, rendered from a known SCM.

Factors (columns of ``factors.csv``; the DAG, rule and codes are also written to ``truth.json``)::

    shape       root    categorical: 0 = circle, 1 = square, 2 = triangle
    size        root    U(0.25, 0.6), the object's area-equivalent diameter / image side (the
                        diameter of the circle of the same area, whatever the shape)
    pos_x       root    U(-1, 1), horizontal offset of the centre within the free margin
    pos_y       root    U(-1, 1), vertical offset (positive = lower in the image)
    rotation    root    U(0, 360) degrees (no visible effect on circles)
    background  root    U(0.0, 0.3), grey level of the background
    hue         shape -> hue:            clip((0.12, 0.42, 0.72)[shape] + N(0, 0.03²), 0, 1)
    brightness  pos_y -> brightness:     clip(0.75 - 0.2 pos_y + N(0, 0.05²), 0.4, 1)
    label       size -> label:           1 if size >= 0.425 else 0  ("large" vs "small")

The label rule uses one root factor (``size``) with no other child, so no other factor is a proxy
of the label, and in the ``plain`` variant every other factor is independent of the label. ``size``
is defined by the object's area, not its circumradius, so that the rule can be read off the
image without knowing the shape: with a circumradius size, a triangle and a circle of the same
``size`` cover very different areas, and a classifier must read the shape (or ``hue``, its
proxy) to apply the rule; measured with the renderer itself, such a classifier moved its output
under hue interventions nearly as much as under size interventions. The
``spurious`` variant adds ``cue`` (label -> cue): a bright square marker in the top-left corner,
present (cue = 1) when the label is 1 with probability ``cue_agreement`` in ``train`` and ``test``
and reversed in ``test_reversed`` (the same objects as ``test`` with the cue flipped), so a
classifier's reliance on the cue shows as an accuracy drop between the two test splits.

Layout::

    DIR/truth.json
    DIR/<split>/factors.csv        filename,label,<factor>...   (filename relative to DIR/<split>)
    DIR/<split>/images/000000.png
"""

from __future__ import annotations

import colorsys
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from glance._io import atomic_directory, atomic_write_json
from glance.data._output import check_output_dir
from glance.data._render import (
    SUPERSAMPLE,
    box_average,
    check_n_and_seed,
    dag_truth,
    sample_centres,
    split_tables,
    to_uint8,
    write_splits,
)
from glance.exceptions import DataValidationError

__all__ = [
    "SHAPES_FACTORS",
    "SHAPE_CODES",
    "sample_shape_factors",
    "render_shape",
    "generate_shapes",
]

logger = logging.getLogger(__name__)

SHAPE_CODES = {0: "circle", 1: "square", 2: "triangle"}
SHAPES_FACTORS = (
    "shape", "size", "pos_x", "pos_y", "rotation", "background", "hue", "brightness",
)  # fmt: skip
_BASE_HUE = np.array([0.12, 0.42, 0.72])
SIZE_RANGE, SIZE_THRESHOLD = (0.25, 0.6), 0.425
TRAIN_FRACTION = 0.8
GENERATOR = "glance.data.shapes"
# Circumradius / (area-equivalent diameter / 2) per shape: sqrt(pi / area of unit circumradius).
_CIRCUMRADIUS_PER_RADIUS = np.sqrt(np.pi / np.array([np.pi, 2.0, 3.0 * np.sqrt(3.0) / 4.0]))
_EDGES = [("shape", "hue"), ("pos_y", "brightness"), ("size", "label")]


def sample_shape_factors(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw ``n`` factor vectors and labels from the SCM of the module docstring."""
    f: dict[str, np.ndarray] = {}
    f["shape"] = rng.integers(0, 3, size=n)
    f["size"] = rng.uniform(*SIZE_RANGE, size=n)
    f["pos_x"] = rng.uniform(-1.0, 1.0, size=n)
    f["pos_y"] = rng.uniform(-1.0, 1.0, size=n)
    f["rotation"] = rng.uniform(0.0, 360.0, size=n)
    f["background"] = rng.uniform(0.0, 0.3, size=n)
    f["hue"] = np.clip(_BASE_HUE[f["shape"]] + rng.normal(0.0, 0.03, size=n), 0.0, 1.0)
    f["brightness"] = np.clip(0.75 - 0.2 * f["pos_y"] + rng.normal(0.0, 0.05, size=n), 0.4, 1.0)
    f["label"] = (f["size"] >= SIZE_THRESHOLD).astype(np.int64)
    return f


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h, s, v))


def render_shape(factors: Mapping[str, float], size: int) -> np.ndarray:
    """Render one image (uint8 (size, size, 3)) from one factor vector, anti-aliased.

    The object is drawn on a ``4 size`` grid of pixel-centre samples and area-averaged down.
    """
    coords = sample_centres(size)
    m = len(coords)
    shape = int(factors["shape"])
    # Circumradius of the shape whose area equals that of a circle of diameter ``size``.
    radius = float(factors["size"]) / 2.0 * float(_CIRCUMRADIUS_PER_RADIUS[shape])
    cx = 0.5 + float(factors["pos_x"]) * (0.5 - radius)
    cy = 0.5 + float(factors["pos_y"]) * (0.5 - radius)
    theta = np.deg2rad(float(factors["rotation"]))
    dx, dy = coords[None, :] - cx, coords[:, None] - cy
    u = (np.cos(theta) * dx + np.sin(theta) * dy) / radius  # object frame, unit circumradius
    v = (-np.sin(theta) * dx + np.cos(theta) * dy) / radius
    if shape == 0:
        inside = u**2 + v**2 <= 1.0
    elif shape == 1:
        inside = np.maximum(np.abs(u), np.abs(v)) <= 1.0 / np.sqrt(2.0)
    else:  # equilateral triangle with circumradius 1: three half-planes at distance 1/2
        inside = np.ones_like(u, dtype=bool)
        for angle in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
            inside &= np.cos(angle) * u + np.sin(angle) * v <= 0.5
    if "cue" in factors and int(factors["cue"]):
        side = max(m // 8, SUPERSAMPLE)
        cue = np.zeros((m, m), dtype=bool)
        cue[SUPERSAMPLE : SUPERSAMPLE + side, SUPERSAMPLE : SUPERSAMPLE + side] = True
    else:
        cue = None
    cover = box_average(inside, size)
    colour = _hsv_to_rgb(float(factors["hue"]), 0.8, float(factors["brightness"]))
    image = float(factors["background"]) + cover[..., None] * (
        colour - float(factors["background"])
    )
    if cue is not None:
        mark = box_average(cue, size)
        image = image + mark[..., None] * (np.ones(3) - image)
    return to_uint8(image)


def _truth(variant: str, size: int, cue_agreement: float, seed: int, n: int) -> dict:
    edges = list(_EDGES) + ([("label", "cue")] if variant == "spurious" else [])
    factors = list(SHAPES_FACTORS) + (["cue"] if variant == "spurious" else [])
    truth: dict[str, Any] = {
        "generator": GENERATOR,
        "variant": variant,
        "image_size": size,
        "seed": seed,
        "n": n,
        **dag_truth(factors, edges),
        "label_rule": {
            "factors": ["size"],
            "expression": f"label = 1 if size >= {SIZE_THRESHOLD} else 0",
            "classes": ["small", "large"],
        },
        "categorical": {"shape": {str(k): v for k, v in SHAPE_CODES.items()}},
        "units": {
            "rotation": "degrees",
            "size": "area-equivalent diameter, fraction of image side",
            "hue": "[0, 1)",
        },
        "spurious": None,
    }
    if variant == "spurious":
        truth["spurious"] = {
            "factor": "cue",
            "description": "white square marker in the top-left corner when cue = 1",
            "agreement_with_label": {
                "train": cue_agreement,
                "test": cue_agreement,
                "test_reversed": 1.0 - cue_agreement,
            },
        }
    return truth


def generate_shapes(
    out: str | os.PathLike[str],
    *,
    n: int = 10_000,
    size: int = 32,
    variant: Literal["plain", "spurious"] = "plain",
    seed: int = 0,
    cue_agreement: float = 0.95,
    n_jobs: int | None = None,
    chunk_size: int = 500,
    progress: bool = False,
    force: bool = False,
) -> Path:
    """Write a causal-shapes dataset to ``out`` (replaced atomically when complete).

    Parameters
    ----------
    out
        Output directory (layout in the module docstring), with a ``MANIFEST.json``.
    n
        Images in ``train`` + ``test`` (80 % / 20 %); the spurious variant also writes
        ``test_reversed``, a copy of ``test`` with the cue reversed.
    size
        Image side in pixels: 32 or 64.
    variant
        ``"plain"`` or ``"spurious"``.
    seed
        Seed of every random choice: the same seed gives the same files.
    cue_agreement
        Spurious variant: probability that the cue equals the label in ``train`` and ``test``.
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
        Invalid ``n``, ``size``, ``variant``, ``seed`` or ``cue_agreement``.
    """
    check_n_and_seed(n, seed)
    if size not in (32, 64):
        raise DataValidationError(f"size must be 32 or 64; got {size!r}")
    if variant not in ("plain", "spurious"):
        raise DataValidationError(f"variant must be 'plain' or 'spurious'; got {variant!r}")
    if not 0.5 <= cue_agreement <= 1.0:
        raise DataValidationError(f"cue_agreement must lie in [0.5, 1]; got {cue_agreement!r}")
    check_output_dir(out, "truth.json", GENERATOR, force=force)
    rng = np.random.default_rng(seed)
    factors = sample_shape_factors(n, rng)
    if variant == "spurious":
        agree = rng.random(n) < cue_agreement
        factors["cue"] = np.where(agree, factors["label"], 1 - factors["label"])
    tables = split_tables(factors, n, TRAIN_FRACTION)
    if variant == "spurious":
        tables["test_reversed"] = dict(tables["test"], cue=1 - tables["test"]["cue"])
    with atomic_directory(out) as tmp:
        write_splits(
            tmp,
            tables,
            render_shape,
            size=size,
            integer_columns=("shape", "cue"),
            n_jobs=n_jobs,
            chunk_size=chunk_size,
            progress=progress,
            desc="shapes",
        )
        atomic_write_json(tmp / "truth.json", _truth(variant, size, cue_agreement, seed, n))
    logger.info("wrote %d %s shapes (%d px) to %s", n, variant, size, out)
    return Path(out)
