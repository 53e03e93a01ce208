"""Interventional importance: total and direct effects of every node on ``p(target)``.

For node ``v`` and shift ``δ`` (in units of ``v``'s std) the image is re-rendered from
``z' = counterfactual(z, do(v = v + δ))`` — the SCM propagates the change to ``v``'s descendants
with the residuals of ``z`` kept (total effect) — or from ``z`` with only ``v`` changed (direct
effect). The *real* classifier judges every generated image, and the change is measured against the
reconstruction ``G(E(x))`` (not ``x``), so it reflects the intervention only. A node without
descendants has direct effect = total effect; it is rendered once.

With ``n_random > 0`` every node's importance is also tested against ``n_random`` random concepts
(RELIABILITY c.13, after TCAV): unit directions ``u`` drawn in the standardised concept space and
rendered like a direct effect, ``z' = z + δ · u · node_std``, at the same shifts. The per-image
p-value of node ``v`` is ``(1 + #{random importances >= importance of v}) / (n_random + 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from glance.exceptions import ConfigError
from glance.explain._engine import Batch, Renderer, Request, render_requests, shifted
from glance.explain.base import EXPLAINERS, Explainer
from glance.explain.explanation import LocalExplanation

__all__ = [
    "InterventionalImportance",
    "SingleEffects",
    "single_node_effects",
    "check_deltas",
    "check_significance",
    "random_directions",
    "random_concept_significance",
]

#: Options of the random-concept significance test and their defaults (0 random concepts = off).
SIGNIFICANCE_OPTIONS: dict[str, Any] = {"n_random": 0, "alpha": 0.05, "random_state": 0}


def check_deltas(deltas: Any, name: str, caller: str, *, nonzero: bool = False) -> np.ndarray:
    """Validate a grid of shifts; return it sorted (with 0 added unless ``nonzero``)."""
    try:
        arr = np.asarray(deltas, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{name!r} of {caller} must be a sequence of numbers; got {deltas!r}"
        ) from None
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name!r} of {caller} must be finite numbers; got {deltas!r}")
    arr = np.unique(arr if nonzero else np.append(arr, 0.0))
    if nonzero:
        arr = arr[arr != 0]
    if arr.size < (1 if nonzero else 2):
        raise ConfigError(f"{name!r} of {caller} needs at least one non-zero shift; got {deltas!r}")
    return arr


def check_significance(
    n_random: Any, alpha: Any, random_state: Any, caller: str
) -> tuple[int, float, int]:
    """Validate the significance options; return ``(n_random, alpha, random_state)``.

    ``n_random`` must be 0 (off) or large enough that the smallest p-value ``1 / (n_random + 1)``
    reaches ``alpha`` (19 for ``alpha = 0.05``).
    """
    if isinstance(n_random, bool) or not isinstance(n_random, (int, np.integer)) or n_random < 0:
        raise ConfigError(f"'n_random' of {caller} must be an int >= 0; got {n_random!r}")
    if not 0.0 < _as_float(alpha) < 1.0:
        raise ConfigError(f"'alpha' of {caller} must be a number in (0, 1); got {alpha!r}")
    alpha = float(alpha)
    need = int(np.ceil(1.0 / alpha - 1.0 - 1e-9))
    if 0 < n_random < need:
        raise ConfigError(
            f"'n_random' of {caller} must be 0 (off) or >= {need}: with {n_random} random "
            f"concepts the smallest p-value 1/{n_random + 1} cannot reach alpha={alpha:g}"
        )
    if (
        isinstance(random_state, bool)
        or not isinstance(random_state, (int, np.integer))
        or random_state < 0
    ):
        raise ConfigError(f"'random_state' of {caller} must be an int >= 0; got {random_state!r}")
    return int(n_random), alpha, int(random_state)


def _as_float(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def random_directions(n_random: int, n_nodes: int, random_state: int) -> np.ndarray:
    """``n_random`` unit directions (n_random, n_nodes), uniform on the sphere of the standardised
    concept space (multiply by ``node_std`` for ``z`` units); deterministic for a seed."""
    u = np.random.default_rng(random_state).standard_normal((n_random, n_nodes))
    return u / np.linalg.norm(u, axis=1, keepdims=True)


@dataclass
class SingleEffects:
    """Results of intervening on one node at a time (total effect), for a mini-batch."""

    deltas: np.ndarray  # [G], 0 included
    probs: np.ndarray  # [N, V, G, K] real-classifier probabilities (total effect)
    images: np.ndarray | None  # [N, V, G, C, H, W] uint8
    curves: np.ndarray  # [N, V, G]
    direct_curves: np.ndarray  # [N, V, G]
    has_descendants: np.ndarray  # [V]
    moved: np.ndarray | None = None  # [N, V, G] the shift changed the node (not clipped away)

    def importance(self, direct: bool = False) -> np.ndarray:
        """Mean |Δ p(target)| over the non-zero shifts that could be made, (N, V).

        A shift that the node's support clips away entirely (the node already sits at that end)
        is no intervention at all, so it is left out of the mean rather than counted as a zero
        effect; a node that cannot move at all gets 0.
        """
        nz = self.deltas != 0
        c = np.abs((self.direct_curves if direct else self.curves)[:, :, nz])
        if self.moved is None:
            return c.mean(axis=2)
        w = self.moved[:, :, nz]
        return (c * w).sum(axis=2) / np.maximum(w.sum(axis=2), 1)


def single_node_effects(
    batch: Batch, renderer: Renderer, target: np.ndarray, deltas: np.ndarray, direct: bool
) -> SingleEffects:
    """Render every node at every non-zero shift in one batched pass (direct ones alongside)."""
    twin = renderer.twin
    n, d = batch.z.shape
    nz = deltas[deltas != 0]
    cols = np.flatnonzero(deltas != 0)
    has_desc = np.array([bool(twin.descendants(j)) for j in range(d)])
    requests, keys = [], []
    moved = np.ones((n, d, len(deltas)), dtype=bool)
    moved[:, :, deltas == 0] = False
    for j in range(d):
        zr, vals = shifted(twin, batch.z, j, nz)
        made = twin.moves(j, zr[:, j], vals)
        moved[:, j, cols] = made.reshape(len(nz), n).T.cpu().numpy()
        requests.append(Request(zr, {j: vals}, total=True))
        keys.append(("total", j))
        if direct and has_desc[j]:
            requests.append(Request(zr, {j: vals}, total=False))
            keys.append(("direct", j))
    results = render_requests(renderer, requests, "importance")
    k = batch.probabilities.shape[1]
    g = len(deltas)
    probs = np.empty((n, d, g, k))
    probs[:, :, deltas == 0] = batch.reconstruction_probabilities[:, None, None, :]
    rows = np.arange(n)
    p0 = batch.reconstruction_probabilities[rows, target]
    images = None
    if renderer.keep_images and batch.reconstructions is not None:
        images = np.empty((n, d, g, *batch.reconstructions.shape[1:]), dtype=np.uint8)
        images[:, :, deltas == 0] = batch.reconstructions[:, None, None]
    direct_curves = np.zeros((n, d, g))
    for (kind, j), (p, im) in zip(keys, results, strict=True):
        p = p.reshape(len(nz), n, k).transpose(1, 0, 2)  # delta-major rows → [N, G', K]
        if kind == "total":
            probs[:, j, cols] = p
            if images is not None and im is not None:
                images[:, j, cols] = im.reshape(len(nz), n, *im.shape[1:]).swapaxes(0, 1)
        else:
            direct_curves[:, j, cols] = p[:, :, :][rows, :, target] - p0[:, None]
    curves = probs[rows, :, :, target] - p0[:, None, None]
    for j in range(d):
        if not (direct and has_desc[j]):
            # No descendants: holding them changes nothing, so direct = total (not re-rendered).
            direct_curves[:, j] = curves[:, j]
    return SingleEffects(deltas, probs, images, curves, direct_curves, has_desc, moved)


def random_concept_significance(
    batch: Batch,
    renderer: Renderer,
    target: np.ndarray,
    deltas: np.ndarray,
    importance: np.ndarray,
    *,
    n_random: int,
    random_state: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Importances of random concepts (N, R) and per-image one-sided p-values of the nodes (N, V).

    Every random direction is rendered at every non-zero shift of ``deltas`` like a node's direct
    effect (no SCM propagation), all in one generator + classifier pass without keeping images.
    The directions depend only on ``random_state``, so every mini-batch shares them.
    """
    twin = renderer.twin
    n, d = batch.z.shape
    nz = deltas[deltas != 0]
    steps = nz[:, None, None] * (random_directions(n_random, d, random_state) * twin.node_std)
    steps_t = torch.as_tensor(steps, dtype=batch.z.dtype, device=batch.z.device)  # [G', R, d]
    z = batch.z[None, None] + steps_t[:, :, None, :]  # [G', R, N, d]
    # Clipped to the support like a node's intervention: the same rule for both sides of the test.
    origin = batch.z[None, None].expand_as(z).reshape(-1, d)
    clipped = twin.clip(z.reshape(-1, d), origin)
    probs, _ = renderer(clipped, "significance", keep_images=False)
    rows = np.arange(n)
    p = probs.reshape(len(nz), n_random, n, -1)[:, :, rows, target]  # [G', R, N]
    p0 = batch.reconstruction_probabilities[rows, target]
    # Same formula as SingleEffects.importance: a shift clipped away entirely is left out.
    tol = 1e-6 * torch.as_tensor(twin.node_std, dtype=clipped.dtype, device=clipped.device)
    moved = (clipped - origin).abs() > tol
    moved = moved.any(dim=1).reshape(len(nz), n_random, n).cpu().numpy()
    random_imp = (np.abs(p - p0) * moved).sum(axis=0).T / np.maximum(moved.sum(axis=0).T, 1)
    exceed = (random_imp[:, None, :] >= importance[:, :, None]).sum(axis=2)
    return random_imp, (1.0 + exceed) / (n_random + 1.0)


