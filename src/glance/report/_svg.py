"""Small inline-SVG charts built from artefact data (no matplotlib, nothing external).

Used by the report (importance bars, interaction heat-maps, a drawn causal graph when the run has
no ``graph.png``) and by the explorer (the graph with a propagated change highlighted).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

__all__ = ["bar_chart", "heat_map", "graph_svg", "graph_layout"]

_POS = "#2166ac"
_NEG = "#b2182b"
_KIND_ORDER = {"context": 0, "concept": 1, "output": 2}
_KIND_FILL = {"context": "#fde0c5", "concept": "#d9e7f5", "output": "#e3f1dc"}


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def bar_chart(
    series: Mapping[str, Mapping[str, float]],
    *,
    title: str,
    width: int = 560,
    row: int = 18,
    links: Mapping[str, str] | None = None,
) -> str:
    """Horizontal bars, one row per key, one bar per series (e.g. total and direct effect).

    Parameters
    ----------
    series
        ``{series name: {label: value}}``; labels are ordered by the first series' |value|.
    title
        Accessible title of the chart (``<title>`` and ``aria-label``).
    links
        ``{label: href}``: labels drawn as links (e.g. to a node's concept-atlas entry).
    """
    names = list(series)
    if not names:
        return ""
    first = series[names[0]]
    labels = sorted(first, key=lambda k: -abs(first[k]) if _finite(first[k]) else 0.0)
    for name in names[1:]:
        labels += [k for k in series[name] if k not in labels]
    values = [v for s in series.values() for v in s.values() if _finite(v)]
    vmax = max((abs(v) for v in values), default=0.0) or 1.0
    has_neg = any(v < 0 for v in values)
    label_w, value_w = 150, 60
    plot_w = width - label_w - value_w
    zero = label_w + (plot_w / 2 if has_neg else 0)
    scale = (plot_w / 2 if has_neg else plot_w) / vmax
    bar_h = max(4, (row - 4) // len(names))
    height = row * len(labels) + 24
    colours = [_POS, "#92c5de", "#f4a582", "#999999"]
    out = [
        f'<svg class="chart bar-chart" role="img" aria-label="{escape(title)}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for i, label in enumerate(labels):
        y = i * row + 2
        text = (
            f'<text x="{label_w - 6}" y="{y + row / 2 + 3}" text-anchor="end" '
            f'class="label">{escape(label)}</text>'
        )
        href = (links or {}).get(label)
        out.append(f'<a href="{escape(href)}" class="node-link">{text}</a>' if href else text)
        for j, name in enumerate(names):
            v = series[name].get(label)
            if not _finite(v):
                continue
            w = abs(v) * scale
            x = zero if v >= 0 else zero - w
            fill = colours[j % len(colours)] if v >= 0 or j else _NEG
            out.append(
                f'<rect x="{x:.1f}" y="{y + j * bar_h:.1f}" width="{max(w, 0.5):.1f}" '
                f'height="{bar_h - 1}" fill="{fill}" data-label="{escape(label)}" '
                f'data-series="{escape(name)}" data-value="{v!r}">'
                f"<title>{escape(label)} ({escape(name)}): {_fmt(v)}</title></rect>"
            )
        v0 = first.get(label)
        if _finite(v0):
            out.append(
                f'<text x="{width - 4}" y="{y + row / 2 + 3}" text-anchor="end" '
                f'class="value">{_fmt(v0)}</text>'
            )
    out.append(f'<line x1="{zero}" y1="0" x2="{zero}" y2="{row * len(labels) + 2}" stroke="#555"/>')
    if len(names) > 1:
        lx = label_w
        for j, name in enumerate(names):
            out.append(
                f'<rect x="{lx}" y="{height - 14}" width="10" height="10" '
                f'fill="{colours[j % len(colours)]}"/>'
                f'<text x="{lx + 14}" y="{height - 5}" class="label">{escape(name)}</text>'
            )
            lx += 20 + 7 * len(name)
    out.append("</svg>")
    return "".join(out)


def heat_map(
    labels: Sequence[str], values: Mapping[tuple[str, str], float], *, title: str, cell: int = 28
) -> str:
    """A symmetric ``labels × labels`` heat-map (blue positive, red negative; empty = absent)."""
    labels = list(labels)
    if not labels:
        return ""
    finite = [abs(v) for v in values.values() if _finite(v)]
    vmax = max(finite, default=0.0) or 1.0
    margin = 110
    size = margin + cell * len(labels) + 8
    out = [
        f'<svg class="chart heat-map" role="img" aria-label="{escape(title)}" '
        f'width="{size + 60}" height="{size}" viewBox="0 0 {size + 60} {size}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for i, name in enumerate(labels):
        y = margin + i * cell
        out.append(
            f'<text x="{margin - 4}" y="{y + cell / 2 + 4}" text-anchor="end" '
            f'class="label">{escape(name)}</text>'
            f'<text transform="translate({margin + i * cell + cell / 2 + 4},{margin - 4}) '
            f'rotate(-60)" class="label">{escape(name)}</text>'
        )
        for j, other in enumerate(labels):
            v = values.get((name, other), values.get((other, name)))
            x = margin + j * cell
            if not _finite(v):
                out.append(
                    f'<rect x="{x}" y="{y}" width="{cell - 1}" height="{cell - 1}" fill="#f4f4f4"/>'
                )
                continue
            a = min(1.0, abs(v) / vmax)
            colour = _POS if v >= 0 else _NEG
            out.append(
                f'<rect x="{x}" y="{y}" width="{cell - 1}" height="{cell - 1}" fill="{colour}" '
                f'fill-opacity="{0.08 + 0.92 * a:.3f}" class="cell" data-row="{escape(name)}" '
                f'data-col="{escape(other)}" data-value="{v!r}">'
                f"<title>{escape(name)} × {escape(other)}: {_fmt(v)}</title></rect>"
            )
    out.append("</svg>")
    return "".join(out)


def graph_layout(
    nodes: Sequence[Mapping[str, Any]], *, col_w: int = 230, row_h: int = 44
) -> tuple[dict[str, tuple[float, float]], int, int]:
    """Column layout: contexts, then concepts, then outputs; returns (positions, width, height)."""
    columns: dict[int, list[str]] = {}
    for n in nodes:
        columns.setdefault(_KIND_ORDER.get(str(n.get("kind")), 1), []).append(str(n["name"]))
    rows = max((len(c) for c in columns.values()), default=1)
    height = rows * row_h + 30
    used = sorted(columns)
    width = col_w * max(len(used), 1) + 80
    pos: dict[str, tuple[float, float]] = {}
    for ci, key in enumerate(used):
        names = columns[key]
        offset = (height - len(names) * row_h) / 2
        for ri, name in enumerate(names):
            pos[name] = (80 + ci * col_w + col_w / 2 - 20, offset + ri * row_h + row_h / 2)
    return pos, width, height


def graph_svg(
    graph: Mapping[str, Any],
    *,
    highlight: Mapping[str, float] | None = None,
    title: str = "Causal graph",
) -> str:
    """Draw ``graph.json`` as SVG: edge width = confidence, colour = sign of the effect.

    Parameters
    ----------
    graph
        ``{"nodes": [{"name", "kind"}], "edges": [{"source", "target", "directed",
        "confidence", "effect", ...}]}``.
    highlight
        ``{node: change}``: nodes drawn with a thicker outline whose opacity follows |change|
        (the explorer's propagated intervention).
    """
    nodes = list(graph.get("nodes", []))
    pos, width, height = graph_layout(nodes)
    kinds = {str(n["name"]): str(n.get("kind", "concept")) for n in nodes}
    hl = {k: abs(v) for k, v in (highlight or {}).items() if _finite(v)}
    hmax = max(hl.values(), default=0.0) or 1.0
    out = [
        f'<svg class="chart graph" role="img" aria-label="{escape(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        "<defs>"
        + "".join(
            f'<marker id="arrow-{k}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="9" '
            f'markerHeight="9" markerUnits="userSpaceOnUse" orient="auto-start-reverse">'
            f'<path d="M0,0 L10,5 L0,10 z" '
            f'fill="{c}"/></marker>'
            for k, c in (("pos", _POS), ("neg", _NEG))
        )
        + "</defs>",
    ]
    for e in graph.get("edges", []):
        s, t = str(e.get("source")), str(e.get("target"))
        if s not in pos or t not in pos:
            continue
        (x1, y1), (x2, y2) = pos[s], pos[t]
        conf = float(e["confidence"]) if _finite(e.get("confidence")) else 1.0
        eff = float(e["effect"]) if _finite(e.get("effect")) else 0.0
        colour = _POS if eff >= 0 else _NEG
        directed = bool(e.get("directed", True))
        rx = 62  # node half-width: edges start and end on the node's border
        if abs(x2 - x1) < 1:  # same column: arc out to the left, clear of the nodes between
            bow = x1 - rx - 30 - 0.2 * abs(y2 - y1)
            path = (
                f"M{x1 - rx:.1f},{y1:.1f} C{bow:.1f},{y1:.1f} {bow:.1f},{y2:.1f} "
                f"{x1 - rx - 2:.1f},{y2:.1f}"
            )
        else:
            sx, tx = (x1 + rx, x2 - rx) if x2 > x1 else (x1 - rx, x2 + rx)
            mid = (sx + tx) / 2
            path = f"M{sx:.1f},{y1:.1f} C{mid:.1f},{y1:.1f} {mid:.1f},{y2:.1f} {tx:.1f},{y2:.1f}"
        marker = f' marker-end="url(#arrow-{"pos" if eff >= 0 else "neg"})"' if directed else ""
        dash = "" if directed else ' stroke-dasharray="6 4"'
        active = " active" if s in hl and t in hl else ""
        out.append(
            f'<path d="{path}" class="edge{active}" fill="none" stroke="{colour}" '
            f'stroke-width="{0.8 + 3.2 * max(0.0, min(conf, 1.0)):.2f}" stroke-opacity="0.75"'
            f'{dash}{marker} data-source="{escape(s)}" data-target="{escape(t)}">'
            f"<title>{escape(s)} {'→' if directed else '—'} {escape(t)}: effect {_fmt(eff)}, "
            f"confidence {_fmt(conf)}</title></path>"
        )
    for name, (x, y) in pos.items():
        fill = _KIND_FILL.get(kinds.get(name, "concept"), "#eee")
        stroke, sw = "#555", 1.0
        if name in hl:
            stroke, sw = "#e08214", 1.5 + 3.5 * hl[name] / hmax
        out.append(
            f'<g class="node" data-node="{escape(name)}" data-kind="{escape(kinds[name])}">'
            f'<ellipse cx="{x:.1f}" cy="{y:.1f}" rx="62" ry="17" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="{sw:.2f}"/>'
            f'<text x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle" class="label">'
            f"{escape(name)}</text></g>"
        )
    out.append("</svg>")
    return "".join(out)
