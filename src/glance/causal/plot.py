"""Matplotlib picture of a :class:`~glance.causal.graph.CausalGraph`.

Layout in columns: contexts, concepts, outputs (left to right). Edge width grows with
confidence, colour gives the sign of the effect (blue positive, red negative, grey unknown; the
report's colours), undirected edges are dashed without arrow head, output nodes are squares.

Public so that other pictures of the graph (the per-image importance picture of
:mod:`glance.explain`) draw it the same way: :func:`graph_layout`, :data:`NODE_SIZE` and
:func:`draw_edges`.
"""

from __future__ import annotations

import io
import math
import os
from typing import Any

import networkx as nx

from glance._io import atomic_write_bytes

__all__ = ["NODE_SIZE", "draw_edges", "graph_layout", "plot_graph", "save_graph_png"]

_NODE_STYLE = {
    "context": {"node_color": "#d6eaf8", "node_shape": "o"},
    "concept": {"node_color": "#e8f6e8", "node_shape": "o"},
    "output": {"node_color": "#f8c471", "node_shape": "s"},
}
_LAYER = {"context": 0, "concept": 1, "output": 2}
#: Node area (points²) of every graph picture; edges stop at a node's border by it.
NODE_SIZE = 2000


def _colour(effect: float) -> str:
    if not math.isfinite(effect) or effect == 0:
        return "#7f7f7f"
    return "#2166ac" if effect > 0 else "#b2182b"


def graph_layout(graph: Any) -> dict[str, tuple[float, float]]:
    """Node positions: columns of contexts, concepts and outputs (left to right)."""
    pos = {}
    for kind, x in _LAYER.items():
        members = [n.name for n in graph.nodes if n.kind == kind]
        for k, name in enumerate(members):
            # Centred column, top to bottom in node order; every other node is shifted right
            # so that edges inside a column do not run through the nodes between them.
            pos[name] = (2.0 * x + 0.6 * (k % 2), (len(members) - 1) / 2.0 - k)
    return pos


def plot_graph(graph: Any, ax: Any = None, *, title: str | None = None) -> Any:
    """Draw ``graph`` on ``ax`` (a new figure when ``None``); returns the axes."""
    if ax is None:
        from matplotlib.figure import Figure

        n_rows = max([sum(n.kind == k for n in graph.nodes) for k in _LAYER] + [1])
        fig = Figure(figsize=(9, max(3.5, 1.1 * n_rows + 1)))
        ax = fig.add_subplot(1, 1, 1)
    g = nx.DiGraph()
    g.add_nodes_from(graph.names)
    pos = graph_layout(graph)
    for kind, style in _NODE_STYLE.items():
        nodes = [n.name for n in graph.nodes if n.kind == kind]
        if nodes:
            nx.draw_networkx_nodes(
                g,
                pos,
                nodelist=nodes,
                ax=ax,
                node_size=NODE_SIZE,
                edgecolors="#333333",
                linewidths=1.0,
                **style,
            )
    nx.draw_networkx_labels(g, pos, ax=ax, font_size=7)
    draw_edges(g, pos, ax, graph)
    labels = {
        (e.source, e.target): f"{e.effect:+.2f}" for e in graph.edges() if math.isfinite(e.effect)
    }
    if labels:
        nx.draw_networkx_edge_labels(
            g, pos, edge_labels=labels, ax=ax, font_size=7, connectionstyle="arc3,rad=0.08"
        )
    ax.text(
        0.0,
        -0.02,
        "width = confidence · blue + / red − effect · dashed, no arrow head = orientation "
        "not identified by the data",
        transform=ax.transAxes,
        fontsize=7,
        color="#555555",
        va="top",
    )
    ax.set_axis_off()
    ax.margins(0.15)
    if title:
        ax.set_title(title)
    return ax


def save_graph_png(
    graph: Any, path: str | os.PathLike[str], *, dpi: int = 120, title: str | None = None
) -> None:
    """Render ``graph`` to a PNG at ``path`` (atomic write, no pyplot global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    ax = plot_graph(graph, title=title)
    fig = ax.figure
    FigureCanvasAgg(fig)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())


def draw_edges(g: nx.DiGraph, pos: dict[str, Any], ax: Any, graph: Any) -> None:
    """Draw ``graph``'s edges onto ``ax`` (adding them to ``g``): width = bootstrap confidence,
    colour = sign of the effect, arrow = directed, dashed = undirected."""
    for e in graph.edges():
        g.add_edge(e.source, e.target)
        nx.draw_networkx_edges(
            g,
            pos,
            edgelist=[(e.source, e.target)],
            ax=ax,
            node_size=NODE_SIZE,
            width=0.5 + 4.0 * max(0.0, min(1.0, e.confidence)),
            edge_color=_colour(e.effect),
            arrows=True,
            arrowstyle="-|>" if e.directed else "-",
            arrowsize=14,
            connectionstyle="arc3,rad=0.08",
            style="solid" if e.directed else "dashed",
        )
