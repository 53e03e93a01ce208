"""Render a run directory into one self-contained HTML report.

The report is a pure function of the run's saved artefacts: every figure, chart and picture is read
from files in the run directory (``metrics.json``, ``graph/graph.json``,
``explanations/explanations.json``, PNGs) and inlined (CSS in a ``<style>``, pictures as
``data:`` URIs), so the file opens offline and makes no request.
"""

from __future__ import annotations

import base64
import math
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from glance import run as layout
from glance._io import atomic_write_text
from glance._version import __version__
from glance.exceptions import CheckpointCorruptError
from glance.report._artifacts import (
    RunArtifacts,
    load_run_artifacts,
    read_image_file,
    safe_run_path,
)
from glance.report._svg import bar_chart, graph_svg, heat_map
from glance.report._thresholds import FIDELITY_FLOOR, RECONSTRUCTION_STAMPS, THRESHOLDS, grade

__all__ = ["render_report", "write_report", "normalise_interactions"]

_SCALAR_METRICS = ("fidelity", "reconstruction_fidelity", "sampled_fidelity")
_PER_CONTEXT_METRICS = ("alignment_r2", "generated_alignment")
_MIG_METRICS = ("mig", "mig_reference")  # shown before DCI
_OTHER_METRICS = ("fid", "kid", "fit_seconds")


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _data_uri(art: RunArtifacts, rel: str, what: str) -> str:
    path = safe_run_path(art.run_dir, rel, what=what)
    if not path.is_file() or not art.has(path.relative_to(art.run_dir.resolve()).as_posix()):
        raise CheckpointCorruptError(
            f"{art.run_dir}: {what} {rel!r} is referenced but missing (or not sealed)"
        )
    data, mime = read_image_file(path)
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


# ---------------------------------------------------------------- faithfulness
def _metric_row(key: str, label: str, value: Any, bar_key: str | None = None) -> dict:
    bar = THRESHOLDS.get(bar_key or key)
    v = _num(value)
    return {
        "key": key,
        "label": label,
        "value": v,
        "text": "not computed" if v is None else f"{v:.4g}",
        "grade": grade(bar_key or key, v),
        "threshold": bar.describe() if bar else "no agreed threshold",
        "description": bar.description if bar else "",
    }


def _soundness_rows(cs: Any) -> list[dict]:
    """Counterfactual soundness rows (runs evaluated before it was measured show none)."""
    if not isinstance(cs, Mapping):
        return []
    rows = []
    eff = cs.get("effectiveness")
    why = cs.get("effectiveness_unmeasured")
    for ctx, e in eff.items() if isinstance(eff, Mapping) else []:
        value = e.get("spearman") if isinstance(e, Mapping) else None
        label = f"{THRESHOLDS['counterfactual_effectiveness'].label}: {ctx}"
        row = _metric_row(f"counterfactual_effectiveness.{ctx}", label, value,
                          "counterfactual_effectiveness")  # fmt: skip
        through = _names(e.get("read_through")) if isinstance(e, Mapping) else []
        if value is not None and through:
            row["description"] += (
                f" (read by a reader that may read it through {', '.join(through)}, tied to it "
                "in the training images)"
            )
        rows.append(_with_reason(row, why, ctx))
    rows += _specificity_rows(cs)
    comp, rev = cs.get("composition"), cs.get("reversibility")
    if isinstance(comp, Mapping):
        key = "counterfactual_composition"
        rows.append(_metric_row(key, THRESHOLDS[key].label, comp.get("null_image_l1")))
    if isinstance(rev, Mapping):
        key = "counterfactual_reversibility"
        rows.append(_metric_row(key, THRESHOLDS[key].label, rev.get("mean_class_agreement")))
    return rows


def _specificity_rows(cs: Mapping[str, Any]) -> list[dict]:
    """One row per context intervened on: its worst cross-talk (runs before it: none)."""
    spec = cs.get("specificity")
    why = cs.get("specificity_unmeasured")
    key = "counterfactual_specificity"
    rows = []
    for ctx, sp in spec.items() if isinstance(spec, Mapping) else []:
        worst = sp.get("worst") if isinstance(sp, Mapping) else None
        row = _with_reason(
            _metric_row(f"{key}.{ctx}", f"{THRESHOLDS[key].label}: {ctx}", worst, key), why, ctx
        )
        if isinstance(sp, Mapping) and sp.get("worst_context"):
            row["description"] += f" (worst: {sp['worst_context']})"
        if isinstance(sp, Mapping) and sp.get("tied"):
            row["description"] += (
                f"; not compared: {', '.join(sp['tied'])}, whose reader may read this change as "
                "theirs (tied to it in the training images)"
            )
        rows.append(row)
    if rows and isinstance(cs.get("specificity_note"), str):
        rows[-1]["description"] += f". {cs['specificity_note']}"
    return rows


