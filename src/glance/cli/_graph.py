"""CLI of the graph area: ``glance graph RUN`` (causal discovery + SCM on a fitted run).

Writes ``graph.json``, ``graph.graphml``, ``graph.dot``, ``graph.png`` and
``global_importance.json`` into ``--out`` (default ``RUN/graph``) and re-seals the run's
manifest when the output lies inside the run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from glance.cli._common import run_dataset


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add ``glance graph``."""
    p = subparsers.add_parser(
        "graph",
        help="causal graph of a fitted run (bootstrap confidence, SCM, global importance)",
        description="Discover the causal graph among contexts, concepts and the classifier's "
        "outputs (causal-learn PC or GES; undirected where the data cannot orient), with "
        "bootstrap confidences, and fit a structural causal model on it.",
    )
    p.add_argument("run", type=Path, help="run directory written by 'glance fit'")
    p.add_argument(
        "--data",
        type=Path,
        help="dataset to encode (default: the run's training data, from RUN/data.json)",
    )
    p.add_argument("--split", help="split of the data (default: the training split)")
    p.add_argument(
        "--bootstrap",
        type=int,
        default=20,
        metavar="B",
        help="bootstrap resamples (0: a single discovery; default 20)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="presence/orientation frequency an edge needs (default 0.5)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--knowledge",
        type=Path,
        metavar="FILE",
        help="background knowledge (JSON/YAML: tiers, forbidden, required)",
    )
    p.add_argument("--method", choices=["pc", "ges"], default="pc")
    p.add_argument("--ci-test", choices=["fisherz", "kci"], default="fisherz")
    p.add_argument("--alpha", type=float, default=0.01, help="CI-test level (default 0.01)")
    p.add_argument(
        "--orientation",
        choices=["conservative", "sepset"],
        default="conservative",
        help="PC collider rule: only definite colliders (default) or the classic sepset rule",
    )
    p.add_argument(
        "--mechanism",
        choices=["linear", "mlp", "gbm"],
        default="linear",
        help="SCM mechanism per node (default linear)",
    )
    p.add_argument(
        "--outputs",
        nargs="+",
        metavar="CLASS",
        help="classes whose logits become output nodes (default: all)",
    )
    p.add_argument("--max-images", type=int, help="random subset of the images")
    p.add_argument(
        "--concept-policy",
        choices=["error", "drop"],
        default="error",
        help="a constant/duplicated/collinear free concept: stop with an error naming it "
        "(default) or drop it and go on",
    )
    p.add_argument("--jobs", type=int, default=2, help="bootstrap worker processes")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, help="output directory (default RUN/graph)")
    p.set_defaults(func=_cmd_graph)


def _cmd_graph(args: argparse.Namespace) -> int:
    from glance._io import write_manifest
    from glance.causal import BackgroundKnowledge
    from glance.causal.from_glance import discover_from_glance
    from glance.estimator import load

    run = Path(args.run)
    knowledge = BackgroundKnowledge.from_file(args.knowledge) if args.knowledge else None
    est = load(run, device=args.device)
    dataset = run_dataset(run, args.data, args.split, "train")
    out = Path(args.out) if args.out else run / "graph"
    graph = discover_from_glance(
        est,
        dataset,
        n_resamples=args.bootstrap,
        threshold=args.threshold,
        random_state=args.seed,
        n_jobs=args.jobs,
        knowledge=knowledge,
        method=args.method,
        ci_test=args.ci_test,
        alpha=args.alpha,
        orientation=args.orientation,
        mechanism=args.mechanism,
        outputs=args.outputs,
        max_images=args.max_images,
        concept_policy=args.concept_policy,
        out=out,
    )
    if out.resolve().is_relative_to(run.resolve()):
        write_manifest(run, {"kind": "glance-run"})
    sys.stdout.write(format_edges(graph))
    sys.stdout.write(f"graph written to {out}\n")
    return 0


def format_edges(graph: Any) -> str:
    """The edges as an aligned text table (``->`` directed, ``--`` undirected)."""
    rows = [("edge", "confidence", "orientation", "effect")]
    for e in graph.edges():
        rows.append(
            (
                f"{e.source} {'->' if e.directed else '--'} {e.target}",
                f"{e.confidence:.2f}",
                f"{e.orientation_confidence:.2f}",
                f"{e.effect:+.3f}",
            )
        )
    for a in graph.meta.get("assumptions", []):
        rows.append((f"assumed {a['source']} -> {a['target']}", "", "", a["reason"]))
    width = max(len(r[0]) for r in rows)
    return "".join(f"{r[0]:<{width}}  {r[1]:>10}  {r[2]:>11}  {r[3]}\n" for r in rows)
