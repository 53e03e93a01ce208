"""Does the concept atlas say the truth where it is known? (issue "Explanations a person can read")

Two tasks, set up as in ``bench_explain.py`` (its data, classifiers and fitted runs are reused
from the same ``--work`` folder):

- ``shapes``: causal shapes (plain), the classifier built on a known label rule: the atlas entry of
  every aligned context must name that context as its strongest correlate (|r| >= 0.8), and the
  rule factor must be described as moving the output;
- ``morpho``: Morpho-MNIST with independent thickness and intensity, a thick-vs-thin classifier:
  thickness must be described as moving the output and intensity as not.

It also draws each task's graph readably and records the story and the edge count (<= 15, with
every output's parents). Prints a table and writes ``benchmarks/results/atlas.json``.

Usage::

    .venv/bin/python benchmarks/bench_atlas.py [--preset fast] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import bench_explain as bx  # noqa: E402

RESULTS = ROOT / "results" / "atlas.json"
STRONG = 0.8


def _graph_checks(est: Any) -> dict[str, Any]:
    from glance.causal import graph_story, readable_graph

    full = est.graph_
    small = readable_graph(full)
    outputs = [n for n in full.names if full.kind(n) == "output"]
    parents = {p for o in outputs for p in full.parents(o) + full.neighbours(o)}
    drawn = set(small.names)
    return {
        "story": graph_story(full),
        "full_edges": len(full.edges()),
        "readable_edges": len(small.edges()),
        "output_parents_drawn": sorted(parents & drawn),
        "output_parents_missing": sorted(parents - drawn),
    }


def _atlas(est: Any, data: Path, split: str, n: int) -> tuple[Any, float]:
    from glance.data import load_dataset

    t0 = time.perf_counter()
    atlas = est.describe_concepts(load_dataset(data, split=split), n_images=n)
    return atlas, time.perf_counter() - t0


def task_shapes(args: argparse.Namespace) -> dict[str, Any]:
    from glance.data.shapes import SHAPES_FACTORS

    data = bx._data("plain", args.work, args.n_shapes, args.seed)
    truth = json.loads((data / "truth.json").read_text())
    contexts = list(SHAPES_FACTORS)
    clf = bx._classifier(data, "label", args.work, args.epochs, args.seed)
    est = bx._fit(clf, data, contexts, args)
    est.global_explanation(bx._relabelled(load_train(data), clf), n_resamples=0)
    atlas, seconds = _atlas(est, data, "test", args.n_images)
    rule = truth["label_rule"]["factors"]
    rows = {}
    for c in contexts:
        name, r = atlas.strongest_context(c)
        rows[c] = {
            "strongest_context": name,
            "r": r,
            "names_itself": name == c and abs(r) >= STRONG,
            "moves_output": atlas.moves_output(c),
            "description": atlas.describe(c),
        }
    return {
        "data": str(data),
        "rule_factors": rule,
        "contexts": rows,
        "every_context_names_itself": all(v["names_itself"] for v in rows.values()),
        "rule_factor_moves_output": all(rows[f]["moves_output"] for f in rule),
        "factors_described_as_moving": [c for c, v in rows.items() if v["moves_output"]],
        "atlas_seconds": seconds,
        "graph": _graph_checks(est),
    }


def load_train(data: Path) -> Any:
    from glance.data import load_dataset

    return load_dataset(data, split="train")


def task_morpho(args: argparse.Namespace) -> dict[str, Any]:
    data = bx._data("morpho", args.work, args.n_morpho, args.seed)
    clf = bx._classifier(data, "thickness:median", args.work, args.epochs, args.seed)
    est = bx._fit(clf, data, ["thickness", "intensity"], args)
    est.global_explanation(bx._relabelled(load_train(data), clf), n_resamples=0)
    atlas, seconds = _atlas(est, data, "t10k", args.n_images)
    return {
        "data": str(data),
        "thickness_moves_output": atlas.moves_output("thickness"),
        "intensity_moves_output": atlas.moves_output("intensity"),
        "moved": dict(zip(atlas.nodes, atlas.moved.round(4).tolist(), strict=True)),
        "descriptions": dict(zip(atlas.nodes, atlas.descriptions, strict=True)),
        "atlas_seconds": seconds,
        "graph": _graph_checks(est),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="shapes,morpho")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--work", type=Path, default=Path("/tmp/glance-bench-explain"))
    ap.add_argument("--n-morpho", type=int, default=4000)
    ap.add_argument("--n-shapes", type=int, default=4000)
    ap.add_argument("--n-images", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    # the preset's own schedule (bench_explain._fit reads these overrides)
    args.encoder_steps = args.warmup_steps = args.generator_steps = args.eval_images = None
    args.work.mkdir(parents=True, exist_ok=True)
    from glance._io import atomic_write_json

    results: dict[str, Any] = {"preset": args.preset, "command": " ".join(sys.argv)}
    for task in args.tasks.split(","):
        print(f"{task} ...", flush=True)
        results[task] = {"shapes": task_shapes, "morpho": task_morpho}[task](args)
    checks = []
    if "shapes" in results:
        s = results["shapes"]
        checks.append(
            (
                "shapes: every aligned context names itself (|r| >= 0.8)",
                s["every_context_names_itself"],
            )
        )
        checks.append(
            (
                "shapes: the rule factor is described as moving the output",
                s["rule_factor_moves_output"],
            )
        )
    if "morpho" in results:
        m = results["morpho"]
        checks.append(("morpho: thickness moves the output", m["thickness_moves_output"]))
        checks.append(("morpho: intensity does not", not m["intensity_moves_output"]))
    for task in ("shapes", "morpho"):
        if task in results:
            g = results[task]["graph"]
            checks.append(
                (
                    f"{task}: readable graph <= 15 edges, all output parents",
                    g["readable_edges"] <= 15 and not g["output_parents_missing"],
                )
            )
    results["checks"] = [{"check": c, "met": bool(ok)} for c, ok in checks]
    for c, ok in checks:
        print(f"{'met' if ok else 'NOT met':8} {c}")
    for task in ("shapes", "morpho"):
        if task in results:
            print(f"{task} story: {results[task]['graph']['story']}")
    atomic_write_json(RESULTS, results)
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