def _names(value: Any) -> list[str]:
    """A list of context names from metrics.json; anything else (a hand-edited or foreign file)
    gives none, so the report never spells one name out letter by letter."""
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    return []


def _with_reason(row: dict, reasons: Any, ctx: str) -> dict:
    """A row whose figure is not given says why (the reader cannot read the context...)."""
    if row["value"] is None and isinstance(reasons, Mapping) and reasons.get(ctx):
        row["description"] = f"not given: {reasons[ctx]}"
    return row


def _readback_rows(metrics: Mapping[str, Any]) -> list[dict]:
    """Reconstruction SSIM and readback R² per context, with the reader's own held-out R²
    (runs evaluated before they were measured show none)."""
    rows = []
    for key in ("reconstruction_ssim", "reconstruction_edges"):
        if key in metrics:
            rows.append(_metric_row(key, THRESHOLDS[key].label, metrics.get(key)))
    per = metrics.get("readback_r2")
    readers = metrics.get("readers") if isinstance(metrics.get("readers"), Mapping) else {}
    for ctx, v in per.items() if isinstance(per, Mapping) else []:
        row = _metric_row(f"readback_r2.{ctx}", f"{THRESHOLDS['readback_r2'].label}: {ctx}", v,
                          "readback_r2")  # fmt: skip
        row = _with_reason(row, metrics.get("readback_r2_unmeasured"), ctx)
        info = readers.get(ctx)
        if row["value"] is not None and isinstance(info, Mapping):
            row["description"] += (
                f" (reader: {info.get('source', '?')}, held-out R² {_fmt(info.get('heldout_r2'))})"
            )
            through = _names(info.get("read_through"))
            if through:
                # On causal shapes the shape reader reads the colour: blobs of the right colour
                # read back shape at R² 0.99 (docs/faithfulness.md). Say what the figure cannot see.
                row["description"] += (
                    f"; the reader may read {ctx} through {', '.join(through)}, tied to it in the "
                    f"training images, so a reconstruction that keeps {', '.join(through)} and "
                    f"loses {ctx} scores the same"
                )
        rows.append(row)
    return rows


def _reconstruction_failures(rows: list[dict]) -> list[str]:
    """The reconstruction figures below their floor, as sentences for the banner."""
    return [
        f"{r['label']} is {r['text']} (floor {THRESHOLDS[k].floor:g})"
        for r in rows
        for k in RECONSTRUCTION_STAMPS
        if r["grade"] == "fail" and (r["key"] == k or r["key"].startswith(k + "."))
    ]


def _faithfulness(metrics: Mapping[str, Any] | None) -> dict:
    if metrics is None:
        return {
            "computed": False,
            "rows": [],
            "low_fidelity": False,
            "reconstruction_failures": [],
            "extra": [],
        }
    rows = [_metric_row(k, THRESHOLDS[k].label, metrics.get(k)) for k in _SCALAR_METRICS]
    for key in _PER_CONTEXT_METRICS:
        per = metrics.get(key)
        if isinstance(per, Mapping) and per:
            rows += [
                _metric_row(f"{key}.{ctx}", f"{THRESHOLDS[key].label}: {ctx}", v, key)
                for ctx, v in per.items()
            ]
        else:
            rows.append(_metric_row(key, THRESHOLDS[key].label, None))
    rows += [_metric_row(k, THRESHOLDS[k].label, metrics.get(k)) for k in _MIG_METRICS]
    dci = metrics.get("dci")
    for part in ("disentanglement", "completeness", "informativeness"):
        value = dci.get(part) if isinstance(dci, Mapping) else None
        rows.append(_metric_row(f"dci.{part}", f"DCI {part}", value, "dci"))
    rows += [_metric_row(k, THRESHOLDS[k].label, metrics.get(k)) for k in _OTHER_METRICS]
    readback = _readback_rows(metrics)
    rows += readback + _soundness_rows(metrics.get("counterfactual_soundness"))
    nested = ("dci", "counterfactual_soundness")
    known = set(_SCALAR_METRICS + _PER_CONTEXT_METRICS + _MIG_METRICS + _OTHER_METRICS + nested)
    known.update(("reconstruction_ssim", "reconstruction_edges"))  # rows of _readback_rows
    extra = [
        {"key": k, "text": f"{_num(v):.4g}"}
        for k, v in sorted(metrics.items())
        if k not in known and _num(v) is not None
    ]
    fid = _num(metrics.get("fidelity"))
    n_images = _num(metrics.get("n_images"))
    failures = _reconstruction_failures(readback)
    fidelity_low = fid is not None and fid < FIDELITY_FLOOR
    return {
        "computed": True,
        "data": str(metrics["data"]) if isinstance(metrics.get("data"), str) else None,
        "n_images": None if n_images is None else int(n_images),
        "rows": rows,
        "low_fidelity": fidelity_low or bool(failures),
        "fidelity_low": fidelity_low,
        "reconstruction_failures": failures,
        "fidelity": fid,
        "floor": FIDELITY_FLOOR,
        "extra": extra,
    }


