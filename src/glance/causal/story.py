"""A causal graph a person can read: the neighbourhood of the outputs, and what it says in words.

The full graph of a run (20 nodes and 70 edges for the demo's digit classifier) is a tangle;
what a reader asks of it is what the *prediction* depends on. :func:`readable_graph` keeps the
output nodes and their causal neighbourhood — their parents, the parents' parents and the
parents' undirected neighbours, every context — with every edge into an output and then the
strongest other edges up to ``max_edges``. With more than a few classes the outputs are drawn as
one node, so that the picture stays small while every output's parents stay in it.
:func:`graph_story` says the same in a sentence ("the prediction depends directly on thickness
and concept_3; intensity does not affect it").
"""

from __future__ import annotations

import math
from collections import defaultdict

from glance.causal.graph import CausalGraph, Edge, Node

__all__ = ["readable_graph", "graph_story", "OUTPUTS_NODE"]

#: Name of the single output node drawn for a classifier with many classes.
OUTPUTS_NODE = "outputs"
#: Above this many output nodes they are drawn as one.
GROUP_OUTPUTS_ABOVE = 3


def _strength(e: Edge) -> float:
    eff = abs(e.effect) if math.isfinite(e.effect) else 0.0
    return eff * (e.confidence if math.isfinite(e.confidence) else 1.0)


def _outputs(graph: CausalGraph) -> list[str]:
    return [n.name for n in graph.nodes if n.kind == "output"]


def _output_parents(graph: CausalGraph) -> dict[str, list[Edge]]:
    """Per node, its edges into outputs (directed or not), strongest first."""
    outs = set(_outputs(graph))
    found: dict[str, list[Edge]] = defaultdict(list)
    for e in graph.edges():
        if e.target in outs and e.source not in outs:
            found[e.source].append(e)
        elif e.source in outs and not e.directed and e.target not in outs:
            found[e.target].append(e)
    return {k: sorted(v, key=lambda e: -_strength(e)) for k, v in found.items()}


def readable_graph(
    graph: CausalGraph,
    *,
    max_edges: int = 15,
    group_outputs_above: int = GROUP_OUTPUTS_ABOVE,
) -> CausalGraph:
    """The outputs, their causal neighbourhood and the strongest edges (see the module).

    Every edge from a parent into an output is kept (merged into one edge per parent when the
    outputs are drawn as one node, with the strongest effect and its class in
    ``meta["output_edges"]``); other edges among the kept nodes are added strongest first
    (|effect| × confidence) while fewer than ``max_edges`` edges are drawn.
    """
    outputs = _outputs(graph)
    parents = _output_parents(graph)
    keep = set(parents) | {n.name for n in graph.nodes if n.kind == "context"}
    for p in list(parents):
        keep |= set(graph.parents(p)) | set(graph.neighbours(p))
    keep -= set(outputs)
    group = len(outputs) > group_outputs_above
    edges: list[Edge] = []
    via: dict[str, str] = {}
    if group:
        for p, es in parents.items():
            top = es[0]
            via[p] = top.target if top.target in outputs else top.source
            edges.append(
                Edge(p, OUTPUTS_NODE, True, max(e.confidence for e in es), 1.0, top.effect)
            )
    else:
        edges += [e for es in parents.values() for e in es]
    others = sorted(
        (
            e
            for e in graph.edges()
            if e.source in keep and e.target in keep and e not in edges
        ),
        key=lambda e: -_strength(e),
    )
    edges += others[: max(0, max_edges - len(edges))]
    nodes = [n for n in graph.nodes if n.name in keep]
    if group:
        nodes.append(Node(OUTPUTS_NODE, "output"))
    else:
        nodes += [n for n in graph.nodes if n.name in outputs]
    meta = {
        "readable": {
            "of_nodes": len(graph.nodes),
            "of_edges": len(graph.edges()),
            "outputs_grouped": group,
            "output_edges": via,
        }
    }
    return CausalGraph(nodes, edges, meta)


def _names(items: list[str], limit: int = 4) -> str:
    shown = items[:limit]
    text = ", ".join(shown[:-1]) + (f" and {shown[-1]}" if len(shown) > 1 else shown[0])
    return text + (f" (and {len(items) - limit} more)" if len(items) > limit else "")


def graph_story(graph: CausalGraph) -> str:
    """What the graph says about the classifier, in one or two sentences."""
    outputs = _outputs(graph)
    if not outputs:
        return "The graph has no output node, so it says nothing about the prediction."
    subject = "The prediction" if len(outputs) > 1 else f"The output {outputs[0]}"
    parents = _output_parents(graph)
    if not parents:
        return f"{subject} depends on no node of the graph."
    direct = sorted(parents, key=lambda p: -_strength(parents[p][0]))
    oriented = [p for p in direct if any(e.directed for e in parents[p])]
    unoriented = [p for p in direct if p not in oriented]
    ancestors: set[str] = set()
    for p in oriented:
        ancestors |= _ancestors(graph, p)
    ancestors -= set(direct)
    parts = [f"{subject} depends directly on {_names(oriented)}" if oriented else subject]
    if unoriented:
        parts.append(f"is linked to {_names(unoriented)} by edges the data could not orient")
    sentence = (" and " if oriented and unoriented else " ").join(parts) + "."
    contexts = [n.name for n in graph.nodes if n.kind == "context"]
    via = [c for c in contexts if c in ancestors]
    unaffected = [c for c in contexts if c not in ancestors and c not in direct]
    notes = []
    reach = set(oriented) | ancestors
    for c in via:  # name the first steps of its paths: its children on the way
        through = [k for k in graph.children(c) if k in reach]
        notes.append(f"{c} affects it only through {_names(through, 3)}")
    if unaffected:
        verb = "does" if len(unaffected) == 1 else "do"
        notes.append(f"{_names(unaffected)} {verb} not affect it")
    if notes:
        text = "; ".join(notes)
        sentence += " " + text[0].upper() + text[1:] + "."
    return sentence


def _ancestors(graph: CausalGraph, name: str) -> set[str]:
    seen: set[str] = set()
    todo = [name]
    while todo:
        for p in graph.parents(todo.pop()):
            if p not in seen:
                seen.add(p)
                todo.append(p)
    return seen
