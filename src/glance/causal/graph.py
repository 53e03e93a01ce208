"""One causal graph type for every discovery algorithm.

Adjacency encoding (the one place it is documented)
---------------------------------------------------
:meth:`CausalGraph.adjacency` returns an ``int8`` matrix ``M`` of shape ``(n_nodes, n_nodes)``
where ``M[i, j]`` is the :class:`Endpoint` mark *at node j* of the edge between ``i`` and ``j``:

- ``M[i, j] == M[j, i] == Endpoint.NONE`` (0): no edge;
- ``M[i, j] == Endpoint.ARROW`` (2) and ``M[j, i] == Endpoint.TAIL`` (1): ``i -> j``;
- ``M[i, j] == M[j, i] == Endpoint.TAIL``: ``i -- j`` (undirected: the data cannot orient it).

Bidirected edges are not represented: glance reports CPDAGs / maximally oriented PDAGs, and an
edge whose orientation is contradictory is reported undirected.

JSON contract (``graph.json``)::

    {"nodes": [{"name": ..., "kind": "context" | "concept" | "output"}, ...],
     "edges": [{"source", "target", "directed", "confidence", "orientation_confidence",
                "effect"}, ...],
     "meta": {...}}

``confidence`` is the edge's presence frequency (either direction) over bootstrap resamples (1.0
for a single run), ``orientation_confidence`` the share of the resamples *that have the edge* in
which it was oriented ``source -> target`` (so ``confidence * orientation_confidence`` is the
share of all resamples with that orientation), ``effect`` the standardised effect of source on
target (for an undirected edge the standardised association).
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import networkx as nx
import numpy as np

from glance._io import atomic_write_json, atomic_write_text
from glance.exceptions import DataValidationError

__all__ = ["Endpoint", "NodeKind", "Node", "Edge", "CausalGraph", "NODE_KINDS", "infer_kind"]

NodeKind = Literal["context", "concept", "output"]
NODE_KINDS: tuple[str, ...] = ("context", "concept", "output")
# Volatile meta keys are kept on the object but left out of to_dict(), so that the same seed
# gives byte-identical JSON.
_VOLATILE_META = ("elapsed_s",)
_ROUND = 6


class Endpoint(enum.IntEnum):
    """Mark at one end of an edge (see the module docstring for the matrix encoding)."""

    NONE = 0
    TAIL = 1
    ARROW = 2


def infer_kind(name: str) -> str:
    """Kind implied by the node naming convention: ``output_*``, ``concept_*``, else context."""
    if name.startswith("output_"):
        return "output"
    if name.startswith("concept_"):
        return "concept"
    return "context"


@dataclass(frozen=True)
class Node:
    """A graph node: its name and kind (``context``, ``concept`` or ``output``)."""

    name: str
    kind: str = "context"


@dataclass(frozen=True)
class Edge:
    """An edge of a :class:`CausalGraph`.

    Attributes
    ----------
    source, target
        Node names. For an undirected edge the pair is unordered; ``source`` is the end the
        edge was more often oriented away from (ties: node order).
    directed
        ``True`` for ``source -> target``, ``False`` for ``source -- target``.
    confidence
        Presence frequency (either direction) in ``[0, 1]``.
    orientation_confidence
        Among the resamples that have the edge, the share oriented ``source -> target``.
    effect
        Standardised effect of source on target (NaN when not computed).
    """

    source: str
    target: str
    directed: bool
    confidence: float = 1.0
    orientation_confidence: float = 1.0
    effect: float = float("nan")

    def __post_init__(self) -> None:
        # numpy scalars would leak into reprs and comparisons; keep plain Python values
        for name in ("confidence", "orientation_confidence", "effect"):
            object.__setattr__(self, name, _float(getattr(self, name)))
        object.__setattr__(self, "directed", bool(self.directed))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with the keys of the graph.json contract (floats rounded)."""
        return {
            "source": self.source,
            "target": self.target,
            "directed": bool(self.directed),
            "confidence": _round(self.confidence),
            "orientation_confidence": _round(self.orientation_confidence),
            "effect": _round(self.effect),
        }


def _round(x: float) -> float | None:
    x = float(x)
    if not math.isfinite(x):
        return None
    # round() gives -0.0 for tiny negatives; normalise so equal graphs give equal bytes
    return round(x, _ROUND) + 0.0


