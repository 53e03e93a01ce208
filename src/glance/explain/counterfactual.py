"""Counterfactual images flipping the decision to a target class, verified by the real classifier.

Greedy search over node interventions ``do(v = v + δ)`` (shifts in node std units, propagated
through the SCM as counterfactuals): round ``r`` tries adding each unused node at each magnitude to
the interventions chosen so far; every candidate is rendered by the generator and judged by the
*real* classifier. The first round whose candidates reach the target wins — so the set of nodes is
as small as the greedy path allows — and among the winners the smallest total shift (then the
highest target probability) is kept. Otherwise the candidate with the best target margin is kept
and the next round starts. A counterfactual is ``valid`` only when the real classifier assigns the
target class to the generated image; nothing is read off the surrogate head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from glance.exceptions import ConfigError
from glance.explain._engine import Batch, Renderer, Request, render_requests
from glance.explain.base import EXPLAINERS, Explainer
from glance.explain.explanation import Counterfactuals, LocalExplanation
from glance.explain.importance import (
    SingleEffects,
    assemble,
    check_deltas,
    default_target,
    single_node_effects,
)

__all__ = ["CounterfactualSearch", "second_most_likely", "greedy_counterfactual"]

DEFAULT_MAGNITUDES = (-3.0, -2.0, -1.0, 1.0, 2.0, 3.0)


def second_most_likely(probabilities: np.ndarray) -> np.ndarray:
    """Index of the second largest probability per row (the default counterfactual target)."""
    return np.argsort(-probabilities, axis=1, kind="stable")[:, 1]


def _margin(p: np.ndarray, target: int) -> np.ndarray:
    """log p(target) − log max_{c≠target} p(c): > 0 exactly when the target is predicted."""
    other = np.delete(p, target, axis=-1).max(-1)
    return np.log(np.clip(p[..., target], 1e-12, None)) - np.log(np.clip(other, 1e-12, None))


@dataclass
class _State:
    """Search state of one image."""

    nodes: dict[int, float] = field(default_factory=dict)
    done: bool = False
    best: tuple[float, dict[int, float], np.ndarray, np.ndarray | None] | None = None


def _pick(
    cands: list[tuple[dict[int, float], np.ndarray, np.ndarray | None]], t: int
) -> tuple[bool, tuple[dict[int, float], np.ndarray, np.ndarray | None], float]:
    """Best candidate: any flip (smallest total shift, then highest p(t)), else best margin."""
    flips = [c for c in cands if int(c[1].argmax()) == t]
    if flips:
        best = min(flips, key=lambda c: (sum(abs(v) for v in c[0].values()), -c[1][t]))
        return True, best, float(_margin(best[1], t))
    margins = [float(_margin(c[1], t)) for c in cands]
    i = int(np.argmax(margins))
    return False, cands[i], margins[i]


def greedy_counterfactual(
    batch: Batch,
    renderer: Renderer,
    target: np.ndarray,
    *,
    magnitudes: Sequence[float] = DEFAULT_MAGNITUDES,
    max_nodes: int = 3,
    singles: SingleEffects | None = None,
) -> Counterfactuals:
    """Search counterfactuals for a mini-batch (see the module docstring).

    ``singles`` (total effects already rendered at some shifts) are reused for the first round.
    """
    twin = renderer.twin
    n, d = batch.z.shape
    mags = [float(m) for m in magnitudes]
    states = [_State() for _ in range(n)]
    p0 = batch.reconstruction_probabilities
    for i in range(n):
        if int(p0[i].argmax()) == target[i]:  # the reconstruction already is the target class
            img = None if batch.reconstructions is None else batch.reconstructions[i]
            states[i] = _State({}, True, (np.inf, {}, p0[i], img))
    cands: dict[int, list] = {i: [] for i in range(n)}
    if singles is not None:
        for gi, dl in enumerate(singles.deltas):
            if dl == 0 or float(dl) not in mags:
                continue
            for i in range(n):
                for j in range(d):
                    im = None if singles.images is None else singles.images[i, j, gi]
                    cands[i].append(({j: float(dl)}, singles.probs[i, j, gi], im))
    cached = {
        (j, float(dl)) for dl in (singles.deltas if singles is not None else []) for j in range(d)
    }
    # Images that already flip with a cached single intervention no smaller uncached magnitude
    # could beat need no new renders.
    smallest_new = min((abs(m) for m in mags if (0, m) not in cached), default=np.inf)
    for i in range(n):
        if states[i].done or not cands[i]:
            continue
        flipped, best, margin = _pick(cands[i], int(target[i]))
        if flipped and sum(abs(v) for v in best[0].values()) <= smallest_new:
            states[i] = _State(dict(best[0]), True, (margin, best[0], best[1], best[2]))
            cands[i] = []
    for _round in range(max_nodes):
        active = [i for i in range(n) if not states[i].done]
        if not active:
            break
        new = _candidate_sets(states, active, d, mags, skip=cached if _round == 0 else set())
        _render_candidates(batch, renderer, new, cands)
        for i in active:
            if not cands[i]:
                continue
            flipped, best, margin = _pick(cands[i], int(target[i]))
            st = states[i]
            if st.best is None or margin > st.best[0] or flipped:
                st.best = (margin, best[0], best[1], best[2])
            st.nodes = dict(best[0])
            st.done = flipped
            cands[i] = []
    return _collect(batch, twin, states, target)


def _candidate_sets(
    states: list[_State], active: list[int], d: int, mags: list[float], skip: set
) -> dict[frozenset[int], list[tuple[int, dict[int, float]]]]:
    """Group the candidates of this round by the set of nodes they intervene on."""
    groups: dict[frozenset[int], list[tuple[int, dict[int, float]]]] = {}
    for i in active:
        cur = states[i].nodes
        for j in range(d):
            if j in cur:
                continue
            for m in mags:
                if not cur and (j, m) in skip:
                    continue
                iv = {**cur, j: m}
                groups.setdefault(frozenset(iv), []).append((i, iv))
    return groups


def _render_candidates(
    batch: Batch,
    renderer: Renderer,
    groups: dict[frozenset[int], list[tuple[int, dict[int, float]]]],
    cands: dict[int, list],
) -> None:
    twin = renderer.twin
    requests, owners = [], []
    for key, items in groups.items():
        idx = torch.as_tensor([i for i, _ in items])
        z = batch.z[idx]
        ivs = {
            j: twin.shift(j, z[:, j], torch.as_tensor([iv[j] for _, iv in items], dtype=z.dtype))
            for j in sorted(key)
        }
        requests.append(Request(z, ivs, total=True))
        owners.append(items)
    for items, (p, im) in zip(
        owners, render_requests(renderer, requests, "counterfactual"), strict=True
    ):
        for r, (i, iv) in enumerate(items):
            cands[i].append((iv, p[r], None if im is None else im[r]))


def _collect(batch: Batch, twin: Any, states: list[_State], target: np.ndarray) -> Counterfactuals:
    n = len(states)
    pred = np.empty(n, np.int64)
    prob = np.empty(n)
    prox = np.full(n, np.nan)
    nodes, images = [], []
    for i, st in enumerate(states):
        assert st.best is not None  # every image got at least one candidate or the early exit
        _, iv, p, im = st.best
        pred[i] = int(p.argmax())
        prob[i] = float(p[target[i]])
        nodes.append({twin.nodes[j]: float(v) for j, v in sorted(iv.items())})
        if im is not None and batch.reconstructions is not None:
            prox[i] = np.abs(im.astype(np.float64) - batch.reconstructions[i]).mean() / 255.0
            images.append(im)
    return Counterfactuals(
        target=np.asarray(target, np.int64),
        nodes=tuple(nodes),
        prediction=pred,
        probability=prob,
        valid=pred == target,
        proximity=prox,
        images=np.stack(images) if len(images) == n else None,
    )


def check_search_options(magnitudes: Any, max_nodes: Any, caller: str) -> np.ndarray:
    """Validate the counterfactual search options."""
    mags = check_deltas(magnitudes, "magnitudes", caller, nonzero=True)
    if not isinstance(max_nodes, int) or max_nodes < 1:
        raise ConfigError(f"'max_nodes' of {caller} must be an int >= 1; got {max_nodes!r}")
    return mags


@EXPLAINERS.register("counterfactual")
class CounterfactualSearch(Explainer):
    """Counterfactual to a target class by greedy node interventions, verified with ``f(G(z'))``.

    The single-node renders of the first round also give the importances (at the magnitudes),
    so the returned :class:`LocalExplanation` carries both.

    Options of :meth:`explain`
    --------------------------
    magnitudes
        Candidate shifts in node std units (default ``(-3, -2, -1, 1, 2, 3)``).
    max_nodes
        Largest number of nodes intervened on (default 3).
    """

    def _check_options(self, options: dict[str, Any]) -> None:
        unknown = set(options) - {"magnitudes", "max_nodes"}
        if unknown:
            raise ConfigError(
                f"CounterfactualSearch.explain: unknown option(s) {sorted(unknown)}; "
                "valid: magnitudes, max_nodes"
            )
        check_search_options(
            options.get("magnitudes", DEFAULT_MAGNITUDES),
            options.get("max_nodes", 3),
            "CounterfactualSearch.explain",
        )

    def _explain_batch(
        self,
        batch: Batch,
        target: np.ndarray | None,
        renderer: Renderer,
        magnitudes: Sequence[float] = DEFAULT_MAGNITUDES,
        max_nodes: int = 3,
    ) -> LocalExplanation:
        mags = check_search_options(magnitudes, max_nodes, "CounterfactualSearch.explain")
        tgt = default_target(batch, target)
        cf_target = second_most_likely(batch.probabilities) if target is None else target
        eff = single_node_effects(batch, renderer, tgt, np.unique(np.append(mags, 0.0)), False)
        cf = greedy_counterfactual(
            batch, renderer, cf_target, magnitudes=mags, max_nodes=max_nodes, singles=eff
        )
        return assemble(batch, renderer, tgt, eff, direct=False, counterfactual=cf)
