"""CLI subcommands of the 'fit' area: ``glance fit`` and ``glance evaluate``.

Thin wrappers over :class:`glance.Glance`: ``fit`` trains the twin surrogate of a classifier on a
dataset into a run directory (``--resume`` continues it from its last complete checkpoint);
``evaluate`` measures its faithfulness on held-out images and seals it into the run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from glance.cli._common import (
    add_classifier_args,
    add_threads_arg,
    check_new_file,
    classifier_from_args,
    load_run_model,
    positive_int,
    seed,
)

__all__ = ["add_parsers"]


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add ``fit`` and ``evaluate``."""
    p = subparsers.add_parser(
        "fit",
        help="fit the concept encoder and generator of a classifier",
        description="Fit GLANCE's twin surrogate (concept encoder, surrogate head, generator) of "
        "a classifier on a dataset. Same seed, same data, same machine and a fixed --threads: "
        "the same result.",
    )
    p.add_argument("--data", required=True, help="dataset directory (training split is used)")
    add_classifier_args(p, file_option=True)
    add_threads_arg(p)
    p.add_argument("--contexts", default="", help="comma-separated context columns, in order")
    p.add_argument("--preset", default="fast", help="tiny | fast | default | paper")
    p.add_argument("--out", required=True, help="run directory (must be new unless --resume)")
    p.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue RUN from its last checkpoint (only the same run: same data, contexts, "
        "classifier, seed and configuration)",
    )
    p.add_argument("--config", help="YAML/TOML file overriding the preset")
    p.add_argument("--layer", help="classifier feature layer (default: last conv stage)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=_cmd_fit)

    e = subparsers.add_parser(
        "evaluate",
        help="faithfulness figures of a fitted run",
        description="Measure fidelity, alignment, disentanglement and realism of a fitted run on "
        "held-out images. On the run's own held-out split they are sealed as RUN/metrics.json "
        "(with the reconstruction/sample grids); on other data (--data) under "
        "RUN/evaluations/<data>/, beside the run's own figures.",
    )
    e.add_argument("run", help="run directory written by 'glance fit'")
    e.add_argument("--data", help="dataset to evaluate on (default: the run's held-out split)")
    e.add_argument("--split", help="split of --data (default: its test split)")
    e.add_argument("--json", help="also write the metrics to this file")
    e.add_argument("--force", action="store_true", help="replace an existing --json file")
    e.add_argument(
        "--truth",
        help="truth.json of a dataset with a known causal graph (glance data shapes writes "
        "one): adds SHD, edge precision/recall/F1 and orientation accuracy of RUN/graph",
    )
    e.add_argument("--n-images", type=positive_int, help="images evaluated (default: the preset's)")
    e.add_argument("--device", default="cpu")
    add_classifier_args(e)
    add_threads_arg(e)
    e.set_defaults(func=_cmd_evaluate)


def _training_split(data: str) -> str | None:
    from glance.data import list_splits, test_split

    splits = list_splits(data)
    held = test_split(data)
    return next((s for s in splits if s != held), None)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[dict[str, int]]:
    """SIGTERM/SIGINT ask the loop to checkpoint and stop; handlers are restored afterwards."""
    from glance.training.loop import request_stop

    seen: dict[str, int] = {}

    def handler(signum: int, _frame: Any) -> None:
        if seen:  # a second signal aborts at once; the last committed checkpoint stays valid
            raise KeyboardInterrupt
        seen["signal"] = signum
        request_stop()

    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for s in old:
        signal.signal(s, handler)
    try:
        yield seen
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _cmd_fit(args: argparse.Namespace) -> int:
    from glance.data import load_dataset
    from glance.estimator import Glance, check_device
    from glance.training.config import resolve_config
    from glance.training.loop import TrainingInterrupted, training_precision

    contexts = tuple(c.strip() for c in args.contexts.split(",") if c.strip())
    resolve_config(args.preset, args.config)  # a bad preset or config fails before any loading
    if args.dry_run:
        import yaml

        side = load_dataset(args.data, _training_split(args.data)).image_shape[-1]
        config = resolve_config(args.preset, args.config, resolution=side)
        print(yaml.safe_dump({"preset": args.preset, **config.to_dict()}, sort_keys=False))
        mode = config.train.mixed_precision
        precision = training_precision(args.device, mode, side)
        print(f"# training precision on {args.device} ({side} px images): {precision}")
        return 0
    check_device(args.device)  # before anything is loaded or created
    classifier = classifier_from_args(args, required=True)
    dataset = load_dataset(args.data, _training_split(args.data))
    est = Glance(
        classifier,
        layer=args.layer,
        contexts=contexts,
        preset=args.preset,
        # the overrides, not a resolved config: fit resolves them for the data's resolution
        config=args.config,
        random_state=args.seed,
        device=args.device,
        quiet=args.quiet,
        n_threads=args.threads,
    )
    with _stop_on_signals() as seen:
        try:
            est.fit(dataset, out=args.out, resume=args.resume)
        except TrainingInterrupted as exc:
            exc.exit_code = 130 if seen.get("signal") == signal.SIGINT else 143
            raise
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(f"fitted in {est.fit_seconds_:.0f} s; run saved to {Path(args.out)}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from glance._io import atomic_write_json

    if args.json:
        check_new_file(Path(args.json), args.force, "--json")
    est = load_run_model(args, writes=True)
    dataset = est.run_.dataset("test", args.data, args.split)
    truth = _read_truth(Path(args.truth)) if args.truth else None
    metrics = est.evaluate(dataset, out=args.run, n_images=args.n_images, truth=truth)
    if args.json:
        atomic_write_json(args.json, metrics)
    sys.stdout.write(format_table(metrics))
    return 0


def _read_truth(truth_path: Path) -> dict[str, Any]:
    from glance.exceptions import DataValidationError

    try:
        return json.loads(truth_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataValidationError(f"truth file not found: {truth_path}") from None
    except ValueError as exc:
        raise DataValidationError(f"{truth_path}: not valid JSON ({exc})") from None


def format_table(metrics: dict[str, Any]) -> str:
    """The metrics as an aligned two-column text table."""
    rows: list[tuple[str, str]] = []

    def fmt(v: Any) -> str:
        return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    for key, value in metrics.items():
        if key == "grids":
            rows += [(f"grid {k}", str(v)) for k, v in value.items()]
        elif isinstance(value, dict):
            rows += [(f"{key} {k}", fmt(v)) for k, v in value.items()]
        else:
            rows.append((key, fmt(value)))
    width = max(len(k) for k, _ in rows)
    return "".join(f"{k:<{width}}  {v}\n" for k, v in rows)