class CausalGraph:
    """A causal graph over typed nodes: a CPDAG / maximally oriented PDAG or a DAG.

    Parameters
    ----------
    nodes
        The nodes, in column order of the data they were learned from.
    edges
        The edges (at most one per pair of nodes).
    meta
        Provenance: ``algorithm``, ``params``, ``n_samples``, ``elapsed_s`` and, for bootstrap
        graphs, per-edge frequencies.

    Raises
    ------
    DataValidationError
        Duplicate or unknown node names, an unknown kind, a self-loop or two edges on one pair.

    Examples
    --------
    >>> g = CausalGraph.from_edges(["thickness", "intensity"], [("thickness", "intensity")])
    >>> g.parents("intensity")
    ['thickness']
    """

    def __init__(
        self,
        nodes: Iterable[Node | tuple[str, str]],
        edges: Iterable[Edge] = (),
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        self.nodes: tuple[Node, ...] = tuple(n if isinstance(n, Node) else Node(*n) for n in nodes)
        self.meta: dict[str, Any] = dict(meta or {})
        self._index: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            if node.name in self._index:
                raise DataValidationError(f"CausalGraph: duplicate node name {node.name!r}")
            if node.kind not in NODE_KINDS:
                raise DataValidationError(
                    f"CausalGraph: node {node.name!r} has kind {node.kind!r}; "
                    f"expected one of {list(NODE_KINDS)}"
                )
            self._index[node.name] = i
        pairs: dict[frozenset[str], Edge] = {}
        for e in edges:
            for end in (e.source, e.target):
                if end not in self._index:
                    raise DataValidationError(
                        f"CausalGraph: edge {e.source!r}-{e.target!r} names unknown node {end!r}"
                    )
            if e.source == e.target:
                raise DataValidationError(f"CausalGraph: self-loop on {e.source!r}")
            key = frozenset((e.source, e.target))
            if key in pairs:
                raise DataValidationError(
                    f"CausalGraph: more than one edge between {e.source!r} and {e.target!r}"
                )
            pairs[key] = e
        order = self._index
        self.edges_: tuple[Edge, ...] = tuple(
            sorted(pairs.values(), key=lambda e: (order[e.source], order[e.target]))
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_edges(
        cls,
        names: Sequence[str],
        directed: Iterable[tuple[str, str]] = (),
        undirected: Iterable[tuple[str, str]] = (),
        kinds: Sequence[str] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> CausalGraph:
        """Build a graph from lists of directed and undirected node-name pairs."""
        kinds = [infer_kind(n) for n in names] if kinds is None else list(kinds)
        edges = [Edge(a, b, True) for a, b in directed]
        edges += [Edge(a, b, False, orientation_confidence=0.0) for a, b in undirected]
        return cls([Node(n, k) for n, k in zip(names, kinds, strict=True)], edges, dict(meta or {}))

    @classmethod
    def from_adjacency(
        cls,
        adjacency: np.ndarray,
        names: Sequence[str],
        kinds: Sequence[str] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> CausalGraph:
        """Build a graph from an endpoint matrix (encoding in the module docstring)."""
        m = np.asarray(adjacency)
        directed, undirected = [], []
        for i, j in zip(*np.nonzero(np.triu(m + m.T)), strict=True):
            a, b = int(m[j, i]), int(m[i, j])  # a = mark at i, b = mark at j
            if a == Endpoint.TAIL and b == Endpoint.ARROW:
                directed.append((names[i], names[j]))
            elif a == Endpoint.ARROW and b == Endpoint.TAIL:
                directed.append((names[j], names[i]))
            else:
                undirected.append((names[i], names[j]))
        return cls.from_edges(names, directed, undirected, kinds, meta)

    # ------------------------------------------------------------------ queries
    @property
    def names(self) -> list[str]:
        """Node names in order."""
        return [n.name for n in self.nodes]

    @property
    def kinds(self) -> list[str]:
        """Node kinds in order."""
        return [n.kind for n in self.nodes]

    def index(self, name: str) -> int:
        """Position of node ``name``; raises :class:`DataValidationError` naming valid nodes."""
        try:
            return self._index[name]
        except KeyError:
            raise DataValidationError(
                f"unknown node {name!r}; the graph has nodes {self.names}"
            ) from None

    def kind(self, name: str) -> str:
        """Kind of node ``name``."""
        return self.nodes[self.index(name)].kind

    def edges(self) -> list[Edge]:
        """All edges, sorted by (source, target) position."""
        return list(self.edges_)

    def edge(self, a: str, b: str) -> Edge | None:
        """The edge between ``a`` and ``b`` in either direction, or ``None``."""
        self.index(a), self.index(b)
        for e in self.edges_:
            if {e.source, e.target} == {a, b}:
                return e
        return None

    def parents(self, name: str) -> list[str]:
        """Nodes with a directed edge into ``name`` (undirected neighbours excluded)."""
        self.index(name)
        return [e.source for e in self.edges_ if e.directed and e.target == name]

    def children(self, name: str) -> list[str]:
        """Nodes with a directed edge from ``name``."""
        self.index(name)
        return [e.target for e in self.edges_ if e.directed and e.source == name]

    def neighbours(self, name: str) -> list[str]:
        """Nodes joined to ``name`` by an undirected edge."""
        self.index(name)
        out = [e.target for e in self.edges_ if not e.directed and e.source == name]
        return out + [e.source for e in self.edges_ if not e.directed and e.target == name]

    def descendants(self, name: str) -> list[str]:
        """Nodes reachable from ``name`` along directed edges, in node order."""
        self.index(name)
        reach = nx.descendants(self._directed_part(), name)
        return [n for n in self.names if n in reach]

    def is_dag(self) -> bool:
        """``True`` when every edge is directed and there is no directed cycle."""
        return all(e.directed for e in self.edges_) and nx.is_directed_acyclic_graph(
            self._directed_part()
        )

    def adjacency(self) -> np.ndarray:
        """Endpoint matrix of shape (n_nodes, n_nodes), encoding in the module docstring."""
        p = len(self.nodes)
        m = np.zeros((p, p), dtype=np.int8)
        for e in self.edges_:
            i, j = self._index[e.source], self._index[e.target]
            m[i, j] = Endpoint.ARROW if e.directed else Endpoint.TAIL
            m[j, i] = Endpoint.TAIL
        return m

    def _directed_part(self) -> nx.DiGraph:
        g = nx.DiGraph()
        g.add_nodes_from(self.names)
        g.add_edges_from((e.source, e.target) for e in self.edges_ if e.directed)
        return g

    def with_edges(self, edges: Iterable[Edge], **meta: Any) -> CausalGraph:
        """A copy with other edges (and ``meta`` updated by keyword)."""
        return CausalGraph(self.nodes, list(edges), {**self.meta, **meta})

    def subgraph(self, names: Iterable[str]) -> CausalGraph:
        """The graph induced on ``names`` (kept in this graph's node order)."""
        keep = {self.nodes[self.index(n)].name for n in names}
        nodes = [n for n in self.nodes if n.name in keep]
        edges = [e for e in self.edges_ if e.source in keep and e.target in keep]
        return CausalGraph(nodes, edges, dict(self.meta))

    # ------------------------------------------------------------------ export
    def to_networkx(self) -> nx.DiGraph:
        """A ``networkx.DiGraph``; an undirected edge becomes one arc with ``directed=False``.

        Node attributes: ``kind``. Edge attributes: ``directed``, ``confidence``,
        ``orientation_confidence``, ``effect``.
        """
        g = nx.DiGraph()
        for n in self.nodes:
            g.add_node(n.name, kind=n.kind)
        for e in self.edges_:
            d = e.to_dict()
            g.add_edge(
                e.source, e.target, **{k: v for k, v in d.items() if k not in ("source", "target")}
            )
        return g

    def to_dict(self, *, include_volatile: bool = False) -> dict[str, Any]:
        """The graph.json structure; timing in ``meta`` is left out unless asked for."""
        meta = {k: v for k, v in self.meta.items() if include_volatile or k not in _VOLATILE_META}
        return {
            "nodes": [{"name": n.name, "kind": n.kind} for n in self.nodes],
            "edges": [e.to_dict() for e in self.edges_],
            "meta": meta,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CausalGraph:
        """Inverse of :meth:`to_dict`; raises :class:`DataValidationError` on a bad structure."""
        if not isinstance(d, Mapping) or "nodes" not in d or "edges" not in d:
            raise DataValidationError("graph dict must have keys 'nodes' and 'edges'")
        try:
            nodes = [Node(str(n["name"]), str(n.get("kind", "context"))) for n in d["nodes"]]
            edges = [
                Edge(
                    str(e["source"]),
                    str(e["target"]),
                    bool(e["directed"]),
                    _float(e.get("confidence", 1.0)),
                    _float(e.get("orientation_confidence", 1.0 if e["directed"] else 0.0)),
                    _float(e.get("effect")),
                )
                for e in d["edges"]
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise DataValidationError(f"graph dict: malformed node or edge ({exc!r})") from None
        return cls(nodes, edges, dict(d.get("meta") or {}))

    def save_json(self, path: str | os.PathLike[str]) -> None:
        """Write ``to_dict()`` atomically (sorted keys: equal graphs give equal bytes)."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load_json(cls, path: str | os.PathLike[str]) -> CausalGraph:
        """Read a graph written by :meth:`save_json`."""
        import json

        try:
            d = json.loads(open(path, encoding="utf-8").read())  # noqa: SIM115
        except ValueError as exc:
            raise DataValidationError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(d)

    def to_graphml(self, path: str | os.PathLike[str] | None = None) -> str:
        """GraphML text (written atomically to ``path`` if given); ``effect`` NaN becomes 0 with
        ``has_effect=false`` because GraphML has no null."""
        g = nx.DiGraph()
        for n in self.nodes:
            g.add_node(n.name, kind=n.kind)
        for e in self.edges_:
            eff = _round(e.effect)
            g.add_edge(
                e.source,
                e.target,
                directed=bool(e.directed),
                confidence=_round(e.confidence) or 0.0,
                orientation_confidence=_round(e.orientation_confidence) or 0.0,
                effect=0.0 if eff is None else eff,
                has_effect=eff is not None,
            )
        text = "\n".join(nx.generate_graphml(g)) + "\n"
        if path is not None:
            atomic_write_text(path, text)
        return text

    def to_dot(self, path: str | os.PathLike[str] | None = None) -> str:
        """Graphviz DOT text (written atomically to ``path`` if given).

        Undirected edges are dashed with ``dir=none``; pen width grows with confidence;
        blue = positive effect, red = negative; output nodes are boxes.
        """
        lines = ["digraph glance {", "  rankdir=LR;"]
        for n in self.nodes:
            shape = "box" if n.kind == "output" else ("ellipse" if n.kind == "context" else "oval")
            style = ', style=filled, fillcolor="#fde9c9"' if n.kind == "output" else ""
            lines.append(f'  "{_dot_escape(n.name)}" [kind="{n.kind}", shape={shape}{style}];')
        for e in self.edges_:
            attrs = [
                f"penwidth={0.5 + 3.5 * float(e.confidence):.2f}",
                f'color="{_effect_colour(e.effect)}"',
                f'label="{_fmt_effect(e.effect)}"',
            ]
            if not e.directed:
                attrs += ["dir=none", "style=dashed"]
            lines.append(
                f'  "{_dot_escape(e.source)}" -> "{_dot_escape(e.target)}" [{", ".join(attrs)}];'
            )
        lines.append("}")
        text = "\n".join(lines) + "\n"
        if path is not None:
            atomic_write_text(path, text)
        return text

    def plot(self, ax: Any = None, *, title: str | None = None) -> Any:
        """Draw the graph with matplotlib; returns the axes. See :mod:`glance.causal.plot`."""
        from glance.causal.plot import plot_graph

        return plot_graph(self, ax=ax, title=title)

    def save_png(
        self, path: str | os.PathLike[str], *, dpi: int = 120, title: str | None = None
    ) -> None:
        """Render the picture to a PNG file atomically."""
        from glance.causal.plot import save_graph_png

        save_graph_png(self, path, dpi=dpi, title=title)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CausalGraph):
            return NotImplemented
        return self.nodes == other.nodes and [e.to_dict() for e in self.edges_] == [
            e.to_dict() for e in other.edges_
        ]

    __hash__ = None  # type: ignore[assignment]  # mutable meta

    def __repr__(self) -> str:
        n_dir = sum(e.directed for e in self.edges_)
        return (
            f"CausalGraph({len(self.nodes)} nodes, {n_dir} directed and "
            f"{len(self.edges_) - n_dir} undirected edges)"
        )


def _float(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _dot_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


def _effect_colour(effect: float) -> str:
    if not math.isfinite(effect) or effect == 0:
        return "#777777"
    return "#2166ac" if effect > 0 else "#b2182b"


def _fmt_effect(effect: float) -> str:
    return "" if not math.isfinite(effect) else f"{effect:+.2f}"