# ---------------------------------------------------------------- graph and importances
def _readable(graph: Mapping[str, Any]) -> tuple[dict | None, str | None]:
    """The readable default picture (outputs and their neighbourhood) and the sentence."""
    from glance.causal import CausalGraph, graph_story, readable_graph
    from glance.exceptions import GlanceError

    try:
        full = CausalGraph.from_dict(graph)
    except (GlanceError, KeyError, TypeError, ValueError):
        return None, None  # an older or hand-made graph.json: the full drawing only
    return readable_graph(full).to_dict(), graph_story(full)


def _graph_section(art: RunArtifacts) -> dict:
    if art.graph is None:
        return {"computed": False}
    png = f"{layout.GRAPH}/graph.png"
    meta = art.graph.get("meta") if isinstance(art.graph.get("meta"), Mapping) else {}
    assumptions = [
        {
            "source": str(a.get("source")),
            "target": str(a.get("target")),
            "reason": str(a.get("reason", "")),
        }
        for a in (meta.get("assumptions") or [])
        if isinstance(a, Mapping)
    ]
    assumed = {frozenset((a["source"], a["target"])) for a in assumptions}
    edges = []
    for e in art.graph.get("edges", []):
        edges.append(
            {
                "source": str(e.get("source")),
                "target": str(e.get("target")),
                "arrow": "→" if e.get("directed", True) else "—",
                "directed": bool(e.get("directed", True)),
                "confidence": _fmt(e.get("confidence")),
                "orientation_confidence": _fmt(e.get("orientation_confidence")),
                "effect": _fmt(e.get("effect")),
                "assumption": bool(e.get("assumed") or e.get("assumption"))
                or frozenset((str(e.get("source")), str(e.get("target")))) in assumed,
            }
        )
    readable, story = _readable(art.graph)
    return {
        "computed": True,
        "png": _data_uri(art, png, "graph picture") if art.has(png) else None,
        "svg": graph_svg(art.graph, title="Causal graph (drawn from graph.json)"),
        "readable_svg": graph_svg(readable, title="The outputs and their causal neighbourhood")
        if readable
        else None,
        "readable_edges": len(readable.get("edges", [])) if readable else 0,
        "story": story,
        "edges": edges,
        "n_nodes": len(art.graph.get("nodes", [])),
        "n_undirected": sum(not e["directed"] for e in edges),
        "assumptions": assumptions,
    }


def _fmt(v: Any) -> str:
    n = _num(v)
    return "—" if n is None else f"{n:.3g}"


def _flat_numbers(d: Any) -> dict[str, float]:
    if not isinstance(d, Mapping):
        return {}
    return {str(k): float(v) for k, v in d.items() if _num(v) is not None}


