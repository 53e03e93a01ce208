"""Scores of a learned causal graph against a known DAG (plain functions).

The learned graph is an equivalence class (CPDAG), so it is compared with the CPDAG of the true
DAG, not with the DAG itself: an edge the data cannot orient is *correctly* undirected. The
CPDAG is computed properly (skeleton, v-structures, Meek's rules to closure); with background
knowledge the target is the maximally oriented PDAG.

Each pair of nodes has one mark: none, ``a -> b``, ``b -> a`` or ``a -- b``.

- SHD: the number of pairs whose marks differ (missing, extra, or differently oriented edge).
- Edge precision / recall / F1: on adjacencies, ignoring orientation.
- Orientation accuracy: among pairs adjacent in both graphs, the fraction with the same mark.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import networkx as nx

from glance.exceptions import DataValidationError, GlanceError

__all__ = [
    "true_cpdag",
    "structural_hamming_distance",
    "edge_precision_recall_f1",
    "orientation_accuracy",
    "graph_scores",
    "truth_scores",
]

TruthLike = Any  # nx.DiGraph | CausalGraph | Mapping with "nodes"/"edges" | edge list


def _truth_dag(truth: TruthLike, names: Sequence[str] | None) -> tuple[list[str], list]:
    from glance.causal.graph import CausalGraph

    if isinstance(truth, CausalGraph):
        if not truth.is_dag():
            raise DataValidationError("'truth' must be a DAG (all edges directed, no cycle)")
        return truth.names, [(e.source, e.target) for e in truth.edges()]
    if isinstance(truth, nx.DiGraph):
        return [str(n) for n in truth.nodes], [(str(a), str(b)) for a, b in truth.edges]
    if isinstance(truth, Mapping):
        nodes = [n["name"] if isinstance(n, Mapping) else n for n in truth.get("nodes", [])]
        edges = []
        for e in truth.get("edges", []):
            edges.append((e["source"], e["target"]) if isinstance(e, Mapping) else tuple(e))
        return [str(n) for n in nodes], [(str(a), str(b)) for a, b in edges]
    edges = [(str(a), str(b)) for a, b in truth]
    if names is None:
        names = sorted({n for e in edges for n in e})
    return list(names), edges


def true_cpdag(
    truth: TruthLike, *, names: Sequence[str] | None = None, knowledge: Any = None
) -> Any:
    """The CPDAG (or, with ``knowledge``, the maximally oriented PDAG) of a true DAG.

    Parameters
    ----------
    truth
        The DAG: a ``networkx.DiGraph``, a :class:`~glance.causal.CausalGraph` with only
        directed edges, a mapping ``{"nodes": [...], "edges": [[source, target], ...]}`` or an
        iterable of ``(source, target)`` pairs (with ``names`` for isolated nodes).
    knowledge
        Optional :class:`~glance.causal.BackgroundKnowledge` to orient further.

    Returns
    -------
    CausalGraph
    """
    from glance.causal import dag_to_cpdag

    nodes, edges = _truth_dag(truth, names)
    try:
        return dag_to_cpdag(nodes, edges, knowledge=knowledge)
    except GlanceError:  # the knowledge's own errors (unknown node names) pass unchanged
        raise
    except KeyError as exc:
        raise DataValidationError(f"'truth' has an edge on unknown node {exc}") from None
    except ValueError as exc:
        raise DataValidationError(f"'truth': {exc}") from None


def _marks(graph: Any, nodes: Sequence[str]) -> dict[frozenset, tuple[str, str] | None]:
    """Pair -> ``(source, target)`` for a directed edge, ``None`` for undirected."""
    keep = set(nodes)
    out: dict[frozenset, tuple[str, str] | None] = {}
    for e in graph.edges():
        if e.source in keep and e.target in keep:
            out[frozenset((e.source, e.target))] = (e.source, e.target) if e.directed else None
    return out


def _prepare(
    estimated: Any, truth: TruthLike, nodes: Iterable[str] | None, knowledge: Any
) -> tuple[dict, dict]:
    target = true_cpdag(truth, knowledge=knowledge)
    names = list(nodes) if nodes is not None else target.names
    missing = [n for n in names if n not in estimated.names]
    if missing:
        raise DataValidationError(f"the estimated graph lacks node(s) {missing} of the truth")
    absent = [n for n in names if n not in target.names]
    if absent:
        raise DataValidationError(f"'nodes' names {absent}, which the truth does not have")
    return _marks(estimated, names), _marks(target, names)


def structural_hamming_distance(
    estimated: Any, truth: TruthLike, *, nodes: Iterable[str] | None = None, knowledge: Any = None
) -> int:
    """SHD between ``estimated`` and the CPDAG of the true DAG, over ``nodes`` (default: the
    truth's nodes; nodes of ``estimated`` outside them are ignored)."""
    est, tru = _prepare(estimated, truth, nodes, knowledge)
    pairs = set(est) | set(tru)
    return sum(1 for p in pairs if p not in est or p not in tru or est[p] != tru[p])


def edge_precision_recall_f1(
    estimated: Any, truth: TruthLike, *, nodes: Iterable[str] | None = None
) -> dict[str, float]:
    """Adjacency precision, recall and F1 (orientation ignored); NaN where undefined."""
    est, tru = _prepare(estimated, truth, nodes, None)
    tp = len(set(est) & set(tru))
    precision = tp / len(est) if est else math.nan
    recall = tp / len(tru) if tru else math.nan
    f1 = (
        2 * precision * recall / (precision + recall)
        if est and tru and precision + recall > 0
        else (0.0 if est and tru else math.nan)
    )
    return {"precision": precision, "recall": recall, "f1": f1}


def orientation_accuracy(
    estimated: Any, truth: TruthLike, *, nodes: Iterable[str] | None = None, knowledge: Any = None
) -> float:
    """Among pairs adjacent in both graphs, the fraction with the true CPDAG's mark (NaN if no
    pair is shared)."""
    est, tru = _prepare(estimated, truth, nodes, knowledge)
    common = set(est) & set(tru)
    if not common:
        return math.nan
    return sum(est[p] == tru[p] for p in common) / len(common)


def graph_scores(
    estimated: Any, truth: TruthLike, *, nodes: Iterable[str] | None = None, knowledge: Any = None
) -> dict[str, float]:
    """All scores at once: ``shd``, ``precision``, ``recall``, ``f1``, ``orientation_accuracy``."""
    nodes = list(nodes) if nodes is not None else None
    return {
        "shd": structural_hamming_distance(estimated, truth, nodes=nodes, knowledge=knowledge),
        **edge_precision_recall_f1(estimated, truth, nodes=nodes),
        "orientation_accuracy": orientation_accuracy(
            estimated, truth, nodes=nodes, knowledge=knowledge
        ),
    }


def _project(
    nodes: Sequence[str], edges: Sequence[tuple[str, str]], keep: Sequence[str]
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Latent projection of a DAG onto ``keep``: ``u -> v`` when a directed path from ``u`` to
    ``v`` runs through omitted nodes only; pairs with a common omitted cause are returned apart
    (a DAG over ``keep`` cannot represent them)."""
    dag = nx.DiGraph(list(edges))
    dag.add_nodes_from(nodes)
    kept = set(keep)

    def reach(u: str) -> set[str]:
        """Kept nodes reachable from ``u`` through omitted nodes only."""
        out, stack, seen = set(), list(dag.successors(u)), set()
        while stack:
            w = stack.pop()
            if w in seen:
                continue
            seen.add(w)
            if w in kept:
                out.add(w)
            else:
                stack.extend(dag.successors(w))
        return out

    directed = sorted({(u, v) for u in keep for v in reach(u)})
    confounded = set()
    for w in dag.nodes:
        if w not in kept:
            below = sorted(reach(w))
            confounded |= {(a, b) for i, a in enumerate(below) for b in below[i + 1 :]}
    linked = {frozenset(e) for e in directed}
    return directed, sorted(p for p in confounded if frozenset(p) not in linked)


def truth_scores(
    estimated: Any, truth: Mapping[str, Any], *, knowledge: Any = None
) -> dict[str, Any]:
    """Score a run's graph against a ``truth.json`` (``glance data shapes`` writes one).

    ``truth`` has ``nodes``, ``edges`` (``{"source", "target"}`` or pairs), optionally
    ``factors`` and ``label_rule.factors``; its ``label`` node stands for the classifier's
    decision. The factors the graph has as nodes are scored (SHD, precision/recall/F1,
    orientation accuracy) against the CPDAG of the truth projected onto them: a path through
    factors the run does not model becomes an edge, and pairs confounded by such a factor are
    left out and listed. Each output node is checked for the label-rule factors among its
    parents.
    """
    from glance.causal.graph import CausalGraph

    nodes, edges = _truth_dag(truth, None)
    label = str(truth.get("label", "label"))
    factors = [str(f) for f in truth.get("factors", [n for n in nodes if n != label])]
    keep = [f for f in factors if f in estimated.names]
    if len(keep) < 2:
        raise DataValidationError(
            f"the graph models {keep} of the truth's factors {factors}; need at least two"
        )
    directed, confounded = _project(nodes, edges, keep)
    skip = {frozenset(p) for p in confounded}
    est = estimated.with_edges(
        [e for e in estimated.edges() if frozenset((e.source, e.target)) not in skip]
    )
    truth_graph = CausalGraph.from_edges(keep, directed, kinds=["context"] * len(keep))
    scores: dict[str, Any] = {
        "nodes": keep,
        **graph_scores(est, truth_graph, nodes=keep, knowledge=knowledge),
        "n_true_edges": len(directed),
        "excluded_confounded_pairs": [list(p) for p in confounded],
    }
    rule = (
        truth.get("label_rule", {}).get("factors")
        if isinstance(truth.get("label_rule"), Mapping)
        else None
    )
    rule = [str(f) for f in (rule if rule is not None else [a for a, b in edges if b == label])]
    outputs = {}
    for o in (n for n, k in zip(estimated.names, estimated.kinds, strict=True) if k == "output"):
        parents = estimated.parents(o)
        found = [f for f in rule if f in parents]
        modelled = [f for f in rule if f in estimated.names]
        outputs[o] = {
            "rule_factors": rule,
            "found": found,
            "recall": len(found) / len(modelled) if modelled else math.nan,
            "other_factor_parents": [p for p in parents if p in factors and p not in rule],
        }
    scores["outputs"] = outputs
    return scores
