"""causal-learn backend: runs PC or GES and returns index-level edges (lazy imports).

causal-learn encodes its result as ``G[j, i] == 1 and G[i, j] == -1`` for ``i -> j``, both ``-1``
for ``i -- j`` and both ``1`` for ``i <-> j``; this module is the only place that reads it.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from glance.causal.knowledge import ResolvedKnowledge
from glance.exceptions import DiscoveryError

__all__ = ["run_pc", "run_ges", "normal_scores", "RawResult"]

RawResult = tuple[list[tuple[int, int]], list[tuple[int, int]], dict[str, Any]]


def _decode(graph: np.ndarray) -> RawResult:
    directed, undirected, n_bidirected = [], [], 0
    p = graph.shape[0]
    for i in range(p):
        for j in range(i + 1, p):
            a, b = graph[i, j], graph[j, i]
            if a == -1 and b == 1:
                directed.append((i, j))
            elif a == 1 and b == -1:
                directed.append((j, i))
            elif a == -1 and b == -1:
                undirected.append((i, j))
            elif a == 1 and b == 1:
                # Conflicting v-structures (finite-sample tests): the data does not decide the
                # orientation, so report the adjacency without a direction.
                undirected.append((i, j))
                n_bidirected += 1
    return directed, undirected, {"conflicting_orientations": n_bidirected}


@contextlib.contextmanager
def _quiet():
    """causal-learn prints and warns in places; library code never prints."""
    with (
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        yield


_SINK_AWARE = "glance_sink_aware"


def normal_scores(x: np.ndarray) -> np.ndarray:
    """Each column replaced by the normal quantiles of its ranks (van der Waerden scores; ties
    share their mean rank). Fisher-z on these is the Gaussian-copula PC (Harris & Drton 2013,
    JMLR): correct whatever monotone transform makes each node Gaussian, and as efficient as
    Fisher-z on the raw values where they already are."""
    from scipy.stats import norm, rankdata

    return norm.ppf(rankdata(x, axis=0) / (x.shape[0] + 1))


def _fisherz_pvalue(corr: np.ndarray, n: int, x: int, y: int, cond: list[int]) -> float:
    """causal-learn's Fisher-z test, computed the same way (partial correlation from the
    inverse of the sub-correlation matrix, r clipped below 1), with ``erfc`` in place of
    ``scipy.stats.norm.cdf``: the scipy call was a third of PC's time."""
    if not cond:
        r = corr[x, y]
    else:
        var = [x, y, *cond]
        try:
            inv = np.linalg.inv(corr[np.ix_(var, var)])
        except np.linalg.LinAlgError:
            raise ValueError(
                "Data correlation matrix is singular. Cannot run fisherz test."
            ) from None
        r = -inv[0, 1] / math.sqrt(abs(inv[0, 0] * inv[1, 1]))
    if abs(r) >= 1:
        r = (1.0 - np.finfo(float).eps) * math.copysign(1.0, r)
    z = 0.5 * math.log((1 + r) / (1 - r))
    stat = math.sqrt(n - len(cond) - 3) * abs(z)
    return math.erfc(stat / math.sqrt(2.0))


def _register_sink_aware_test() -> None:
    """Register (once per process) glance's CI-test wrapper with causal-learn.

    It drops sink nodes from conditioning sets: output nodes are sinks that never cause each
    other, so every pair of nodes has a separating set without outputs (the parents of either
    node). Conditioning on a sibling output, a near-deterministic copy of the tested output
    (all logits are functions of the same concepts), would wrongly "separate" true parents; so
    outputs are never conditioned on. Fisher-z is computed by :func:`_fisherz_pvalue`;
    ``rank_fisherz`` is Fisher-z on :func:`normal_scores` of the data it is given (a bootstrap
    resample is ranked on its own); other tests are causal-learn's own.
    """
    from causallearn.utils import cit

    if _SINK_AWARE in cit._custom_ci_tests:
        return

    class SinkAwareCIT(cit.CIT_Base):
        def __init__(self, data, inner="fisherz", exclude=(), **kwargs):
            if inner == "rank_fisherz":
                data, inner = normal_scores(np.asarray(data, dtype=np.float64)), "fisherz"
            super().__init__(data)
            self.check_cache_method_consistent(_SINK_AWARE, cit.NO_SPECIFIED_PARAMETERS_MSG)
            self.exclude = frozenset(int(i) for i in exclude)
            self.fast = inner == "fisherz" and not kwargs
            if self.fast:
                self.assert_input_data_is_valid()
                self.corr = np.corrcoef(data.T)
                self.cache: dict[tuple, float] = {}
            else:
                self.inner = cit.CIT(data, inner, **kwargs)

        def __call__(self, X, Y, condition_set=None):
            kept = sorted({int(c) for c in (condition_set or []) if int(c) not in self.exclude})
            if not self.fast:
                return self.inner(X, Y, kept)
            a, b = sorted((int(X), int(Y)))
            key = (a, b, tuple(kept))
            p = self.cache.get(key)
            if p is None:
                p = self.cache[key] = _fisherz_pvalue(self.corr, self.sample_size, a, b, kept)
            return p

    cit.register_ci_test(_SINK_AWARE, SinkAwareCIT)


def run_pc(
    x: np.ndarray,
    names: Sequence[str],
    knowledge: ResolvedKnowledge,
    *,
    alpha: float,
    ci_test: str,
    ci_kwargs: Mapping[str, Any],
    max_k: int | None,
    sinks: Sequence[int] = (),
    orientation: str = "conservative",
) -> RawResult:
    """PC-stable with causal-learn's CI test ``ci_test``; ``sinks`` (output nodes under the
    default tiers) are never conditioned on.

    ``orientation="conservative"`` orients only *definite* colliders (causal-learn's
    definite-MaxP rule: no conditioning set containing the middle node separates the ends) and
    propagates with Meek's rules over definite triples; an ambiguous triple stays unoriented.
    ``"sepset"`` is the classic rule (middle node absent from the one recorded separating set),
    whose single missed edge can create a false v-structure and a cascade of confident
    orientations.
    """
    from causallearn.search.ConstraintBased.PC import pc

    _register_sink_aware_test()
    ci_kwargs = {**ci_kwargs, "inner": ci_test, "exclude": list(sinks)}
    ci_test = _SINK_AWARE

    try:
        with _quiet():
            cg = pc(
                x,
                alpha=alpha,
                indep_test=ci_test,
                stable=True,
                uc_rule=2 if orientation == "conservative" else 0,
                uc_priority=-1 if orientation == "conservative" else 2,
                background_knowledge=knowledge.to_causallearn(),
                verbose=False,
                show_progress=False,
                node_names=list(names),
                max_k=max_k,
                **dict(ci_kwargs),
            )
    except (ValueError, np.linalg.LinAlgError) as exc:
        raise DiscoveryError(
            f"PC failed on the data ({exc}); check for near-collinear columns"
        ) from None
    return _decode(np.asarray(cg.G.graph))


def run_ges(
    x: np.ndarray, names: Sequence[str], *, score: str, max_parents: int | None
) -> RawResult:
    """GES with causal-learn's score ``score`` (knowledge is applied afterwards by the caller)."""
    from causallearn.search.ScoreBased.GES import ges

    try:
        with _quiet():
            record = ges(x, score_func=score, maxP=max_parents, node_names=list(names))
    except (ValueError, np.linalg.LinAlgError) as exc:
        raise DiscoveryError(f"GES failed on the data ({exc})") from None
    return _decode(np.asarray(record["G"].graph))
