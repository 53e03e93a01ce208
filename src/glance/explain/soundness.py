"""Soundness of counterfactuals (plain functions → JSON-ready dicts).

Counterfactual soundness follows Monteiro et al. (2023, "Measuring axiomatic soundness of
counterfactual image models"):

- :func:`effectiveness` — intervening on an aligned context changes the context *measured on the
  generated image* the right way (with glance's morphometrics, or a context reader of
  :mod:`glance.metrics.readers`); :func:`specificity_from` — and leaves the contexts that are not
  its descendants alone (cross-talk);
- :func:`composition` — the null intervention reproduces the reconstruction (and re-encoding the
  reconstruction comes back to it);
- :func:`reversibility` — undoing an intervention comes back to the reconstruction.

Every check returns a JSON-ready dict for ``metrics.json``. The sanity check of the importances
lives in :mod:`glance.explain.randomisation`, their deletion / insertion faithfulness in
:mod:`glance.explain.deletion`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from glance.exceptions import ConfigError, ShapeError
from glance.explain._common import as_twin
from glance.explain._twin import Twin

__all__ = [
    "DELTAS",
    "InterventionReadout",
    "read_interventions",
    "effectiveness",
    "effectiveness_from",
    "specificity_from",
    "composition",
    "reversibility",
]


def _node(twin: Twin, node: str | int, caller: str) -> int:
    if isinstance(node, int) and 0 <= node < twin.n_nodes:
        return node
    if node in twin.nodes:
        return twin.nodes.index(node)
    raise ConfigError(f"'node' of {caller} must be one of {list(twin.nodes)}; got {node!r}")


def _l1(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return (a - b).abs().flatten(1).mean(1).cpu().numpy()


def _pred(twin: Twin, x: torch.Tensor) -> np.ndarray:
    return twin.classify(x).argmax(1).cpu().numpy()


#: Shifts (node std units) of the effectiveness and specificity interventions.
DELTAS = (-2.0, -1.5, -1.0, -0.5, 0.5, 1.0, 1.5, 2.0)


@dataclasses.dataclass(frozen=True)
class InterventionReadout:
    """What a measurement read on ``G(z')`` for ``do(node = node + δ)``, every image and shift.

    Built by :func:`read_interventions`; summarised by :func:`effectiveness_from` (the node's own
    column) and :func:`specificity_from` (the other columns).

    Attributes
    ----------
    node
        The node intervened on.
    deltas
        The shifts asked for (node std units), length ``G``.
    shifts
        The shift actually made in ``z`` units, shape (N, G) (an intervention is clipped to the
        node's support).
    node_std
        One std of the node in ``z`` units (the twin's step): ``shifts / node_std`` is the
        change asked for in node stds.
    base
        The measurement on ``G(E(x))``, shape (N, m).
    after
        The measurement on ``G(z')``, shape (N, G, m).
    """

    node: str
    deltas: tuple[float, ...]
    shifts: np.ndarray
    base: np.ndarray
    after: np.ndarray
    node_std: float = 1.0

    @property
    def change(self) -> np.ndarray:
        """Measured change ``after - base``, shape (N, G, m)."""
        return self.after - self.base[:, None, :]


def _columns(values: Any, n: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[:, None] if arr.ndim == 1 else arr
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ShapeError(
            f"'measure' must return shape (N,) or (N, m) for N = {n} images; got {arr.shape}"
        )
    return arr


@torch.no_grad()
def read_interventions(
    model: Any,
    images: torch.Tensor,
    node: str | int,
    measure: Callable[[torch.Tensor], np.ndarray],
    *,
    deltas: Sequence[float] = DELTAS,
) -> InterventionReadout:
    """Intervene ``do(node = node + δ)`` for every shift and read ``G(z')`` with ``measure``.

    Parameters
    ----------
    model
        A fitted :class:`glance.Glance` or a :class:`~glance.explain.Twin`.
    images
        Float images in ``[0, 1]``, shape (N, C, H, W).
    node
        The node (name or index).
    measure
        ``images -> values`` of shape (N,) or (N, m): one attribute, or several read at once
        (e.g. every context, by a :class:`glance.metrics.readers.ContextReader`).
    deltas
        Shifts in node std units (total interventions: the SCM moves the descendants).
    """
    twin = as_twin(model)
    j = _node(twin, node, "read_interventions")
    z = twin.encode(images).float()
    base = _columns(measure(twin.generate(z)), len(z))
    shifts, after = [], []
    for dl in deltas:
        new = twin.shift(j, z[:, j], torch.full_like(z[:, j], float(dl)))
        zp = twin.intervene(z, {j: new})
        after.append(_columns(measure(twin.generate(zp)), len(z)))
        # The shift actually asked for after clipping to the node's support, in the node's own
        # units (what a calibrated twin draws it with is its business: Twin.node_render).
        made = twin.clip_node(j, new, z[:, j]) - z[:, j]
        shifts.append(made.cpu().numpy().astype(np.float64))
    return InterventionReadout(
        node=twin.nodes[j],
        deltas=tuple(float(d) for d in deltas),
        shifts=np.stack(shifts, 1),
        base=base,
        after=np.stack(after, 1),
        node_std=float(twin.node_std[j]),
    )


@torch.no_grad()
def effectiveness(
    model: Any,
    images: torch.Tensor,
    node: str | int,
    measure: Callable[[torch.Tensor], np.ndarray],
    *,
    deltas: Sequence[float] = DELTAS,
    unit: float = 1.0,
) -> dict[str, Any]:
    """Does ``do(node = node + δ)`` change the measured attribute of ``G(z')`` the right way?

    Parameters
    ----------
    model
        A fitted :class:`glance.Glance` or a :class:`~glance.explain.Twin`.
    images
        Float images in ``[0, 1]``, shape (N, C, H, W).
    node
        The aligned context node (name or index).
    measure
        ``images -> values (N,)``: the attribute measured on images (e.g. morphometric thickness,
        or a context reader's column).
    deltas
        Shifts in node std units.
    unit
        Attribute units per node std (``context_std_`` of the node) for the calibration slope.

    Returns
    -------
    dict
        See :func:`effectiveness_from`.
    """
    readout = read_interventions(model, images, node, measure, deltas=deltas)
    return effectiveness_from(readout, unit=unit)


def effectiveness_from(
    readout: InterventionReadout, *, column: int = 0, unit: float = 1.0
) -> dict[str, Any]:
    """Effectiveness of the intervention of ``readout``, measured by its column ``column``.

    Returns
    -------
    dict
        ``spearman`` between the intended shift and the measured change (all images and shifts
        pooled), ``per_image_spearman`` (mean), ``slope`` of change on intended change (1 is
        perfect calibration), ``mean_abs_error`` of the change in attribute units, counts.
    """
    # the change asked for: node stds made (after clipping), in attribute units
    intended = readout.shifts / readout.node_std * unit  # [N, G]
    change = readout.change[:, :, column]
    ok = np.isfinite(change).all(1)
    per = [_rank_corr(intended[i], change[i]) for i in np.flatnonzero(ok)]
    per = [r for r in per if np.isfinite(r)]
    x, y = intended[ok].ravel(), change[ok].ravel()
    slope = float(np.polyfit(x, y, 1)[0]) if x.size > 1 else float("nan")
    return {
        "node": readout.node,
        "deltas": list(readout.deltas),
        "spearman": _rank_corr(x, y),
        "per_image_spearman": float(np.mean(per)) if per else float("nan"),
        "slope": slope,
        "mean_abs_error": float(np.mean(np.abs(y - x))) if x.size else float("nan"),
        "n_images": int(ok.sum()),
        "n_unmeasurable": int((~ok).sum()),
    }


def _rank_corr(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman of two vectors; NaN when either is constant (no ranking: nothing changed)."""
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b)[0])


def specificity_from(
    readout: InterventionReadout,
    names: Sequence[str],
    *,
    scale: Sequence[float] | None = None,
    exclude: Sequence[str] = (),
) -> dict[str, Any]:
    """Cross-talk of an intervention: how much it moves the *other* measured attributes.

    For the node ``k`` of ``readout`` (one of ``names``) and every other column ``j`` not in
    ``exclude`` (the node's descendants, which *should* move): the mean absolute measured change
    of ``j`` as a fraction of that of ``k``, both in units of ``scale`` (e.g. each context's
    std), pooled over images and shifts. 0 is a perfectly specific intervention.

    Parameters
    ----------
    readout
        From :func:`read_interventions`, with one column per name.
    names
        Column names; the readout's node must be one of them.
    scale
        Per column, the size of one unit (default 1).
    exclude
        Columns left out (the node's descendants in the causal graph).

    Returns
    -------
    dict
        ``cross_talk`` {name: fraction}, the ``worst`` fraction and its ``worst_context``
        (``None`` when no column is compared), ``change`` (mean absolute change of the node in
        its units), ``excluded`` (the names left out), ``n_images``.
    """
    names = [str(n) for n in names]
    if readout.node not in names or readout.change.shape[2] != len(names):
        raise ConfigError(
            f"'names' of specificity_from must name the readout's {readout.change.shape[2]} "
            f"columns, including its node {readout.node!r}; got {names}"
        )
    unit = np.ones(len(names)) if scale is None else np.asarray(scale, dtype=np.float64)
    change = np.abs(readout.change) / unit  # [N, G, m]
    ok = np.isfinite(change).all(axis=(1, 2))
    mean = change[ok].mean(axis=(0, 1)) if ok.any() else np.full(len(names), np.nan)
    k = names.index(readout.node)
    own = float(mean[k])
    cross: dict[str, float | None] = {}
    for j, name in enumerate(names):
        if j == k or name in exclude:
            continue
        cross[name] = float(mean[j] / own) if own > 0 and np.isfinite(own) else None
    valid = {n: v for n, v in cross.items() if v is not None and np.isfinite(v)}
    worst = max(valid, key=valid.__getitem__) if valid else None
    return {
        "node": readout.node,
        "cross_talk": cross,
        "worst": valid[worst] if worst is not None else None,
        "worst_context": worst,
        "change": own,
        "excluded": [n for n in names if n in exclude and n != readout.node],
        "n_images": int(ok.sum()),
    }


@torch.no_grad()
def composition(model: Any, images: torch.Tensor) -> dict[str, Any]:
    """The null intervention must reproduce the reconstruction.

    Returns
    -------
    dict
        ``null_latent_max_abs``: largest change of ``z`` when every node with descendants is
        set, through the SCM counterfactual, to its own value (0 when abduction is exact);
        ``null_image_l1``: mean absolute pixel change of ``G(z')`` against ``G(E(x))``;
        ``cycle_image_l1`` and ``cycle_class_agreement``: ``G(E(G(E(x))))`` against
        ``G(E(x))`` (re-encoding the reconstruction must come back to it).
    """
    twin = as_twin(model)
    z = twin.encode(images).float()
    recon = twin.generate(z)
    worst = torch.zeros(z.shape[0])
    z_null = z.clone()
    if twin.scm is not None:
        for j in range(twin.n_nodes):
            if twin.descendants(j):
                cf = twin.scm.counterfactual(z.double().numpy(), {j: z[:, j].double().numpy()})
                zj = torch.as_tensor(cf, dtype=z.dtype)
                worst = torch.maximum(worst, (zj - z).abs().amax(1))
                z_null = zj
    again = twin.generate(twin.encode(recon).float())
    return {
        "null_latent_max_abs": float(worst.max()),
        "null_image_l1": float(_l1(twin.generate(z_null), recon).mean()),
        "cycle_image_l1": float(_l1(again, recon).mean()),
        "cycle_class_agreement": float(np.mean(_pred(twin, again) == _pred(twin, recon))),
        "n_images": int(z.shape[0]),
    }


@torch.no_grad()
def reversibility(
    model: Any, images: torch.Tensor, *, delta: float = 1.0, nodes: Sequence[str] | None = None
) -> dict[str, Any]:
    """Intervene ``do(v = v + δ)``, re-encode the generated image, intervene back, compare.

    Returns
    -------
    dict
        Per node and on average: ``image_l1`` between the round trip and ``G(E(x))`` and
        ``class_agreement`` of the real classifier on the two.
    """
    twin = as_twin(model)
    idx = [_node(twin, n, "reversibility") for n in (nodes or twin.nodes)]
    z = twin.encode(images).float()
    recon = twin.generate(z)
    recon_cls = _pred(twin, recon)
    l1, agree = {}, {}
    for j in idx:
        zp = twin.intervene(z, {j: twin.shift(j, z[:, j], torch.full_like(z[:, j], float(delta)))})
        back_z = twin.intervene(twin.encode(twin.generate(zp)).float(), {j: z[:, j]})
        back = twin.generate(back_z)
        l1[twin.nodes[j]] = float(_l1(back, recon).mean())
        agree[twin.nodes[j]] = float(np.mean(_pred(twin, back) == recon_cls))
    return {
        "delta": float(delta),
        "image_l1": l1,
        "class_agreement": agree,
        "mean_image_l1": float(np.mean(list(l1.values()))),
        "mean_class_agreement": float(np.mean(list(agree.values()))),
        "n_images": int(z.shape[0]),
    }
