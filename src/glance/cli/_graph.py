"""CLI of the graph area: ``glance graph RUN`` (causal discovery + SCM on a fitted run).

Writes ``graph.json``, ``graph.graphml``, ``graph.dot``, ``graph.png``,
``global_importance.json`` and the SCM into ``--out`` (default ``RUN/graph``); inside the run
they are sealed into it as one transaction (a graph written before is replaced).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from glance.causal.options import (
    DATA_CI_TESTS,
    DISCOVERY_METHODS,
    KCI_MIN_SUBSAMPLE,
    MECHANISMS,
    ORIENTATIONS,
    DiscoveryOptions,
)
from glance.cli._common import (
    add_classifier_args,
    add_threads_arg,
    check_new_output,
    half_open_unit,
    int_at_least,
    nonneg_int,
    open_unit,
    positive_int,
    seed,
)
from glance.exceptions import ConfigError


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected -1 or an integer >= 1; got {text!r}") from None
    if value == 0 or value < -1:
        raise argparse.ArgumentTypeError(f"expected -1 (all cores) or an integer >= 1; got {value}")
    return value


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
        type=nonneg_int,
        default=20,
        metavar="B",
        help="bootstrap resamples (0: a single discovery; default 20)",
    )
    p.add_argument(
        "--threshold",
        type=half_open_unit,
        default=0.5,
        help="presence/orientation frequency an edge needs (default 0.5)",
    )
    p.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    p.add_argument(
        "--knowledge",
        type=Path,
        metavar="FILE",
        help="background knowledge (JSON/YAML: tiers, forbidden, required)",
    )
    defaults = DiscoveryOptions()
    p.add_argument("--method", choices=DISCOVERY_METHODS, default=defaults.method)
    p.add_argument("--ci-test", choices=DATA_CI_TESTS, default=defaults.ci_test)
    p.add_argument(
        "--alpha",
        type=open_unit,
        default=defaults.alpha,
        help=f"CI-test level (default {defaults.alpha})",
    )
    p.add_argument(
        "--orientation",
        choices=ORIENTATIONS,
        default=defaults.orientation,
        help="PC collider rule: only definite colliders (default) or the classic sepset rule",
    )
    p.add_argument(
        "--max-k",
        type=nonneg_int,
        default=defaults.max_k,
        metavar="K",
        help="largest conditioning set PC tries / most parents per node in GES (default: no "
        "limit)",
    )
    p.add_argument(
        "--kci-subsample",
        type=int_at_least(KCI_MIN_SUBSAMPLE),
        default=defaults.kci_subsample,
        metavar="N",
        help=f"rows the KCI test runs on (default {defaults.kci_subsample})",
    )
    p.add_argument(
        "--mechanism",
        choices=MECHANISMS,
        default="linear",
        help="SCM mechanism per node (default linear)",
    )
    p.add_argument(
        "--outputs",
        nargs="+",
        metavar="CLASS",
        help="classes whose logits become output nodes (default: all)",
    )
    p.add_argument("--max-images", type=positive_int, help="random subset of the images")
    p.add_argument(
        "--concept-policy",
        choices=["error", "drop"],
        default="error",
        help="a constant/duplicated/collinear free concept: stop with an error naming it "
        "(default) or drop it and go on",
    )
    p.add_argument(
        "--jobs", type=_jobs, default=2, help="bootstrap worker processes (-1: all cores)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, help="output directory (default RUN/graph)")
    p.add_argument(
        "--force", action="store_true", help="replace an existing --out outside the run"
    )
    add_classifier_args(p)
    add_threads_arg(p)
    p.set_defaults(func=_cmd_graph)


def _cmd_graph(args: argparse.Namespace) -> int:
    from glance.causal import BackgroundKnowledge
    from glance.cli._common import load_run_model

    knowledge = BackgroundKnowledge.from_file(args.knowledge) if args.knowledge else None
    est = load_run_model(args)
    run = est.run_
    out = Path(args.out) if args.out else run.path / run.graph_dir
    if run.relative(out) is None:
        if out.resolve() == run.path.resolve():
            raise ConfigError(f"--out {out} is the run itself; name a folder inside or outside it")
        check_new_output(out, args.force)
    else:
        run.check_writable()  # before discovery, not after it
    dataset = run.dataset("train", args.data, args.split)
    graph = est.global_explanation(
        dataset,
        out=out,
        n_resamples=args.bootstrap,
        threshold=args.threshold,
        random_state=args.seed,
        n_jobs=args.jobs,
        knowledge=knowledge,
        options=DiscoveryOptions(
            method=args.method,
            ci_test=args.ci_test,
            alpha=args.alpha,
            orientation=args.orientation,
            max_k=args.max_k,
            kci_subsample=args.kci_subsample,
        ),
        mechanism=args.mechanism,
        outputs=args.outputs,
        max_images=args.max_images,
        concept_policy=args.concept_policy,
    )
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
