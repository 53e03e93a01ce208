"""The causal graph coloured by one image's importances (DESIGN §2.4, "Pictures").

Same layout and edge drawing as the graph picture of :mod:`glance.causal.plot` (columns of
contexts, concepts, outputs; width = confidence, blue / red = sign of the effect, dashed without
arrow head = undirected). Each node that the explanation covers is filled by that image's
*total* importance (mean ``|Δ p(target)|``) on a sequential colour map with a colour bar. Output
nodes are white squares, the output of the explained target class outlined in bold. Graph nodes
the explanation does not cover are hatched grey; explanation nodes missing from the graph (for
example a concept dropped during discovery) are drawn without edges and outlined with dots.
Matplotlib only through :class:`~matplotlib.figure.Figure` (no pyplot state; Agg-safe).
"""

from __future__ import annotations

import io
import os
from typing import Any

import networkx as nx
import numpy as np

from glance._io import atomic_write_bytes
from glance.causal.graph import CausalGraph, Node
from glance.causal.plot import NODE_SIZE, draw_edges, graph_layout

__all__ = ["plot_graph_importance", "save_graph_importance_png"]

_CMAP = "Greens"
_OUTPUT = "#ffffff"
_MISSING = "#e5e5e5"


def plot_graph_importance(graph: CausalGraph, explanation: Any, i: int, ax: Any = None) -> Any:
    """Draw ``graph`` with its nodes coloured by image ``i``'s total importances.

    Parameters
    ----------
    graph
        The causal graph (``glance graph RUN`` / ``Glance.graph_``).
    explanation
        A :class:`~glance.explain.LocalExplanation`; its node names are matched to the graph's.
    i
        Image index in ``explanation``.
    ax
        Axes to draw on; ``None`` creates a new figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding the drawing and its colour bar.
    """
    if not -len(explanation) <= i < len(explanation):
        raise IndexError(f"plot_graph_importance: image {i} out of range for {len(explanation)}")
    imp = dict(zip(explanation.nodes, np.nan_to_num(explanation.importance[i]), strict=True))
    kinds = dict(zip(explanation.nodes, explanation.node_kinds, strict=True))
    extra = [n for n in explanation.nodes if n not in graph.names]
    full = CausalGraph([*graph.nodes, *(Node(n, _kind(kinds[n])) for n in extra)])
    if ax is None:
        from matplotlib.figure import Figure

        n_rows = max([sum(n.kind == k for n in full.nodes) for k in ("context", "concept")] + [1])
        fig = Figure(figsize=(9.5, max(3.5, 1.1 * n_rows + 1)))
        ax = fig.add_subplot(1, 1, 1)
    pos = graph_layout(full)
    vmax = max([v for n, v in imp.items() if n in pos] + [1e-12])
    from matplotlib.colors import Normalize

    norm = Normalize(vmin=0.0, vmax=vmax)
    g = nx.DiGraph()
    g.add_nodes_from(full.names)
    _draw_nodes(g, pos, ax, full, imp, norm, _target_output(explanation, i), set(extra))
    draw_edges(g, pos, ax, graph)
    _finish(ax, explanation, i, norm, extra)
    return ax.figure


def _kind(kind: str) -> str:
    return kind if kind in ("context", "concept", "output") else "concept"


def _target_output(explanation: Any, i: int) -> str:
    return f"output_{explanation.classes[int(explanation.target[i])]}"


def _draw_nodes(
    g: nx.DiGraph,
    pos: dict[str, tuple[float, float]],
    ax: Any,
    full: CausalGraph,
    imp: dict[str, float],
    norm: Any,
    target_output: str,
    extra: set[str],
) -> None:
    """Coloured, output and uncovered nodes; labels in white on dark fills."""
    from matplotlib import colormaps

    cmap = colormaps[_CMAP]
    for node in full.nodes:
        name = node.name
        if node.kind == "output":
            fill, shape, hatch = _OUTPUT, "s", None
        elif name in imp:
            fill, shape, hatch = cmap(norm(imp[name])), "o", None
        else:
            fill, shape, hatch = _MISSING, "o", "//"
        bold = name == target_output
        coll = nx.draw_networkx_nodes(
            g,
            pos,
            nodelist=[name],
            ax=ax,
            node_size=NODE_SIZE,
            node_color=[fill],
            node_shape=shape,
            edgecolors="#000000" if bold else "#333333",
            linewidths=2.5 if bold else 1.0,
        )
        if hatch:
            coll.set_hatch(hatch)
        if name in extra:
            coll.set_linestyle(":")
        dark = name in imp and node.kind != "output" and norm(imp[name]) > 0.6
        nx.draw_networkx_labels(
            g, pos, labels={name: name}, ax=ax, font_size=7, font_color="white" if dark else "k"
        )


def _finish(ax: Any, explanation: Any, i: int, norm: Any, extra: list[str]) -> None:
    """Colour bar, title and the legend line."""
    from matplotlib.cm import ScalarMappable

    target = explanation.classes[int(explanation.target[i])]
    bar = ax.figure.colorbar(ScalarMappable(norm=norm, cmap=_CMAP), ax=ax, shrink=0.7)
    bar.set_label(f"total importance: mean |Δ p({target})|", fontsize=8)
    note = (
        "white squares = outputs (bold: the explained class) · hatched = not explained · "
        "edges: width = confidence, blue + / red − effect, dashed = undirected"
    )
    if extra:
        note += " · dotted outline = not in the graph"
    ax.text(0.0, -0.02, note, transform=ax.transAxes, fontsize=7, color="#555555", va="top")
    ax.set_title(f"image {i}: importance for p({target})", fontsize=9)
    ax.set_axis_off()
    ax.margins(0.15)


def save_graph_importance_png(
    graph: CausalGraph,
    explanation: Any,
    i: int,
    path: str | os.PathLike[str],
    *,
    dpi: int = 100,
) -> None:
    """Render :func:`plot_graph_importance` to a PNG at ``path`` (atomic write)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = plot_graph_importance(graph, explanation, i)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
