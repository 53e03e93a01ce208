"""Calibrated interventions: one standard deviation of a context asked, one drawn, nothing else.

The twin intervenes on a context by moving its aligned dimension. A generator that also draws a
context from other contexts' dimensions (those the data tie it to) then under-draws the asked
change and lets other contexts drift with it, and the real classifier judges that image:
an explanation then ranks the contexts below the top one by how well the generator draws each,
not by how much the classifier uses it (``docs/faithfulness.md``, "Where the entanglement
enters").

:func:`measure_readback` measures, once per fit, what the generator draws: a context reader
fitted on the real training images (:mod:`glance.metrics.readers`, its own seed, so not the
reader ``evaluate`` reports with) reads every context on ``G(z')`` after each context's aligned
dimension alone is moved, giving the matrix ``A[j, k]``: the change of context ``k`` read on the
image, in its standard deviations, per standard deviation of context ``j`` asked.

:func:`intervention_basis` turns it into the moves the twin makes (:class:`~glance.explain.Twin`
``node_render``): for context ``j`` the combination ``Δ`` of aligned
dimensions whose read changes are one standard deviation of ``j`` and zero for every context
that is neither a descendant of ``j`` in the causal graph (those follow through the SCM) nor
tied to it in the data (a reader of observational data cannot tell the two apart): the linear
system ``Δ · A[S, S] = e_j`` over those contexts ``S``. It is a first-order correction around
the training images, bounded (:data:`MAX_STEP_RATIO`, :data:`MAX_CORRECTION`) and left out for a
context the reader cannot read or the generator barely draws. The twin applies it to the
intervened context's own change; what the SCM moves downstream is drawn as the uncalibrated twin
draws it (through the calibration too, a descendant tied to its parent in the data was drawn as
far as a reader that reads one through the other asked), and the SCM keeps working in the
contexts' own units.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "READBACK_DELTAS",
    "MIN_DRAWN",
    "MAX_STEP_RATIO",
    "MAX_CORRECTION",
    "DRAWN_FAITHFUL",
    "partly_drawn",
    "measure_readback",
    "intervention_basis",
    "drawn_fractions",
]

#: Shifts (context stds) at which the read-back is measured; the slope through them is ``A``.
READBACK_DELTAS = (-1.0, -0.5, 0.5, 1.0)
#: A context whose own drawn change is below this fraction of the asked one is left as it is: a
#: bigger step would ask the generator for what it does not draw, not for more of it.
MIN_DRAWN = 0.2
#: A calibrated step is at most this many times (and at least its inverse) the uncalibrated one.
MAX_STEP_RATIO = 3.0
#: Largest move of another context's dimension per unit move of the intervened one.
MAX_CORRECTION = 1.0
#: Above this condition number the system is not trusted: the step is calibrated on the
#: diagonal alone, with no correction.
MAX_CONDITION = 100.0
#: A context drawn within this band of the asked change is drawn faithfully enough that its
#: importance is not flagged; outside it an explanation says how much is drawn.
DRAWN_FAITHFUL = (0.8, 1.25)


def partly_drawn(fraction: float | None) -> bool:
    """Whether a context drawn at ``fraction`` of an asked change is outside
    :data:`DRAWN_FAITHFUL` (``None``, not measured, is not flagged)."""
    return fraction is not None and not DRAWN_FAITHFUL[0] <= fraction <= DRAWN_FAITHFUL[1]


@torch.no_grad()
def measure_readback(
    encode: Callable[[torch.Tensor], torch.Tensor],
    generate: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    read: Callable[[torch.Tensor], np.ndarray],
    node_std: Sequence[float],
    *,
    readable: Sequence[bool],
    discrete: Sequence[bool],
    read_std: Sequence[float],
    cross: Sequence[bool] | None = None,
    deltas: Sequence[float] = READBACK_DELTAS,
) -> np.ndarray:
    """``A`` (m, m): the change of context ``k`` read on ``G(z')`` (in its stds) per std of
    context ``j`` asked, when only ``j``'s aligned dimension moves by ``δ · node_std[j]``.

    NaN where it is not measured: a row or column of a context the reader cannot read or a
    discrete context (a step is a level there, not a length). Tied pairs are measured too:
    :func:`intervention_basis` leaves them out of each other's constraints, not out of ``A``.

    Parameters
    ----------
    encode, generate
        The twin's encoder and generator; the first ``m`` concept dims are the contexts.
    images
        Real images (N, C, H, W) in [0, 1] to measure around (training images).
    read
        ``images -> (N, m)`` the contexts in raw units, columns in context order.
    node_std
        One std of each context in ``z`` units (the uncalibrated step).
    readable, discrete
        Per context.
    cross
        Per context, whether its read may enter another context's row or column (default:
        all). A measure that reads a context unlike the classifier does (e.g. a thickness
        measured on a binarised digit) calibrates that context's own step but must not be used
        to hold it still for another.
    read_std
        Per context, its std in raw units (the read change is divided by it).
    deltas
        Shifts in stds of the context.
    """
    m = len(node_std)
    a = np.full((m, m), np.nan)
    if m == 0 or len(images) == 0:
        return a
    z = encode(images).float()
    base = np.asarray(read(generate(z)), dtype=np.float64)
    sd = np.asarray(read_std, dtype=np.float64)
    use = [bool(r) and not bool(d) for r, d in zip(readable, discrete, strict=True)]
    cross = [True] * m if cross is None else [bool(c) for c in cross]
    for j in range(m):
        if not use[j]:
            continue
        changes = []
        for dl in deltas:
            zp = z.clone()
            zp[:, j] += float(dl) * float(node_std[j])
            changes.append((np.asarray(read(generate(zp)), dtype=np.float64) - base) / sd)
        x = np.repeat(np.asarray(deltas, dtype=np.float64), len(z))
        y = np.concatenate(changes)  # delta-major, (G * N, m)
        for k in range(m):
            if use[k] and (k == j or (cross[j] and cross[k])):
                ok = np.isfinite(y[:, k])
                if ok.sum() > 1:
                    a[j, k] = float(np.polyfit(x[ok], y[ok, k], 1)[0])
    return a


def intervention_basis(
    readback: np.ndarray, tied: np.ndarray, descendants: Callable[[int], Any]
) -> tuple[np.ndarray, np.ndarray]:
    """``(step, correction)`` from a read-back matrix ``A`` (:func:`measure_readback`).

    ``step[j]``: how far context ``j``'s dimension moves, in its uncalibrated steps, per
    standard deviation of ``j`` asked (1 where not calibrated). ``correction[j, k]``: how far
    context ``k``'s dimension moves with it, in ``k``'s uncalibrated steps (0 on the diagonal
    and where not corrected; scaled down with ``step[j]`` where that was bounded). ``tied`` is
    :func:`glance.training.tasks.tied_pairs` of the training contexts; ``descendants(j)``
    gives the context indices below ``j`` in the causal graph.
    """
    a = np.asarray(readback, dtype=np.float64)
    m = a.shape[0]
    step, corr = np.ones(m), np.zeros((m, m))
    for j in range(m):
        if not np.isfinite(a[j, j]) or a[j, j] < MIN_DRAWN:
            continue
        below = set(descendants(j))
        s = [
            k
            for k in range(m)
            if k == j
            or (
                k not in below
                and not tied[j, k]
                and np.isfinite(a[j, k])
                and np.isfinite(a[k, k])
                and a[k, k] >= MIN_DRAWN
            )
        ]
        sub = a[np.ix_(s, s)]
        target = np.array([1.0 if k == j else 0.0 for k in s])
        delta = None
        if np.all(np.isfinite(sub)) and np.linalg.cond(sub) <= MAX_CONDITION:
            delta = np.linalg.solve(sub.T, target)
            if not (delta[s.index(j)] > 0):
                delta = None
        if delta is None:  # diagonal only
            step[j] = float(np.clip(1.0 / a[j, j], 1.0 / MAX_STEP_RATIO, MAX_STEP_RATIO))
            continue
        own = float(delta[s.index(j)])
        step[j] = float(np.clip(own, 1.0 / MAX_STEP_RATIO, MAX_STEP_RATIO))
        for k, v in zip(s, delta, strict=True):
            if k != j:
                corr[j, k] = float(np.clip(v / own * step[j], -MAX_CORRECTION, MAX_CORRECTION))
    return step, corr


def drawn_fractions(
    readback: np.ndarray, render: np.ndarray | None, node_std: Sequence[float]
) -> np.ndarray:
    """What fraction of an asked change of each context the image shows, (m,), NaN where not
    measured: ``Σ_k (std_j · render[j, k] / std_k) · A[k, j]`` over the measured ``A[k, j]``,
    the first-order prediction through the calibrated moves (``node_render``'s context block);
    with no ``render`` (an uncalibrated twin) that is the diagonal of ``readback``."""
    a = np.asarray(readback, dtype=np.float64)
    m = a.shape[0]
    std = np.asarray(node_std, dtype=np.float64)[:m]
    r = np.eye(m) if render is None else np.asarray(render, dtype=np.float64)[:m, :m]
    moves = r * std[:, None] / std[None, :]
    out = (moves * np.where(np.isfinite(a), a, 0.0).T).sum(1)
    return np.where(np.isfinite(np.diag(a)), out, np.nan)