def _global_importance(art: RunArtifacts, explanations: list[dict]) -> dict:
    gi = art.global_importance
    if gi is not None:
        body = gi.get("importance", gi.get("importances", gi))
        nested = {str(k): _flat_numbers(v) for k, v in body.items() if isinstance(v, Mapping)}
        if nested:  # {output: {node: effect}}
            nodes = sorted({n for d in nested.values() for n in d})
            mean = {
                n: sum(abs(d.get(n, 0.0)) for d in nested.values()) / len(nested) for n in nodes
            }
            return {
                "computed": True,
                "source": art.global_importance_source,
                "definition": str(gi.get("definition", "")).rstrip("."),
                "chart": bar_chart(
                    {"mean |total effect| over outputs": mean}, title="Global importance"
                ),
                "table_outputs": sorted(nested),
                "table": [
                    {"node": n, "values": [_fmt(nested[o].get(n)) for o in sorted(nested)]}
                    for n in nodes
                ],
            }
        flat = _flat_numbers(body)
        if flat:
            return {
                "computed": True,
                "source": art.global_importance_source,
                "chart": bar_chart({"total effect": flat}, title="Global importance"),
            }
    with_imp = [e["importance"] for e in explanations if e["importance"]]
    if with_imp:
        nodes = sorted({n for d in with_imp for n in d})
        mean = {n: sum(abs(d.get(n, 0.0)) for d in with_imp) / len(with_imp) for n in nodes}
        return {
            "computed": True,
            "source": f"mean |total effect| over the {len(with_imp)} explained images "
            "(explanations/explanations.json)",
            "chart": bar_chart({"mean |total effect|": mean}, title="Global importance"),
        }
    return {"computed": False}


# ---------------------------------------------------------------- concept atlas
def atlas_anchor(node: str) -> str:
    """The report's anchor of a node's concept-atlas entry."""
    return "atlas-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in str(node))


def _atlas_section(art: RunArtifacts) -> dict:
    """Atlas entries (strip pictures inlined) and ``links``: node → ``#anchor``."""
    if not isinstance(art.atlas, Mapping) or not isinstance(art.atlas.get("nodes"), list):
        return {"computed": False, "links": {}, "entries": [], "attributes": []}
    folder = layout.ATLAS
    entries = []
    for e in art.atlas["nodes"]:
        if not isinstance(e, Mapping):
            continue
        node = str(e.get("node"))
        strip = f"{folder}/{e.get('strip')}"
        ctx = e.get("context_r") if isinstance(e.get("context_r"), Mapping) else {}
        entries.append(
            {
                "node": node,
                "anchor": atlas_anchor(node),
                "kind": str(e.get("kind", "")),
                "description": str(e.get("description", "")),
                "moves_output": bool(e.get("moves_output")),
                "importance": _fmt(e.get("importance")),
                "strip": _data_uri(art, strip, "atlas strip") if art.has(strip) else None,
                "contexts": [{"name": k, "r": _fmt(v)} for k, v in ctx.items()],
            }
        )
    attributes = []
    found = art.atlas.get("class_attributes")
    for cls, items in found.items() if isinstance(found, Mapping) else []:
        rows = []
        for a in items if isinstance(items, list) else []:
            rel = f"{folder}/{a.get('pairs')}"
            rows.append(
                {
                    "node": str(a.get("node")),
                    "anchor": atlas_anchor(str(a.get("node"))),
                    "direction": str(a.get("direction")),
                    "gain": _fmt(a.get("mean_gain")),
                    "pairs": _data_uri(art, rel, "class attribute") if art.has(rel) else None,
                }
            )
        attributes.append({"class": str(cls), "rows": rows})
    deltas = art.atlas.get("deltas") or []
    return {
        "computed": True,
        "entries": entries,
        "attributes": attributes,
        "deltas": ", ".join(f"{float(d):+g}" for d in deltas),
        "n_images": art.atlas.get("n_images"),
        "order": art.atlas.get("importance_source"),
        "links": {e["node"]: "#" + e["anchor"] for e in entries},
    }


# ---------------------------------------------------------------- local explanations
def normalise_interactions(raw: Any) -> dict[tuple[str, str], float]:
    """Turn the accepted interaction encodings into ``{(u, v): value}``.

    Accepted: the ``LocalExplanation.to_dict`` list ``[{"nodes": [u, v], "strength": s}]``
    (also ``"pair"`` / ``"value"``), ``{u: {v: value}}``, ``{"u|v": value}`` (also ``,`` or
    ``×``), or a list of ``[u, v, value]``.
    """
    out: dict[tuple[str, str], float] = {}
    if isinstance(raw, Mapping):
        for k, v in raw.items():
            if isinstance(v, Mapping):
                for k2, v2 in v.items():
                    if _num(v2) is not None:
                        out[(str(k), str(k2))] = float(v2)
            elif _num(v) is not None:
                for sep in ("|", "×", ",", " x "):
                    if sep in str(k):
                        a, b = str(k).split(sep, 1)
                        out[(a.strip(), b.strip())] = float(v)
                        break
    elif isinstance(raw, list):
        for item in raw:
            if isinstance(item, Mapping):
                pair = item.get("nodes", item.get("pair"))
                value = item.get("strength", item.get("value", item.get("interaction")))
            elif isinstance(item, (list, tuple)) and len(item) == 3:
                pair, value = item[:2], item[2]
            else:
                continue
            if isinstance(pair, (list, tuple)) and len(pair) == 2 and _num(value) is not None:
                out[(str(pair[0]), str(pair[1]))] = float(value)
    return out


