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
from typing import Any, Literal

import numpy as np

from glance.causal._causallearn import run_ges, run_pc
from glance.causal._checks import check_discovery_data, resolve_names_kinds
from glance.causal._pdag import PDAG
from glance.causal._threads import single_threaded
from glance.causal.graph import CausalGraph, Edge, Node
from glance.causal.knowledge import BackgroundKnowledge, ResolvedKnowledge
from glance.exceptions import ConfigError, DiscoveryError

__all__ = ["discover", "DISCOVERY_METHODS", "CI_TESTS", "standardised_effects"]

logger = logging.getLogger(__name__)

DISCOVERY_METHODS = ("pc", "ges")
#: CI tests for PC. ``d_separation`` is an oracle for tests: pass ``ci_kwargs={"true_dag": G}``
#: with a ``networkx.DiGraph`` over column indices.
CI_TESTS = ("fisherz", "kci", "d_separation")


def discover(
    data: np.ndarray,
    names: Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
    *,
    method: Literal["pc", "ges"] = "pc",
    ci_test: Literal["fisherz", "kci", "d_separation"] = "fisherz",
    alpha: float = 0.01,
    knowledge: BackgroundKnowledge | None = None,
    orientation: Literal["conservative", "sepset"] = "conservative",
    max_k: int | None = None,
    kci_subsample: int = 400,
    ci_kwargs: Mapping[str, Any] | None = None,
    random_state: int | None = 0,
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
    method
        ``"pc"`` (constraint-based) or ``"ges"`` (score-based, BIC).
    ci_test
        PC's conditional-independence test: ``"fisherz"`` (linear-Gaussian), ``"kci"``
        (kernel, nonlinear; run on a random subsample of ``kci_subsample`` rows) or the
        ``"d_separation"`` oracle (tests only).
    alpha
        Significance level of the CI tests, in (0, 1). Smaller gives sparser graphs.
    knowledge
        Background knowledge; ``None`` applies the default tiers only (contexts -> concepts ->
        outputs, outputs are sinks and never cause each other). Under the default tiers, PC
        never conditions on output nodes: sibling logits are near-copies of each other, and a
        separating set without outputs always exists when outputs are sinks.
    orientation
        PC's collider rule: ``"conservative"`` orients only definite colliders (an ambiguous
        triple stays unoriented); ``"sepset"`` is the classic rule. Ignored by GES.
    max_k
        Largest conditioning set PC tries (``None``: no limit).
    kci_subsample
        Rows used by KCI (its cost grows with the cube of the rows).
    ci_kwargs
        Extra keyword arguments for causal-learn's CI test.
    random_state
        Seed for the KCI subsample.

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
        An unknown method or CI test, ``alpha`` out of range, or knowledge naming unknown nodes.
    """
    start = time.perf_counter()
    params = _check_params(method, ci_test, alpha, kci_subsample, orientation)
    x = np.asarray(data)
    names, kinds = resolve_names_kinds(x.shape[1] if x.ndim == 2 else -1, names, kinds)
    rk = (knowledge or BackgroundKnowledge()).resolve(names, kinds)
    with single_threaded():
        x = check_discovery_data(x, names)
        pdag, extra = discover_pdag(
            x,
            names,
            rk,
            method=method,
            ci_test=ci_test,
            alpha=alpha,
            max_k=max_k,
            kci_subsample=kci_subsample,
            ci_kwargs=ci_kwargs or {},
            orientation=orientation,
            random_state=random_state,
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
        "algorithm": method,
        "params": {
            **params,
            "max_k": max_k,
            "knowledge": (knowledge or BackgroundKnowledge()).to_dict(),
        },
        "n_samples": int(x.shape[0]),
        **extra,
        "elapsed_s": time.perf_counter() - start,
    }
    logger.info(
        "discovered %d edges among %d nodes with %s in %.2fs",
        len(edges),
        len(names),
        method,
        meta["elapsed_s"],
    )
    return CausalGraph([Node(n, k) for n, k in zip(names, kinds, strict=True)], edges, meta)


ORIENTATIONS = ("conservative", "sepset")


def _check_params(
    method: str, ci_test: str, alpha: float, kci_subsample: int, orientation: str
) -> dict:
    if method not in DISCOVERY_METHODS:
        raise ConfigError(
            f"'method' of discover must be one of {list(DISCOVERY_METHODS)}; got {method!r}"
        )
    if ci_test not in CI_TESTS:
        raise ConfigError(f"'ci_test' of discover must be one of {list(CI_TESTS)}; got {ci_test!r}")
    if not isinstance(alpha, (int, float)) or not 0 < float(alpha) < 1:
        raise ConfigError(f"'alpha' of discover must be in (0, 1); got {alpha!r}")
    if not isinstance(kci_subsample, int) or kci_subsample < 20:
        raise ConfigError(
            f"'kci_subsample' of discover must be an integer >= 20; got {kci_subsample!r}"
        )
    if orientation not in ORIENTATIONS:
        raise ConfigError(
            f"'orientation' of discover must be one of {list(ORIENTATIONS)}; got {orientation!r}"
        )
    params: dict[str, Any] = {"method": method}
    if method == "pc":
        params.update(alpha=float(alpha), ci_test=ci_test, orientation=orientation)
        if ci_test == "kci":
            params["kci_subsample"] = kci_subsample
    else:
        params["score"] = "local_score_BIC"
    return params


def discover_pdag(
    x: np.ndarray,
    names: Sequence[str],
    rk: ResolvedKnowledge,
    *,
    method: str,
    ci_test: str,
    alpha: float,
    max_k: int | None,
    kci_subsample: int,
    ci_kwargs: Mapping[str, Any],
    random_state: int | None,
    orientation: str = "conservative",
) -> tuple[PDAG, dict[str, Any]]:
    """Run the backend on checked data and apply the knowledge; index-level result."""
    if method == "pc":
        xs = x
        if ci_test == "kci" and x.shape[0] > kci_subsample:
            rng = np.random.default_rng(random_state)
            xs = x[np.sort(rng.choice(x.shape[0], kci_subsample, replace=False))]
        # outputs are sinks under the default tiers: never condition on them (see run_pc)
        sinks = [i for i, k in enumerate(rk.kinds) if k == "output"] if rk.default_tiers else []
        directed, undirected, extra = run_pc(
            xs,
            names,
            rk,
            alpha=alpha,
            ci_test=ci_test,
            ci_kwargs=ci_kwargs,
            max_k=max_k,
            sinks=sinks,
            orientation=orientation,
        )
    else:
        directed, undirected, extra = run_ges(x, names, score="local_score_BIC", max_parents=max_k)
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
