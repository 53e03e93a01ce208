"""Bootstrap confidence for discovered graphs.

Each resample (rows drawn with replacement) is searched independently; an edge's
``confidence`` is the fraction of resamples in which the two nodes are adjacent, its
``orientation_confidence`` the share of those resamples in which it points ``source -> target``.
The reported graph keeps the edges present in at least ``threshold`` of all resamples and directs
an edge only when one orientation is found in at least ``threshold`` of all resamples; everything
else stays undirected. ``meta["bootstrap"]["edge_frequencies"]`` lists, per pair, the presence
and the forward/backward orientation shares of all resamples.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from glance.causal._checks import check_discovery_data, resolve_names_kinds
from glance.causal._pdag import PDAG
from glance.causal._threads import single_threaded
from glance.causal.discovery import _coef, discover_pdag, standardised_effects
from glance.causal.graph import CausalGraph, Edge, Node
from glance.causal.knowledge import BackgroundKnowledge, ResolvedKnowledge
from glance.causal.options import DiscoveryOptions
from glance.exceptions import ConfigError

__all__ = ["bootstrap_discover"]

logger = logging.getLogger(__name__)


def bootstrap_discover(
    data: np.ndarray,
    names: Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
    *,
    options: DiscoveryOptions | None = None,
    n_resamples: int = 20,
    threshold: float = 0.5,
    random_state: int = 0,
    n_jobs: int = 2,
    knowledge: BackgroundKnowledge | None = None,
    **overrides: Any,
) -> CausalGraph:
    """Discover a graph on ``n_resamples`` bootstrap resamples and keep the stable edges.

    Parameters
    ----------
    data, names, kinds, options, knowledge, **overrides
        As in :func:`glance.causal.discover` (``overrides``: fields of
        :class:`~glance.causal.options.DiscoveryOptions`, e.g. ``method="ges"``).
    n_resamples
        Number of bootstrap resamples (>= 2).
    threshold
        Minimum presence frequency for an edge to be reported, and minimum orientation
        frequency for it to be reported directed; in (0, 1].
    random_state
        Seed; the same seed gives the same graph (byte-identical JSON), whatever ``n_jobs``.
    n_jobs
        Most worker processes (joblib, -1: all cores); 1 runs in this process. The first
        resample always runs here and is timed: when the rest would take less than
        ``PARALLEL_MIN_SECONDS`` serially, it runs here too, because starting workers (each
        imports causal-learn and scikit-learn) costs more than it saves.

    Returns
    -------
    CausalGraph
        ``meta["bootstrap"]`` holds the settings and, for every pair adjacent in at least one
        resample, its presence and orientation frequencies.
    """
    start = time.perf_counter()
    opts = DiscoveryOptions.resolve(options, overrides, "bootstrap_discover")
    _check_bootstrap_params(n_resamples, threshold, n_jobs)
    x = np.asarray(data)
    names, kinds = resolve_names_kinds(x.shape[1] if x.ndim == 2 else -1, names, kinds)
    with single_threaded():
        x = check_discovery_data(x, names)
    knowledge = knowledge or BackgroundKnowledge()
    rk = knowledge.resolve(names, kinds)
    seeds = np.random.SeedSequence(random_state).spawn(n_resamples)
    results = _run_resamples([(x, names, rk, s, opts) for s in seeds], n_jobs)
    with single_threaded():
        graph = _aggregate(x, names, kinds, rk, results, threshold)
    graph.meta.update(
        algorithm=f"bootstrap-{opts.method}",
        params={**opts.params(), "knowledge": knowledge.to_dict()},
        n_samples=int(x.shape[0]),
        elapsed_s=time.perf_counter() - start,
    )
    graph.meta["bootstrap"].update(
        n_resamples=n_resamples, threshold=float(threshold), random_state=random_state
    )
    logger.info(
        "bootstrap of %d resamples: %d edges kept in %.1fs",
        n_resamples,
        len(graph.edges()),
        graph.meta["elapsed_s"],
    )
    return graph


#: Below this estimated serial time for the remaining resamples, no worker is started.
PARALLEL_MIN_SECONDS = 20.0


def _run_resamples(jobs: list[tuple], n_jobs: int) -> list[tuple[list, list]]:
    """Resample results in job order (so the result never depends on ``n_jobs``)."""
    start = time.perf_counter()
    results = [_one_resample(*jobs[0])]
    per_job = time.perf_counter() - start
    rest = jobs[1:]
    if n_jobs == 1 or per_job * len(rest) < PARALLEL_MIN_SECONDS:
        return results + [_one_resample(*j) for j in rest]
    from joblib import Parallel, delayed

    logger.info("bootstrap: %d resamples on %s workers (~%.1fs each)", len(rest), n_jobs, per_job)
    with warnings.catch_warnings():
        # loky restarts workers that idled past its timeout and warns about it; harmless here
        warnings.filterwarnings("ignore", message="A worker stopped while some jobs")
        return results + Parallel(n_jobs=n_jobs, backend="loky")(
            delayed(_one_resample)(*j) for j in rest
        )


def _check_bootstrap_params(n_resamples: int, threshold: float, n_jobs: int) -> None:
    if not isinstance(n_resamples, int) or n_resamples < 2:
        raise ConfigError(
            f"'n_resamples' of bootstrap_discover must be an integer >= 2; got {n_resamples!r}"
        )
    if not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise ConfigError(f"'threshold' of bootstrap_discover must be in (0, 1]; got {threshold!r}")
    if not isinstance(n_jobs, int) or n_jobs == 0 or n_jobs < -1:
        raise ConfigError(
            f"'n_jobs' of bootstrap_discover must be a positive integer or -1; got {n_jobs!r}"
        )


def _one_resample(
    x: np.ndarray,
    names: list[str],
    rk: ResolvedKnowledge,
    seed: np.random.SeedSequence,
    options: DiscoveryOptions,
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    with single_threaded():
        return _resample_pdag(x, names, rk, seed, options)


def _resample_pdag(
    x: np.ndarray,
    names: list[str],
    rk: ResolvedKnowledge,
    seed: np.random.SeedSequence,
    options: DiscoveryOptions,
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, x.shape[0], x.shape[0])
    xb = x[rows]
    # A resample can be degenerate where the full data is not (e.g. a rare binary value
    # missing); the check then names the column.
    xb = check_discovery_data(xb, names)
    pdag, _ = discover_pdag(
        xb, names, rk, options, ci_kwargs={}, random_state=int(rng.integers(2**31))
    )
    return pdag.directed_edges(), pdag.undirected_edges()


def _aggregate(
    x: np.ndarray,
    names: list[str],
    kinds: list[str],
    rk: ResolvedKnowledge,
    results: list[tuple[list[tuple[int, int]], list[tuple[int, int]]]],
    threshold: float,
) -> CausalGraph:
    p, b = len(names), len(results)
    orient = np.zeros((p, p))  # orient[a, c]: resamples with a -> c
    present = np.zeros((p, p))  # symmetric adjacency counts
    for directed, undirected in results:
        for a, c in directed:
            orient[a, c] += 1
            present[a, c] += 1
            present[c, a] += 1
        for a, c in undirected:
            present[a, c] += 1
            present[c, a] += 1
    freq, ofreq = present / b, orient / b
    pdag = PDAG(p)
    for a in range(p):
        for c in range(a + 1, p):
            if freq[a, c] < threshold - 1e-12:
                continue
            if ofreq[a, c] >= threshold - 1e-12 and ofreq[a, c] > ofreq[c, a]:
                pdag.add_directed(a, c)
            elif ofreq[c, a] >= threshold - 1e-12 and ofreq[c, a] > ofreq[a, c]:
                pdag.add_directed(c, a)
            else:
                pdag.add_undirected(a, c)
    demoted = _break_cycles(pdag, ofreq)
    effects = standardised_effects(x, pdag)
    corr = np.corrcoef(x, rowvar=False)
    edges = []
    # orientation share among the resamples that have the edge
    cond = np.divide(orient, present, out=np.zeros_like(orient), where=present > 0)
    for a, c in pdag.directed_edges():
        edges.append(Edge(names[a], names[c], True, freq[a, c], cond[a, c], effects[(a, c)]))
    for a, c in pdag.undirected_edges():
        # source = the end the edge was more often oriented away from (ties: node order)
        s, t = (c, a) if ofreq[c, a] > ofreq[a, c] else (a, c)
        eff = effects[(a, c)] if (s, t) == (a, c) else _coef(corr, sorted(pdag.inc[t] | {s}), s, t)
        edges.append(Edge(names[s], names[t], False, freq[s, t], cond[s, t], eff))
    table = [
        {
            "source": names[a],
            "target": names[c],
            "presence": round(float(freq[a, c]), 6),
            "forward": round(float(ofreq[a, c]), 6),
            "backward": round(float(ofreq[c, a]), 6),
        }
        for a in range(p)
        for c in range(a + 1, p)
        if present[a, c] > 0
    ]
    meta = {"bootstrap": {"edge_frequencies": table}}
    if demoted:
        meta["bootstrap"]["demoted_to_undirected"] = [[names[a], names[c]] for a, c in demoted]
    return CausalGraph([Node(n, k) for n, k in zip(names, kinds, strict=True)], edges, meta)


def _break_cycles(pdag: PDAG, ofreq: np.ndarray) -> list[tuple[int, int]]:
    """Majority orientations from different resamples can close a directed cycle; demote the
    least supported orientation on each cycle to undirected until none is left."""
    import networkx as nx

    demoted = []
    while True:
        g = nx.DiGraph(pdag.directed_edges())
        try:
            cycle = nx.find_cycle(g)
        except nx.NetworkXNoCycle:
            return demoted
        a, c = min(((u, v) for u, v in cycle), key=lambda e: (ofreq[e[0], e[1]], e))
        pdag.add_undirected(a, c)
        demoted.append((a, c))
