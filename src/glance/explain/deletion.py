"""Concept-level deletion / insertion faithfulness of the importance ranking.

:func:`deletion_insertion` (RELIABILITY c.6, Petsiuk et al. 2018, with concepts in place of
pixels): removing the most important concepts first must lower ``p(target)`` faster, and
restoring them first raise it faster, than random orders. It returns a JSON-ready dict for
``metrics.json``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.stats import wilcoxon

from glance.exceptions import ConfigError, ShapeError
from glance.explain._common import as_twin
from glance.explain._engine import Renderer
from glance.explain._twin import Twin
from glance.explain.explanation import LocalExplanation
from glance.explain.importance import InterventionalImportance

__all__ = ["deletion_insertion"]


_CONCEPT_NOTE = (
    "Deletions are of concepts (a node set to its baseline and the image re-rendered by the "
    "twin), not of pixels, so the pixel-level baselines of RELIABILITY c.6 (a Sobel edge-map "
    "ranking, ROAD's noisy-linear imputation) do not apply; the control is random concept orders."
)
_TIE = 1e-12  # AUC differences below this are float noise (equal curves), counted as ties


@torch.no_grad()
def deletion_insertion(
    model: Any,
    images: torch.Tensor,
    explanation: LocalExplanation | None = None,
    *,
    n_random_orders: int = 10,
    random_state: int = 0,
    direct: bool = True,
) -> dict[str, Any]:
    """Concept-level deletion / insertion faithfulness of the importance ranking (c.6).

    For each image the nodes are ordered by their importance. *Deletion* sets the top-1,
    top-2, ..., all nodes to a baseline and re-renders ``G(z')``; *insertion* starts from every
    node at the baseline and restores the nodes in the same order. The *real* classifier's
    ``p(target)`` on each image gives two curves of ``n_nodes + 1`` points (deletion starts at
    the reconstruction ``G(E(x))`` and ends at the all-baseline image; insertion the reverse).
    Each curve is summarised by its AUC (trapezoid over the fraction of nodes, ``[0, 1]``) and
    compared with ``n_random_orders`` random orders of the same image. A faithful ranking gives
    a lower deletion AUC and a higher insertion AUC than random orders.

    The baseline of a node is the mean of ``twin.encode`` over ``images``: the :class:`Twin`
    does not store a population mean of ``z``, so pass a representative set of images (the
    held-out split), not a handful of similar ones.

    Parameters
    ----------
    model
        A fitted :class:`glance.Glance` or a :class:`~glance.explain.Twin`.
    images
        Float images in ``[0, 1]``, shape (N, C, H, W).
    explanation
        A :class:`~glance.explain.LocalExplanation` of these ``images`` (same order); its
        ``target`` is the class tracked. ``None``: computed with
        :class:`~glance.explain.InterventionalImportance` (target = the predicted class).
    n_random_orders
        Random orders per image (the control), at least 1.
    random_state
        Seed of the random orders.
    direct
        ``True``: deleted nodes are set without propagation (direct interventions), and nodes
        are ranked by ``direct_importance`` when the explanation has it. ``False``: the twin's
        SCM propagates each deletion to the descendants that are not themselves deleted
        (``twin.intervene(..., total=True)``), and nodes are ranked by the total ``importance``.

    Returns
    -------
    dict
        ``deletion_auc`` and ``insertion_auc``: ``{"ours", "random"}`` means over images;
        ``deletion_below_random`` / ``insertion_above_random``: share of images whose AUC beats
        the mean of its random orders, ``both_beat_random`` both at once; ``wilcoxon_p``:
        one-sided paired Wilcoxon p-values ``{"deletion", "insertion"}`` (1.0 when every
        difference is zero); ``per_image`` AUCs and curves (ours and the random mean);
        ``fractions`` (x axis), ``target`` and ``target_classes`` per image, ``baseline``,
        ``ranking``, counts, and ``note`` on the pixel-level baselines.

    Raises
    ------
    ConfigError
        Bad ``n_random_orders``, or an ``explanation`` that does not match ``images``/``model``.

    References
    ----------
    Petsiuk, Das & Saenko (2018), "RISE: Randomized input sampling for explanation of black-box
    models" (deletion and insertion metrics).
    """
    twin = as_twin(model)
    if isinstance(n_random_orders, bool) or not isinstance(n_random_orders, (int, np.integer)):
        raise ConfigError(
            f"'n_random_orders' of deletion_insertion must be a positive int; got "
            f"{n_random_orders!r}"
        )
    if n_random_orders < 1:
        raise ConfigError(
            f"'n_random_orders' of deletion_insertion must be >= 1; got {n_random_orders}"
        )
    x = _check_images(images, "deletion_insertion")
    exp = _matching_explanation(twin, x, explanation)
    imp, ranking = _ranking_importance(exp, direct)
    n, d = imp.shape
    z = torch.cat([twin.encode(x[s : s + 256]).float() for s in range(0, n, 256)])
    base = z.mean(0)
    rng = np.random.default_rng(random_state)
    ours = np.argsort(-imp, axis=1, kind="stable")[:, None]
    orders = np.concatenate([ours, rng.random((n, int(n_random_orders), d)).argsort(-1)], 1)
    renderer = Renderer(twin, batch_size=512, keep_images=False)
    curves = _deletion_insertion_curves(renderer, z, base, orders, exp.target, total=not direct)
    auc = (curves[..., :-1] + curves[..., 1:]).sum(-1) / (2.0 * d)  # [N, 1 + R, 2]
    summary = _compare_aucs(auc)
    per_image = summary.pop("per_image")
    target = np.asarray(exp.target, dtype=np.int64)
    return {
        **summary,
        "per_image": {
            **per_image,
            "deletion_curve": curves[:, 0, 0].tolist(),
            "insertion_curve": curves[:, 0, 1].tolist(),
            "random_deletion_curve": curves[:, 1:, 0].mean(1).tolist(),
            "random_insertion_curve": curves[:, 1:, 1].mean(1).tolist(),
        },
        "fractions": (np.arange(d + 1) / d).tolist(),
        "target": target.tolist(),
        "target_classes": [twin.classes[t] for t in target],
        "baseline": {
            "source": "mean of twin.encode over the given images",
            "values": dict(zip(twin.nodes, base.double().tolist(), strict=True)),
        },
        "ranking": ranking,
        "direct": bool(direct),
        "n_images": int(n),
        "n_nodes": int(d),
        "n_random_orders": int(n_random_orders),
        "random_state": random_state,
        "n_rendered": renderer.n_rendered,
        "note": _CONCEPT_NOTE,
    }


def _check_images(images: Any, caller: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ShapeError(f"'images' of {caller} must be a tensor (N, C, H, W), N >= 1; got {got}")
    return images.detach().float()


def _matching_explanation(
    twin: Twin, x: torch.Tensor, explanation: LocalExplanation | None
) -> LocalExplanation:
    """The given explanation after checking it matches; else one computed on ``x``."""
    if explanation is None:
        return InterventionalImportance(twin, keep_images=False).explain(x)
    if not isinstance(explanation, LocalExplanation):
        raise ConfigError(
            "'explanation' of deletion_insertion must be a LocalExplanation; got "
            f"{type(explanation).__name__}"
        )
    if len(explanation) != x.shape[0] or tuple(explanation.nodes) != twin.nodes:
        raise ConfigError(
            f"'explanation' of deletion_insertion covers {len(explanation)} images over nodes "
            f"{list(explanation.nodes)}; expected {x.shape[0]} images over {list(twin.nodes)} "
            "(explain the same images with the same model)"
        )
    return explanation


def _ranking_importance(exp: LocalExplanation, direct: bool) -> tuple[np.ndarray, str]:
    """Direct importances for direct deletions when the explanation has them, else total."""
    if direct and np.all(np.isfinite(exp.direct_importance)):
        return np.asarray(exp.direct_importance, dtype=np.float64), "direct"
    return np.nan_to_num(np.asarray(exp.importance, dtype=np.float64)), "total"


def _deletion_insertion_curves(
    renderer: Renderer,
    z: torch.Tensor,
    base: torch.Tensor,
    orders: np.ndarray,
    target: np.ndarray,
    *,
    total: bool,
) -> np.ndarray:
    """``p(target)`` along every curve, shape (N, n_orders, 2 [deletion, insertion], d + 1).

    Every ``z'`` of every image, order and step is built first; identical ones (the shared
    endpoints, coinciding prefixes) are rendered once, in one chunked generator pass.
    """
    n, n_orders, d = orders.shape
    pos = np.argsort(orders, axis=-1)  # rank of each node in each order
    steps = np.arange(d + 1)[:, None]
    first_k = pos[:, :, None, :] < steps  # [N, O, d + 1, d]: the first k nodes of the order
    # Deletion: the first k nodes at the baseline; insertion: the first k back, the rest at it.
    masks = np.stack([first_k, ~first_k], axis=2)  # [N, O, 2, d + 1, d]: True = at baseline
    img = np.broadcast_to(np.arange(n)[:, None, None, None], masks.shape[:-1]).reshape(-1)
    flat = masks.reshape(-1, d)
    keys, inverse = np.unique(np.column_stack([img, flat]), axis=0, return_inverse=True)
    rows, row_masks = keys[:, 0], keys[:, 1:].astype(bool)
    zp = _baseline_rows(renderer.twin, z[rows], base, row_masks, total)
    probs, _ = renderer(zp, "deletion_insertion")
    p = probs[np.arange(len(rows)), np.asarray(target)[rows]]
    return p[inverse.reshape(-1)].reshape(masks.shape[:-1])


def _baseline_rows(
    twin: Twin, z: torch.Tensor, base: torch.Tensor, mask: np.ndarray, total: bool
) -> torch.Tensor:
    """``z`` with the masked nodes at the baseline; with ``total`` the SCM moves the rest."""
    at_base = torch.as_tensor(mask)
    out = torch.where(at_base, base, z)
    if not total or twin.scm is None:
        return out
    has_desc = np.array([bool(twin.descendants(j)) for j in range(twin.n_nodes)])
    # Rows whose deleted nodes with descendants agree share one SCM call; deleted nodes
    # without descendants change nothing else, so they are set afterwards.
    keys, group = np.unique(mask & has_desc, axis=0, return_inverse=True)
    group = group.reshape(-1)
    for g, key in enumerate(keys):
        if not key.any():
            continue
        rows = np.flatnonzero(group == g)
        ivs = {int(j): base[j].expand(len(rows)) for j in np.flatnonzero(key)}
        zp = twin.intervene(z[rows], ivs, total=True)
        out[rows] = torch.where(at_base[rows], base, zp)
    return out


def _compare_aucs(auc: np.ndarray) -> dict[str, Any]:
    """Means, win rates and one-sided paired Wilcoxon tests of ours vs the random mean."""
    ours_del, rand_del = auc[:, 0, 0], auc[:, 1:, 0].mean(1)
    ours_ins, rand_ins = auc[:, 0, 1], auc[:, 1:, 1].mean(1)
    del_win = ours_del < rand_del - _TIE
    ins_win = ours_ins > rand_ins + _TIE
    return {
        "deletion_auc": {"ours": float(ours_del.mean()), "random": float(rand_del.mean())},
        "insertion_auc": {"ours": float(ours_ins.mean()), "random": float(rand_ins.mean())},
        "deletion_below_random": float(del_win.mean()),
        "insertion_above_random": float(ins_win.mean()),
        "both_beat_random": float((del_win & ins_win).mean()),
        "wilcoxon_p": {
            "deletion": _wilcoxon_p(ours_del - rand_del, "less"),
            "insertion": _wilcoxon_p(ours_ins - rand_ins, "greater"),
        },
        "per_image": {
            "deletion_auc": {"ours": ours_del.tolist(), "random": rand_del.tolist()},
            "insertion_auc": {"ours": ours_ins.tolist(), "random": rand_ins.tolist()},
        },
    }


def _wilcoxon_p(diff: np.ndarray, alternative: str) -> float:
    """One-sided paired Wilcoxon signed-rank p-value; 1.0 when every difference is zero."""
    diff = np.where(np.abs(diff) < _TIE, 0.0, diff)
    if not np.any(diff):
        return 1.0  # no evidence either way (scipy would divide by zero)
    return float(wilcoxon(diff, alternative=alternative).pvalue)