def _explanation_items(raw: dict | None) -> list[Mapping[str, Any]]:
    if raw is None:
        return []
    for key in ("images", "explanations", "items"):
        if isinstance(raw.get(key), list):
            return [x for x in raw[key] if isinstance(x, Mapping)]
    return []


#: Pictures ``LocalExplanation.save_pngs`` writes per image position ``i`` (and ``graph``, the
#: causal graph coloured by the image's importances that ``glance explain`` / ``glance demo``
#: write when the run has a graph), in display order.
_PICTURE_KINDS = ("summary", "graph", "traversal", "counterfactual", "interaction")


def _pictures(art: RunArtifacts, item: Mapping[str, Any], position: int) -> list[dict]:
    """The pictures of one explained image, inlined.

    ``explanations/<kind>_<i>.png`` (the names ``LocalExplanation.save_pngs`` writes, and
    ``graph_<i>.png``) and any ``*.png`` path the record names itself (one level of nesting).
    """
    found: list[tuple[str, str]] = []
    folder = layout.EXPLANATIONS
    for kind in _PICTURE_KINDS:
        rel = f"{folder}/{kind}_{position}.png"
        if art.has(rel):
            found.append((kind, rel))

    def visit(prefix: str, obj: Any) -> None:
        if isinstance(obj, str) and obj.lower().endswith((".png", ".jpg", ".jpeg")):
            rel = obj if art.has(obj) else f"{folder}/{obj}"
            if all(rel != r for _, r in found):
                found.append((prefix, rel))
        elif isinstance(obj, Mapping):
            for k, v in obj.items():
                visit(f"{prefix} {k}".strip(), v)
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                visit(f"{prefix} {i}", v)

    visit("", dict(item))
    return [
        {
            "caption": caption.replace("_", " "),
            "uri": _data_uri(art, rel, "explanation picture"),
            "kind": next((k for k in _PICTURE_KINDS if k in caption), "other"),
        }
        for caption, rel in found
    ]


def _significance_test(raw: dict | None) -> dict:
    """Parameters of the test against random concepts saved with the explanations.

    ``computed`` is false for explanations made without it (``n_random = 0``, older runs: no
    ``n_random`` / ``significance`` keys in ``explanations.json``).
    """
    raw = raw if isinstance(raw, Mapping) else {}
    n_random, alpha = _num(raw.get("n_random")), _num(raw.get("alpha"))
    return {
        "computed": n_random is not None and n_random > 0,
        "n_random": None if n_random is None else int(n_random),
        "alpha": alpha,
        "alpha_text": "α" if alpha is None else f"{alpha:g}",
    }


def _significance_rows(item: Mapping[str, Any], imp: dict[str, float], alpha: Any) -> list[dict]:
    """Per node of one image: its importances, p-value against the random concepts and verdict.

    Empty when the record has no ``significance``. Rows follow the importance chart's order
    (largest |total importance| first). ``significant`` is the saved verdict, else ``p <= alpha``.
    """
    pvals = item.get("significance")
    if not isinstance(pvals, Mapping) or not pvals:
        return []
    verdicts = item.get("significant") if isinstance(item.get("significant"), Mapping) else {}
    direct = _flat_numbers(item.get("direct_importance"))
    order = sorted(imp, key=lambda n: -abs(imp[n]))
    order += [str(n) for n in pvals if str(n) not in order]
    rows = []
    for node in order:
        p = _num(pvals.get(node))
        verdict = verdicts.get(node)
        if isinstance(verdict, bool):
            sig: bool | None = verdict
        elif p is not None and _num(alpha) is not None:
            sig = p <= float(alpha)
        else:
            sig = None
        rows.append(
            {
                "node": node,
                "total": _fmt(imp.get(node)),
                "direct": _fmt(direct.get(node)),
                "p_value": _fmt(p),
                "significant": sig,
            }
        )
    return rows


