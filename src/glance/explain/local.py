"""The full local GLANCE explanation: importances, interactions, counterfactual, traversals.

One mini-batch costs three batched generator + classifier passes (plus one per extra
counterfactual round): (1) every node at every shift, total effects, with direct effects only for
nodes that have descendants; (2) the pairwise interactions among each image's most important
nodes together with the 2-D image grid of its top pair; (3) the counterfactual search, whose first
round reuses the renders of (1). Traversal grids are the renders of (1). With ``n_random > 0``
one more pass renders the random concepts of the significance test (images not kept).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch

from glance.exceptions import ConfigError
from glance.explain._engine import Batch, Renderer, Request, render_requests
from glance.explain.base import EXPLAINERS, Explainer, TargetType
from glance.explain.counterfactual import (
    DEFAULT_MAGNITUDES,
    check_search_options,
    greedy_counterfactual,
    second_most_likely,
)
from glance.explain.explanation import Interactions, LocalExplanation
from glance.explain.importance import (
    SIGNIFICANCE_OPTIONS,
    SingleEffects,
    assemble,
    check_deltas,
    check_significance,
    default_target,
    significance_parts,
    single_node_effects,
)

__all__ = ["LocalExplainer", "explain", "pairwise_interactions"]

_OPTIONS = {
    "deltas": (-2.0, -1.0, 1.0, 2.0),
    "direct": True,
    "interactions": True,
    "top_k": 5,
    "interaction_deltas": (-1.0, 1.0),
    "counterfactual": True,
    "magnitudes": DEFAULT_MAGNITUDES,
    "max_nodes": 3,
    **SIGNIFICANCE_OPTIONS,
}


def pairwise_interactions(
    batch: Batch,
    renderer: Renderer,
    target: np.ndarray,
    eff: SingleEffects,
    *,
    top_k: int,
    deltas: np.ndarray,
) -> Interactions:
    """Interactions ``Δ(u,v) − Δ(u) − Δ(v)`` among each image's ``top_k`` nodes.

    ``deltas`` (non-zero, a subset of ``eff.deltas``) are the joint shifts; the 2-D grid of the two
    most important nodes spans all of ``eff.deltas`` and shares renders with the interactions.
    """
    twin = renderer.twin
    n, d = batch.z.shape
    order = np.argsort(-eff.importance(), axis=1, kind="stable")[:, : min(top_k, d)]
    n_pairs = len(list(itertools.combinations(range(order.shape[1]), 2)))
    pairs = np.full((n, max(n_pairs, 1), 2), -1, np.int64)
    for i in range(n):
        for p, (a, b) in enumerate(itertools.combinations(order[i], 2)):
            pairs[i, p] = (a, b)
    grid_nodes = pairs[:, 0].copy()
    gd = eff.deltas
    inner = [(a, b) for a in gd if a != 0 for b in gd if b != 0]
    joint = [(a, b) for a in deltas for b in deltas]
    # Group images by pair so that one request (one SCM call) covers all images sharing it.
    groups: dict[tuple[int, int], list[int]] = {}
    for i in range(n):
        for a, b in pairs[i]:
            if a >= 0:
                groups.setdefault((int(a), int(b)), []).append(i)
    requests, meta = [], []
    for (u, v), imgs in groups.items():
        is_grid = [i for i in imgs if tuple(grid_nodes[i]) == (u, v)]
        for members, combos in ((imgs, joint), (is_grid, [c for c in inner if c not in joint])):
            if not members or not combos:
                continue
            idx = torch.as_tensor(members)
            z = batch.z[idx].repeat(len(combos), 1)
            du = torch.as_tensor([c[0] for c in combos], dtype=z.dtype).repeat_interleave(len(idx))
            dv = torch.as_tensor([c[1] for c in combos], dtype=z.dtype).repeat_interleave(len(idx))
            ivs = {
                u: twin.shift(u, z[:, u], du),
                v: twin.shift(v, z[:, v], dv),
            }
            requests.append(Request(z, ivs, total=True))
            meta.append((u, v, members, combos))
    rendered: dict[tuple[int, int, int, float, float], tuple[np.ndarray, Any]] = {}
    for (u, v, members, combos), (p, im) in zip(
        meta, render_requests(renderer, requests, "interactions"), strict=True
    ):
        r = 0
        for a, b in combos:
            for i in members:
                rendered[(i, u, v, float(a), float(b))] = (p[r], None if im is None else im[r])
                r += 1
    return _interaction_arrays(batch, target, eff, pairs, grid_nodes, deltas, rendered)


def _interaction_arrays(batch, target, eff, pairs, grid_nodes, deltas, rendered) -> Interactions:
    n = len(target)
    gd = eff.deltas
    col = {float(x): c for c, x in enumerate(gd)}
    p0 = batch.reconstruction_probabilities[np.arange(n), target]
    values = np.zeros((n, pairs.shape[1], len(deltas), len(deltas)))
    for i in range(n):
        for p, (u, v) in enumerate(pairs[i]):
            if u < 0:
                continue
            for ia, a in enumerate(deltas):
                for ib, b in enumerate(deltas):
                    joint = rendered[(i, u, v, float(a), float(b))][0][target[i]] - p0[i]
                    values[i, p, ia, ib] = (
                        joint - eff.curves[i, u, col[float(a)]] - eff.curves[i, v, col[float(b)]]
                    )
    g = len(gd)
    classes = np.zeros((n, g, g), np.int64)
    probs = np.zeros((n, g, g))
    images = None
    if eff.images is not None:
        images = np.zeros((n, g, g, *eff.images.shape[3:]), np.uint8)
    for i in range(n):
        u, v = grid_nodes[i]
        if u < 0:
            continue
        for ia, a in enumerate(gd):
            for ib, b in enumerate(gd):
                if a == 0:  # only v moves (or nothing): the single-node renders
                    pr, im = eff.probs[i, v, ib], None if images is None else eff.images[i, v, ib]
                elif b == 0:
                    pr, im = eff.probs[i, u, ia], None if images is None else eff.images[i, u, ia]
                else:
                    pr, im = rendered[(i, u, v, float(a), float(b))]
                classes[i, ia, ib] = int(pr.argmax())
                probs[i, ia, ib] = float(pr.max())
                if images is not None and im is not None:
                    images[i, ia, ib] = im
    strength = np.abs(values).mean(axis=(2, 3))
    strength[pairs[:, :, 0] < 0] = 0.0
    return Interactions(
        pairs, strength, values, np.asarray(deltas), grid_nodes, classes, probs, images
    )


@EXPLAINERS.register("local")
class LocalExplainer(Explainer):
    """The full local explanation of GLANCE (DESIGN §2.4).

    Options of :meth:`explain` (defaults in brackets)
    -------------------------------------------------
    deltas
        Shifts for importances, effect curves and traversals, in node std units
        [``(-2, -1, 1, 2)``, plus ``0`` = the reconstruction].
    direct
        Compute direct effects (descendants held) [True].
    interactions, top_k, interaction_deltas
        Pairwise interactions among the ``top_k`` most important nodes at joint shifts
        ``interaction_deltas`` (must be among ``deltas``) [True, 5, ``(-1, 1)``].
    counterfactual, magnitudes, max_nodes
        Counterfactual search (see :class:`~glance.explain.CounterfactualSearch`)
        [True, ``(-3, -2, -1, 1, 2, 3)``, 3].
    n_random, alpha, random_state
        Test every node's importance against ``n_random`` random concepts (RELIABILITY c.13):
        0 = off; otherwise at least ``1/alpha - 1`` (19 for ``alpha = 0.05``) [0, 0.05, 0]. See
        :func:`~glance.explain.importance.random_concept_significance` and
        :meth:`LocalExplanation.significance_summary`.

    Examples
    --------
    >>> from glance.explain import toy, LocalExplainer
    >>> x = toy.render(toy.sample_concepts(2))
    >>> exp = LocalExplainer(toy.make_twin()).explain(x)
    >>> sorted(exp.to_dict()["explanations"][0])[:3]
    ['counterfactual', 'curves', 'direct_importance']
    """

    def _check_options(self, options: dict[str, Any]) -> None:
        unknown = set(options) - set(_OPTIONS)
        if unknown:
            raise ConfigError(
                f"LocalExplainer.explain: unknown option(s) {sorted(unknown)}; valid: "
                f"{', '.join(_OPTIONS)}"
            )
        self._resolve({**_OPTIONS, **options})

    def _resolve(self, o: dict[str, Any]) -> dict[str, Any]:
        caller = "LocalExplainer.explain"
        grid = check_deltas(o["deltas"], "deltas", caller)
        ideltas = check_deltas(o["interaction_deltas"], "interaction_deltas", caller, nonzero=True)
        if not set(ideltas.tolist()) <= set(grid.tolist()):
            raise ConfigError(
                f"'interaction_deltas' of {caller} must be among 'deltas' {grid.tolist()} (their "
                f"single-node renders are reused); got {ideltas.tolist()}"
            )
        if not isinstance(o["top_k"], int) or o["top_k"] < 2:
            raise ConfigError(f"'top_k' of {caller} must be an int >= 2; got {o['top_k']!r}")
        mags = check_search_options(o["magnitudes"], o["max_nodes"], caller)
        n_random, alpha, seed = check_significance(
            o["n_random"], o["alpha"], o["random_state"], caller
        )
        return {
            **o,
            "deltas": grid,
            "interaction_deltas": ideltas,
            "magnitudes": mags,
            "n_random": n_random,
            "alpha": alpha,
            "random_state": seed,
        }

    def _explain_batch(
        self, batch: Batch, target: np.ndarray | None, renderer: Renderer, **options: Any
    ) -> LocalExplanation:
        o = self._resolve({**_OPTIONS, **options})
        tgt = default_target(batch, target)
        eff = single_node_effects(batch, renderer, tgt, o["deltas"], o["direct"])
        parts: dict[str, Any] = significance_parts(
            batch,
            renderer,
            tgt,
            eff,
            n_random=o["n_random"],
            alpha=o["alpha"],
            random_state=o["random_state"],
        )
        if o["interactions"]:
            parts["interactions"] = pairwise_interactions(
                batch, renderer, tgt, eff, top_k=o["top_k"], deltas=o["interaction_deltas"]
            )
        if o["counterfactual"]:
            cf_target = second_most_likely(batch.probabilities) if target is None else target
            parts["counterfactual"] = greedy_counterfactual(
                batch,
                renderer,
                cf_target,
                magnitudes=o["magnitudes"],
                max_nodes=o["max_nodes"],
                singles=eff,
            )
        return assemble(batch, renderer, tgt, eff, direct=o["direct"], **parts)


def explain(
    model: Any,
    images: torch.Tensor,
    target: TargetType = None,
    *,
    explainer: str = "local",
    batch_size: int = 16,
    keep_images: bool = True,
    **options: Any,
) -> LocalExplanation:
    """Explain ``images`` with a registered explainer (default: the full local explanation).

    Parameters
    ----------
    model
        A fitted :class:`glance.Glance` (or a :class:`~glance.explain.Twin`).
    images
        Float images in ``[0, 1]``, shape (N, C, H, W).
    target
        See :meth:`Explainer.explain`.
    explainer
        Name in :data:`~glance.explain.EXPLAINERS`: ``"local"`` (:class:`LocalExplainer`),
        ``"importance"`` (:class:`~glance.explain.InterventionalImportance`) or
        ``"counterfactual"`` (:class:`~glance.explain.CounterfactualSearch`).
    batch_size, keep_images
        See :class:`Explainer`.
    **options
        Options of the chosen explainer (see its class); another explainer's option is a
        :class:`~glance.exceptions.ConfigError`.

    Returns
    -------
    LocalExplanation

    Raises
    ------
    UnknownNameError
        ``explainer`` is not registered (the message lists the registered names).
    """
    method = EXPLAINERS.get(explainer)
    return method(model, batch_size=batch_size, keep_images=keep_images).explain(
        images, target, **options
    )
