"""What the scene generators (causal shapes, pendulum) share: supersampled rasters, argument
checks, the train/test split, the ``factors.csv`` table, chunked PNG writing and the DAG keys
of ``truth.json``."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from glance.data._csv import write_csv
from glance.data._parallel import run_chunks
from glance.exceptions import DataValidationError

#: Samples per pixel side: scenes are drawn on a ``SUPERSAMPLE * size`` grid and area-averaged.
SUPERSAMPLE = 4


def sample_centres(size: int) -> np.ndarray:
    """Centres of the ``SUPERSAMPLE * size`` samples along one image side, in [0, 1]."""
    m = size * SUPERSAMPLE
    return (np.arange(m) + 0.5) / m


def box_average(samples: np.ndarray, size: int) -> np.ndarray:
    """Area-average a ``(m, m, ...)`` sample grid down to ``(size, size, ...)`` pixels."""
    return samples.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, *samples.shape[2:]).mean(
        axis=(1, 3)
    )


@functools.lru_cache(maxsize=4)
def _pixel_of_sample(size: int) -> np.ndarray:
    """Flat index of the pixel each sample of the ``(m, m)`` grid falls in."""
    pixel = np.arange(size * SUPERSAMPLE) // SUPERSAMPLE
    return (pixel[:, None] * size + pixel[None, :]).ravel()


def paint(index: np.ndarray, palette: np.ndarray, size: int) -> np.ndarray:
    """Colour an ``(m, m)`` grid of palette indices and area-average it: ``(size, size, C)``.

    Counts the samples of each colour per pixel rather than averaging a colour grid (the
    same image, several times faster).
    """
    k = len(palette)
    flat = _pixel_of_sample(size) * k + index.ravel()
    counts = np.bincount(flat, minlength=size * size * k).reshape(size, size, k)
    return counts @ palette / SUPERSAMPLE**2


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A [0, 1] float image as uint8 (clipped, rounded)."""
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def check_n_and_seed(n: Any, seed: Any) -> None:
    """Reject an image count below 2 (one per split) or a seed that is not an integer >= 0."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise DataValidationError(f"n must be an integer >= 2 (one image per split); got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataValidationError(f"seed must be a non-negative integer; got {seed!r}")


def split_tables(
    factors: Mapping[str, np.ndarray], n: int, train_fraction: float
) -> dict[str, dict[str, np.ndarray]]:
    """``{"train": ..., "test": ...}``: the first ``train_fraction`` of the rows, then the rest
    (each split keeps at least one row)."""
    n_train = min(max(int(round(train_fraction * n)), 1), n - 1)
    splits = {"train": slice(0, n_train), "test": slice(n_train, n)}
    return {split: {k: v[sl] for k, v in factors.items()} for split, sl in splits.items()}


def write_splits(
    root: Path,
    tables: Mapping[str, Mapping[str, np.ndarray]],
    render: Callable[[Mapping[str, Any], int], np.ndarray],
    *,
    size: int,
    integer_columns: Iterable[str] = (),
    n_jobs: int | None = None,
    chunk_size: int = 500,
    progress: bool = False,
    desc: str = "",
) -> None:
    """Write ``root/<split>/factors.csv`` and ``root/<split>/images/NNNNNN.png`` for every table.

    ``render(row, size)`` (a module-level function: it is sent to the workers by reference)
    draws the uint8 ``(size, size, 3)`` image of one row of factors; ``label`` is a column.
    """
    integer_columns = tuple(integer_columns)
    jobs = []
    for split, table in tables.items():
        folder = root / split / "images"
        folder.mkdir(parents=True)
        m = len(table["label"])
        for i in range(0, m, chunk_size):
            jobs.append((folder, i, {k: v[i : i + chunk_size] for k, v in table.items()}))
        _write_factors(root / split / "factors.csv", table, integer_columns)
    kw = {"size": size, "render": render}
    run_chunks(_render_chunk, jobs, kw, n_jobs, progress=progress, desc=desc)


def _render_chunk(chunk: tuple[Path, int, dict[str, np.ndarray]], kw: Mapping[str, Any]) -> int:
    folder, start, factors = chunk
    n = len(factors["label"])
    for k in range(n):
        img = kw["render"]({name: col[k] for name, col in factors.items()}, kw["size"])
        # Written directly: the whole dataset directory is renamed into place only when complete.
        Image.fromarray(img).save(folder / f"{start + k:06d}.png", optimize=False)
    return n


def _write_factors(
    path: Path, table: Mapping[str, np.ndarray], integer_columns: Sequence[str]
) -> None:
    names = [k for k in table if k != "label"]
    m = len(table["label"])
    files = [f"images/{k:06d}.png" for k in range(m)]
    columns = [files, table["label"]]
    columns += [table[k] if k in integer_columns else table[k].astype(np.float64) for k in names]
    write_csv(path, ["filename", "label", *names], columns)


def dag_truth(
    factors: Sequence[str], edges: Sequence[tuple[str, str]], label: str = "label"
) -> dict[str, Any]:
    """The graph keys of ``truth.json``: ``factors``, ``nodes``, ``edges`` and ``roots``."""
    return {
        "factors": list(factors),
        "nodes": [*factors, label],
        "edges": [{"source": a, "target": b} for a, b in edges],
        "roots": [f for f in factors if all(t != f for _, t in edges)],
    }