def _significance_summary(raw: dict | None) -> list[dict]:
    """The dataset-level ``significance_summary`` of ``explanations.json`` as table rows.

    In the explanation's node order (contexts first), then any other node of the summary.
    """
    summary = raw.get("significance_summary") if isinstance(raw, Mapping) else None
    if not isinstance(summary, Mapping):
        return []
    listed = raw.get("nodes") if isinstance(raw.get("nodes"), list) else []
    order = [n for n in map(str, listed) if n in summary]
    order += [str(n) for n in summary if str(n) not in order]
    rows = []
    for node in order:
        s = summary[node]
        if not isinstance(s, Mapping):
            continue
        frac = _num(s.get("fraction_significant"))
        sig = s.get("significant")
        rows.append(
            {
                "node": str(node),
                "p_value": _fmt(s.get("p_value")),
                "difference": _fmt(s.get("difference")),
                "direction": str(s.get("direction", "—")),
                "fraction": "—" if frac is None else f"{100 * frac:.0f}%",
                "significant": sig if isinstance(sig, bool) else None,
            }
        )
    return rows


def _local(art: RunArtifacts, links: Mapping[str, str]) -> tuple[list[dict], dict, dict]:
    items = _explanation_items(art.explanations)
    test = _significance_test(art.explanations)
    out = []
    for i, item in enumerate(items):
        imp = _flat_numbers(item.get("importance", item.get("total_importance")))
        direct = _flat_numbers(item.get("direct_importance"))
        series = {"total effect": imp}
        if direct:
            series["direct effect"] = direct
        inter = normalise_interactions(item.get("interactions"))
        inter_nodes = sorted({n for pair in inter for n in pair})
        cf = item.get("counterfactual") if isinstance(item.get("counterfactual"), Mapping) else None
        out.append(
            {
                "id": str(item.get("image_id", item.get("index", item.get("id", i)))),
                "label": item.get("label"),
                "prediction": item.get("prediction", item.get("predicted_class")),
                "target": item.get("target"),
                "probability": _fmt(item.get("probability", item.get("confidence"))),
                "importance": imp,
                "chart": bar_chart(series, title=f"Importance, image {i}", links=links)
                if imp
                else "",
                "interactions": inter,
                "heat_map": heat_map(inter_nodes, inter, title=f"Interactions, image {i}")
                if inter
                else "",
                "counterfactual": _counterfactual(cf),
                "significance": _significance_rows(item, imp, test["alpha"]),
                "pictures": _pictures(art, item, i),
            }
        )
    # Mean interaction over images: the global heat-map.
    sums: dict[tuple[str, str], list[float]] = {}
    for e in out:
        for pair, v in e["interactions"].items():
            sums.setdefault(tuple(sorted(pair)), []).append(v)
    mean = {pair: sum(vs) / len(vs) for pair, vs in sums.items()}
    nodes = sorted({n for pair in mean for n in pair})
    inter = {
        "computed": bool(mean),
        "n_images": sum(bool(e["interactions"]) for e in out),
        "heat_map": heat_map(nodes, mean, title="Mean interaction over explained images")
        if mean
        else "",
    }
    test["summary"] = _significance_summary(art.explanations)
    test["n_images"] = sum(bool(e["significance"]) for e in out)
    test["computed"] = test["computed"] or bool(test["summary"]) or test["n_images"] > 0
    return out, inter, test


def _partly_drawn(raw: dict | None) -> list[dict]:
    """The nodes the explanations flag as drawn only in part or too far (``meta.partly_drawn``:
    the fraction of an asked change the fit measured its twin to draw); empty when none."""
    meta = raw.get("meta") if isinstance(raw, Mapping) else None
    flagged = meta.get("partly_drawn") if isinstance(meta, Mapping) else None
    if not isinstance(flagged, Mapping):
        return []
    rows = []
    for node, value in flagged.items():
        v = _num(value)
        if v is not None:
            rows.append({"node": str(node), "drawn": f"{v:.0%}"})
    return rows


