"""Chunked work on every core (joblib / loky) with an optional tqdm bar."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from glance.exceptions import DataValidationError


def resolve_n_jobs(n_jobs: int | None) -> int:
    """``n_jobs`` as a positive worker count (None or -1: every core this process may use)."""
    if n_jobs is None or n_jobs == -1:
        if hasattr(os, "sched_getaffinity"):
            return max(1, len(os.sched_getaffinity(0)))
        return os.cpu_count() or 1
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs < 1:
        raise DataValidationError(f"n_jobs must be a positive integer, -1 or None; got {n_jobs!r}")
    return int(n_jobs)


def run_chunks(
    func: Callable[[Any, Mapping[str, Any]], Any],
    chunks: Sequence[Any],
    kwargs: Mapping[str, Any],
    n_jobs: int | None,
    *,
    progress: bool = False,
    desc: str = "",
    min_parallel_chunks: int = 4,
) -> list[Any]:
    """``[func(chunk, kwargs) for chunk in chunks]``, in order, on up to ``n_jobs`` processes.

    ``func`` must be a module-level function (it is sent to worker processes by reference).
    With ``n_jobs=None`` (automatic), fewer than ``min_parallel_chunks`` chunks run in this
    process: starting workers (each imports glance and torch, ~2 s) would cost more than it saves.
    """
    from tqdm.auto import tqdm

    workers = min(resolve_n_jobs(n_jobs), len(chunks))
    if n_jobs is None and len(chunks) < min_parallel_chunks:
        workers = 1
    bar = tqdm(total=len(chunks), desc=desc, unit="chunk", disable=not progress, leave=False)
    out: list[Any] = []
    try:
        if workers <= 1:
            for chunk in chunks:
                out.append(func(chunk, kwargs))
                bar.update()
            return out
        from joblib import Parallel, delayed

        # loky keeps its workers alive between calls, so their start-up cost is paid once.
        parallel = Parallel(n_jobs=workers, backend="loky", return_as="generator")
        for result in parallel(delayed(func)(chunk, kwargs) for chunk in chunks):
            out.append(result)
            bar.update()
        return out
    finally:
        bar.close()
