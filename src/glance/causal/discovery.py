"""Causal structure learning through causal-learn, with honest orientation.

An edge is directed only when v-structures, Meek's rules or the background knowledge force it;
every other adjacency stays undirected (the Markov equivalence class, a CPDAG / maximally
oriented PDAG). No method that claims to orient two variables from observational data alone
(LiNGAM, ANM) is used: on Morpho-MNIST they orient thickness-intensity the wrong way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from glance.causal._causallearn import run_ges, run_pc
from glance.causal._checks import check_discovery_data, resolve_names_kinds
from glance.causal._pdag import PDAG, cpdag_from_dag
from glance.causal._threads import single_threaded
from glance.causal.graph import CausalGraph, Edge, Node, infer_kind
from glance.causal.knowledge import BackgroundKnowledge, ResolvedKnowledge
from glance.causal.options import CI_TESTS, DISCOVERY_METHODS, DiscoveryOptions
from glance.exceptions import DiscoveryError

__all__ = [
    "discover",
    "dag_to_cpdag",
    "DISCOVERY_METHODS",
    "CI_TESTS",
    "DiscoveryOptions",
    "standardised_effects",
]

logger = logging.getLogger(__name__)


def discover(
    data: np.ndarray,
    names: Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
    *,
    options: DiscoveryOptions | None = None,
    knowledge: BackgroundKnowledge | None = None,
    ci_kwargs: Mapping[str, Any] | None = None,
    random_state: int | None = 0,
    **overrides: Any,
) -> CausalGraph:
    """Learn a causal graph (CPDAG / MPDAG) from samples.

    Parameters
    ----------
    data
        Array of shape (n_samples, n_nodes), one column per node.
    names
        Node names (default ``x0, x1, ...``): context column names, ``concept_<i>``,
        ``output_<class>``.
    kinds
        Node kinds (``context | concept | output``); default inferred from the names
        (``output_*`` -> output, ``concept_*`` -> concept, else context).
    options
        The search: method, CI test, ``alpha``, orientation rule, ``max_k``,
        ``kci_subsample`` (see :class:`~glance.causal.options.DiscoveryOptions`; default: its
        defaults, PC with Fisher-z at ``alpha = 0.01``).
    knowledge
        Background knowledge; ``None`` applies the default tiers only (contexts -> concepts ->
        outputs, outputs are sinks and never cause each other). Under the default tiers, PC
        never conditions on output nodes: sibling logits are near-copies of each other, and a
        separating set without outputs always exists when outputs are sinks.
    ci_kwargs
        Extra keyword arguments for causal-learn's CI test.
    random_state
        Seed for the KCI subsample.
    **overrides
        Fields of :class:`~glance.causal.options.DiscoveryOptions` replacing those of
        ``options`` (``discover(x, method="ges", alpha=0.05)``).

    Returns
    -------
    CausalGraph
        Edges with ``confidence = 1``, ``orientation_confidence`` 1 (directed) or 0
        (undirected), ``effect`` the standardised effect on the full data;
        ``meta`` holds the algorithm, its parameters and ``elapsed_s``.

    Raises
    ------
    DiscoveryError
        Degenerate data (NaN, constant, duplicated or collinear columns, too few samples),
        naming the columns.
    ConfigError
        An unknown option, method or CI test, ``alpha`` out of range, or knowledge naming
        unknown nodes.
    """
    start = time.perf_counter()
    opts = DiscoveryOptions.resolve(options, overrides, "discover")
    x = np.asarray(data)
    names, kinds = resolve_names_kinds(x.shape[1] if x.ndim == 2 else -1, names, kinds)
    rk = (knowledge or BackgroundKnowledge()).resolve(names, kinds)
    with single_threaded():
        x = check_discovery_data(x, names)
        pdag, extra = discover_pdag(
            x, names, rk, opts, ci_kwargs=ci_kwargs or {}, random_state=random_state
        )
        effects = standardised_effects(x, pdag)
    edges = [
        Edge(names[a], names[b], True, 1.0, 1.0, effects[(a, b)]) for a, b in pdag.directed_edges()
    ]
    edges += [
        Edge(names[a], names[b], False, 1.0, 0.0, effects[(a, b)])
        for a, b in pdag.undirected_edges()
    ]
    meta = {
        "algorithm": opts.method,
        "params": {**opts.params(), "knowledge": (knowledge or BackgroundKnowledge()).to_dict()},
        "n_samples": int(x.shape[0]),
        **extra,
        "elapsed_s": time.perf_counter() - start,
    }
    logger.info(
        "discovered %d edges among %d nodes with %s in %.2fs",
        len(edges),
        len(names),
        opts.method,
        meta["elapsed_s"],
    )
    return CausalGraph([Node(n, k) for n, k in zip(names, kinds, strict=True)], edges, meta)


def discover_pdag(
    x: np.ndarray,
    names: Sequence[str],
    rk: ResolvedKnowledge,
    options: DiscoveryOptions,
    *,
    ci_kwargs: Mapping[str, Any],
    random_state: int | None,
) -> tuple[PDAG, dict[str, Any]]:
    """Run the backend on checked data and apply the knowledge; index-level result."""
    o = options
    if o.method == "pc":
        xs = x
        if o.ci_test == "kci" and x.shape[0] > o.kci_subsample:
            rng = np.random.default_rng(random_state)
            xs = x[np.sort(rng.choice(x.shape[0], o.kci_subsample, replace=False))]
        # outputs are sinks under the default tiers: never condition on them (see run_pc)
        sinks = [i for i, k in enumerate(rk.kinds) if k == "output"] if rk.default_tiers else []
        directed, undirected, extra = run_pc(
            xs,
            names,
            rk,
            alpha=o.alpha,
            ci_test=o.ci_test,
            ci_kwargs=ci_kwargs,
            max_k=o.max_k,
            sinks=sinks,
            orientation=o.orientation,
        )
    else:
        directed, undirected, extra = run_ges(
            x, names, score="local_score_BIC", max_parents=o.max_k
        )
    pdag = PDAG.from_edges(len(names), directed, undirected)
    conflicts = apply_knowledge(pdag, rk)
    if conflicts:
        extra = {**extra, "knowledge_conflicts": conflicts}
    return pdag, extra


def apply_knowledge(pdag: PDAG, rk: ResolvedKnowledge) -> list[str]:
    """Make ``pdag`` agree with the knowledge, then close it under Meek's rules (in place).

    Returns messages for data orientations the knowledge overrode (possible with GES, which
    has no knowledge of its own).
    """
    names, notes = rk.names, []
    for a in range(pdag.n):
        for b in sorted(pdag.neighbours(a)):
            if a < b and rk.is_forbidden(a, b) and rk.is_forbidden(b, a):
                pdag.remove(a, b)
                notes.append(f"removed {names[a]} - {names[b]}: both directions forbidden")
    for a, b in sorted(rk.required):
        if b in pdag.out[a]:
            continue
        if b in pdag.inc[a]:
            notes.append(f"{names[b]} -> {names[a]} reversed: required {names[a]} -> {names[b]}")
        elif not pdag.adjacent(a, b):
            notes.append(f"added required edge {names[a]} -> {names[b]} (data found none)")
        pdag.add_directed(a, b)
    for a, b in pdag.directed_edges():
        if not rk.allowed(a, b):
            notes.append(f"{names[a]} -> {names[b]} reversed: the knowledge forbids it")
            pdag.add_directed(b, a)
    for a, b in pdag.undirected_edges():
        if not rk.allowed(a, b):
            pdag.add_directed(b, a)
        elif not rk.allowed(b, a):
            pdag.add_directed(a, b)
    notes += _break_cycles(pdag, rk)
    pdag.meek(allowed=rk.allowed)
    return notes


def _break_cycles(pdag: PDAG, rk: ResolvedKnowledge) -> list[str]:
    """Leave undirected the data's orientations on any directed cycle (in place).

    Finite-sample CI tests can orient colliders that contradict each other and close a cycle;
    the data then does not decide those directions, so they are reported undirected. An
    orientation the knowledge forces (its reverse is forbidden) is kept unless the cycle
    consists of forced orientations only.
    """
    import networkx as nx

    notes = []
    while True:
        g = nx.DiGraph(pdag.directed_edges())
        try:
            cycle = [(int(a), int(b)) for a, b in nx.find_cycle(g)]
        except nx.NetworkXNoCycle:
            return notes
        free = [(a, b) for a, b in cycle if rk.allowed(b, a)]
        for a, b in free or cycle:
            pdag.add_undirected(a, b)
        names = rk.names
        notes.append(
            "conflicting orientations on the cycle "
            + " -> ".join(names[a] for a, _ in cycle)
            + f" -> {names[cycle[0][0]]}: "
            + ", ".join(f"{names[a]} - {names[b]}" for a, b in (free or cycle))
            + " left undirected"
        )


def dag_to_cpdag(
    names: Sequence[str],
    edges: Sequence[tuple[str, str]],
    *,
    kinds: Sequence[str] | None = None,
    knowledge: BackgroundKnowledge | None = None,
) -> CausalGraph:
    """The CPDAG of a DAG (with ``knowledge``: its maximally oriented PDAG).

    Parameters
    ----------
    names
        The DAG's nodes.
    edges
        Its ``(source, target)`` edges, by name.
    kinds
        Node kinds; default inferred from the names (as in :func:`discover`).
    knowledge
        Optional background knowledge to orient further (applied as :func:`discover` does).

    Raises
    ------
    KeyError
        An edge names a node not in ``names``.
    ValueError
        The edges form a cycle.
    """
    idx = {n: i for i, n in enumerate(names)}
    pdag = cpdag_from_dag(len(names), [(idx[a], idx[b]) for a, b in edges])
    kinds = list(kinds) if kinds is not None else [infer_kind(n) for n in names]
    if knowledge is not None:
        apply_knowledge(pdag, knowledge.resolve(list(names), kinds))
    directed = [(names[a], names[b]) for a, b in pdag.directed_edges()]
    undirected = [(names[a], names[b]) for a, b in pdag.undirected_edges()]
    return CausalGraph.from_edges(list(names), directed, undirected, kinds)


def standardised_effects(x: np.ndarray, pdag: PDAG) -> dict[tuple[int, int], float]:
    """Standardised effect of every edge, from the correlation matrix.

    For ``a -> b``: the coefficient of ``a`` when the standardised ``b`` is regressed on its
    standardised parents. For ``a -- b``: the coefficient of ``a`` when ``b`` is regressed on
    ``a`` and ``b``'s parents (the association left after the known causes).
    """
    corr = np.corrcoef(x, rowvar=False)
    out: dict[tuple[int, int], float] = {}
    for b in range(pdag.n):
        parents = sorted(pdag.inc[b])
        for a in parents:
            out[(a, b)] = _coef(corr, parents, a, b)
    for a, b in pdag.undirected_edges():
        out[(a, b)] = _coef(corr, sorted(set(pdag.inc[b]) | {a}), a, b)
    return out


def _coef(corr: np.ndarray, regressors: list[int], a: int, b: int) -> float:
    c_ss = corr[np.ix_(regressors, regressors)]
    c_sb = corr[regressors, b]
    try:
        beta = np.linalg.solve(c_ss, c_sb)
    except np.linalg.LinAlgError:
        raise DiscoveryError("singular correlation among the parents of a node") from None
    return float(beta[regressors.index(a)])