def significance_parts(
    batch: Batch,
    renderer: Renderer,
    target: np.ndarray,
    eff: SingleEffects,
    *,
    n_random: int,
    alpha: float,
    random_state: int,
) -> dict[str, Any]:
    """The :class:`LocalExplanation` fields of the significance test (none when it is off)."""
    if n_random == 0:
        return {}
    random_imp, pvals = random_concept_significance(
        batch,
        renderer,
        target,
        eff.deltas,
        eff.importance(),
        n_random=n_random,
        random_state=random_state,
    )
    return {
        "random_importance": random_imp,
        "significance": pvals,
        "alpha": alpha,
        "meta": {
            "significance": {"n_random": n_random, "alpha": alpha, "random_state": random_state}
        },
    }


def assemble(
    batch: Batch,
    renderer: Renderer,
    target: np.ndarray,
    eff: SingleEffects,
    *,
    direct: bool,
    **parts: Any,
) -> LocalExplanation:
    """Build the :class:`LocalExplanation` of a mini-batch from the single-node effects."""
    twin = renderer.twin
    probs = eff.probs
    direct_imp = eff.importance(direct=True) if direct else np.full(eff.curves.shape[:2], np.nan)
    from glance.explain._engine import to_uint8

    return LocalExplanation(
        nodes=twin.nodes,
        node_kinds=twin.node_kinds,
        classes=twin.classes,
        deltas=eff.deltas,
        prediction=batch.prediction,
        probabilities=batch.probabilities,
        reconstruction_prediction=batch.reconstruction_probabilities.argmax(1),
        reconstruction_probabilities=batch.reconstruction_probabilities,
        target=target,
        importance=eff.importance(),
        direct_importance=direct_imp,
        curves=eff.curves,
        direct_curves=eff.direct_curves if direct else np.full_like(eff.curves, np.nan),
        has_descendants=eff.has_descendants,
        traversal_classes=probs.argmax(-1),
        traversal_probabilities=probs.max(-1),
        images=to_uint8(batch.images),
        reconstructions=batch.reconstructions,
        traversal_images=eff.images,
        **parts,
    )