def _counterfactual(cf: Mapping[str, Any] | None) -> dict | None:
    if cf is None:
        return None
    nodes = cf.get("nodes", cf.get("interventions", {}))
    if isinstance(nodes, Mapping):
        changes = [{"node": str(k), "value": _fmt(v)} for k, v in nodes.items()]
    elif isinstance(nodes, list):
        changes = [{"node": str(n), "value": ""} for n in nodes]
    else:
        changes = []
    valid = cf.get("valid", cf.get("success"))
    return {
        "target": cf.get("target"),
        "prediction": cf.get("prediction"),
        "changes": changes,
        "valid": None if valid is None else bool(valid),
    }


# ---------------------------------------------------------------- config and versions
def _provenance(art: RunArtifacts) -> dict:
    state = art.state if isinstance(art.state, Mapping) else {}
    versions = {}
    if isinstance(state.get("versions"), Mapping):
        versions = {str(k): str(v) for k, v in state["versions"].items()}
    for key in sorted(state):
        if key in ("format_version", "glance_version"):
            continue  # shown from the manifest
        if key.endswith("_version") and not isinstance(state[key], (dict, list)):
            versions[key.removesuffix("_version")] = str(state[key])
    run_facts = {
        k: str(state[k])
        for k in ("preset", "random_state", "layer", "train_source", "precision")
        if state.get(k) is not None
    }
    if _num(state.get("fit_seconds")) is not None:
        run_facts["fit_seconds"] = f"{float(state['fit_seconds']):.1f}"
    files = art.manifest.get("files", {}) if isinstance(art.manifest, Mapping) else {}
    return {
        "config": art.config_text,
        "versions": versions,
        "facts": run_facts,
        "glance_version": art.manifest.get("glance_version"),
        "format_version": art.manifest.get("format_version"),
        "files": [{"path": p, "sha": str(h)[:16]} for p, h in sorted(files.items())],
        "classes": state.get("classes"),
        "contexts": state.get("contexts", state.get("context_names")),
    }


def _template_env() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("glance.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_report(run_dir: str | os.PathLike[str], *, verify: bool = True) -> str:
    """Render the run directory ``run_dir`` into one self-contained HTML document.

    Parameters
    ----------
    run_dir
        A run directory (``glance fit``; optionally ``evaluate``, ``graph``, ``explain``).
    verify
        Check the run's ``MANIFEST.json`` first and refuse a tampered or incomplete run.

    Returns
    -------
    str
        The HTML. Sections whose artefacts are absent say "not computed".

    Raises
    ------
    CheckpointCorruptError
        The manifest check fails or an artefact is unreadable.
    CheckpointIncompatibleError
        The run was written in a newer format.
    """
    art = load_run_artifacts(run_dir, verify=verify)
    atlas = _atlas_section(art)
    local, interactions, significance = _local(art, atlas["links"])
    surrogate = [
        {"caption": name, "uri": _data_uri(art, name, "surrogate picture")}
        for name in art.surrogate_pictures
    ]
    css = resources.files("glance.report").joinpath("static/report.css").read_text("utf-8")
    context = {
        "title": f"glance report: {Path(run_dir).resolve().name}",
        "run_name": Path(run_dir).resolve().name,
        "css": css,
        "glance_version": __version__,
        "faith": _faithfulness(art.metrics),
        "graph": _graph_section(art),
        "global_importance": _global_importance(art, local),
        "local": local,
        "partly_drawn": _partly_drawn(art.explanations),
        "atlas": atlas,
        "significance": significance,
        "interactions": interactions,
        "surrogate": surrogate,
        "prov": _provenance(art),
    }
    return _template_env().get_template("report.html.j2").render(**context)


def write_report(
    run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None
) -> Path:
    """Render ``run_dir`` (see :func:`render_report`) and write it atomically.

    Parameters
    ----------
    run_dir
        The run directory.
    out
        Output file; default ``RUN/report.html``. Inside a run the report is sealed into it.

    Returns
    -------
    Path
        The written file.
    """
    from glance.run import Run, enclosing_run

    html = render_report(run_dir)
    run = Run.open(run_dir, verify=False)  # verified while rendering
    path = Path(out) if out is not None else run.path / run.report_file
    outer = run if run.relative(path) is not None else enclosing_run(path)
    if outer is None:
        atomic_write_text(path, html)
        return path
    outer = Run.open(outer.path, verify=False)
    outer.write_file(outer.relative(path) or "", lambda staged: atomic_write_text(staged, html))
    return path