def default_target(batch: Batch, target: np.ndarray | None) -> np.ndarray:
    """The class importances track: the given one, else the classifier's prediction."""
    return batch.prediction if target is None else target


@EXPLAINERS.register("importance")
class InterventionalImportance(Explainer):
    """Importance of every node: mean ``|Δ p(target)|`` under ``do(v = v + δ)``.

    Options of :meth:`explain`
    --------------------------
    deltas
        Shifts in units of each node's std (default ``(-1, 1)``; ``0`` is added as the reference).
    direct
        Also compute direct effects (descendants held), default ``True``.
    n_random, alpha, random_state
        Test every node's importance against ``n_random`` random concepts (0 = off, the default;
        otherwise at least ``1/alpha - 1``, i.e. 19 for ``alpha = 0.05``), with random directions
        drawn from ``random_state`` [0, 0.05, 0]. Fills ``random_importance``, ``significance``
        and ``alpha`` of the explanation (see :meth:`LocalExplanation.significance_summary`).

    Examples
    --------
    >>> from glance.explain import toy, InterventionalImportance
    >>> twin = toy.make_twin()
    >>> x = toy.render(toy.sample_concepts(4))
    >>> exp = InterventionalImportance(twin).explain(x)
    >>> exp.ranking(0)[0]
    'size'
    """

    def _check_options(self, options: dict[str, Any]) -> None:
        caller = "InterventionalImportance.explain"
        unknown = set(options) - {"deltas", "direct", *SIGNIFICANCE_OPTIONS}
        if unknown:
            raise ConfigError(
                f"{caller}: unknown option(s) {sorted(unknown)}; valid: deltas, direct, "
                f"{', '.join(SIGNIFICANCE_OPTIONS)}"
            )
        check_deltas(options.get("deltas", (-1.0, 1.0)), "deltas", caller)
        sig = {**SIGNIFICANCE_OPTIONS, **options}
        check_significance(sig["n_random"], sig["alpha"], sig["random_state"], caller)

    def _explain_batch(
        self,
        batch: Batch,
        target: np.ndarray | None,
        renderer: Renderer,
        deltas: Sequence[float] = (-1.0, 1.0),
        direct: bool = True,
        n_random: int = 0,
        alpha: float = 0.05,
        random_state: int = 0,
    ) -> LocalExplanation:
        caller = "InterventionalImportance.explain"
        grid = check_deltas(deltas, "deltas", caller)
        n_random, alpha, random_state = check_significance(n_random, alpha, random_state, caller)
        tgt = default_target(batch, target)
        eff = single_node_effects(batch, renderer, tgt, grid, direct)
        sig = significance_parts(
            batch, renderer, tgt, eff, n_random=n_random, alpha=alpha, random_state=random_state
        )
        return assemble(batch, renderer, tgt, eff, direct=direct, **sig)
