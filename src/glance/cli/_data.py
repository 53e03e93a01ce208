"""CLI of the data area: ``glance data morpho-mnist|shapes|pendulum`` and ``glance measure``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from glance.cli._common import check_new_file, positive_int, seed
from glance.exceptions import DataValidationError

logger = logging.getLogger(__name__)


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data`` (``morpho-mnist``, ``shapes``, ``pendulum``) and ``measure``."""
    data = subparsers.add_parser(
        "data", help="generate datasets (Morpho-MNIST, causal shapes, pendulum)"
    )
    sub = data.add_subparsers(dest="data_command", metavar="DATASET")
    data.set_defaults(func=lambda args: data.print_help() or 2)

    mm = sub.add_parser(
        "morpho-mnist",
        help="causal Morpho-MNIST (thickness -> intensity) from the embedded digits",
        description="Write train (90%%) and t10k (10%%) splits in the Morpho-MNIST format.",
    )
    mm.add_argument("--out", required=True, type=Path, help="output directory")
    mm.add_argument("--n", type=positive_int, default=None, help="digits (default: 10000)")
    mm.add_argument("--seed", type=seed, default=0, help="random seed (default: 0)")
    mm.add_argument("--slant", action="store_true", help="add an independent slant factor")
    mm.add_argument(
        "--independent", action="store_true", help="draw intensity independently of thickness"
    )
    mm.add_argument("--jobs", type=positive_int, default=None, help="worker processes")
    mm.add_argument("--force", action="store_true", help="replace a dataset at --out")
    mm.set_defaults(func=_morpho_mnist)

    sh = sub.add_parser(
        "shapes",
        help="causal shapes with a known SCM, label rule and optional spurious cue",
        description="Write train/test (and test_reversed for --variant spurious) splits.",
    )
    sh.add_argument("--out", required=True, type=Path, help="output directory")
    sh.add_argument("--n", type=positive_int, default=10_000, help="images (default: 10000)")
    sh.add_argument("--size", type=int, choices=(32, 64), default=32, help="image side (px)")
    sh.add_argument("--variant", choices=("plain", "spurious"), default="plain")
    sh.add_argument("--seed", type=seed, default=0, help="random seed (default: 0)")
    sh.add_argument("--jobs", type=positive_int, default=None, help="worker processes")
    sh.add_argument("--force", action="store_true", help="replace a dataset at --out")
    sh.set_defaults(func=_shapes)

    pe = sub.add_parser(
        "pendulum",
        help="pendulum and light casting a shadow (CausalVAE scene): angles -> shadow -> label",
        description="Write train/test splits; the label is the shadow's length (long vs short).",
    )
    pe.add_argument("--out", required=True, type=Path, help="output directory")
    pe.add_argument("--n", type=positive_int, default=10_000, help="images (default: 10000)")
    pe.add_argument("--size", type=int, choices=(64, 128), default=64, help="image side (px)")
    pe.add_argument("--seed", type=seed, default=0, help="random seed (default: 0)")
    pe.add_argument("--jobs", type=positive_int, default=None, help="worker processes")
    pe.add_argument("--force", action="store_true", help="replace a dataset at --out")
    pe.set_defaults(func=_pendulum)

    me = subparsers.add_parser(
        "measure",
        help="Morpho-MNIST morphometrics of every image to a CSV",
        description="PATH: an IDX images file, an .npz with 'images', or a dataset directory "
        "(Morpho-MNIST or image folder). One CSV row per image, in image order.",
    )
    me.add_argument("path", type=Path, metavar="PATH")
    me.add_argument("--out", required=True, type=Path, help="output CSV file")
    me.add_argument("--split", default=None, help="split of a dataset directory (default: train)")
    me.add_argument("--jobs", type=positive_int, default=None, help="worker processes")
    me.add_argument("--force", action="store_true", help="replace an existing --out file")
    me.set_defaults(func=_measure)


def _morpho_mnist(args: argparse.Namespace) -> int:
    from glance.data.morpho_generate import generate_morphomnist

    generate_morphomnist(
        args.out,
        n=args.n,
        seed=args.seed,
        slant=args.slant,
        independent=args.independent,
        n_jobs=args.jobs,
        progress=not args.quiet,
        force=args.force,
    )
    logger.info("Morpho-MNIST written to %s", args.out)
    return 0


def _shapes(args: argparse.Namespace) -> int:
    from glance.data.shapes import generate_shapes

    generate_shapes(
        args.out,
        n=args.n,
        size=args.size,
        variant=args.variant,
        seed=args.seed,
        n_jobs=args.jobs,
        progress=not args.quiet,
        force=args.force,
    )
    logger.info("causal shapes written to %s", args.out)
    return 0


def _pendulum(args: argparse.Namespace) -> int:
    from glance.data.pendulum import generate_pendulum

    generate_pendulum(
        args.out,
        n=args.n,
        size=args.size,
        seed=args.seed,
        n_jobs=args.jobs,
        progress=not args.quiet,
        force=args.force,
    )
    logger.info("pendulum written to %s", args.out)
    return 0


def _measure(args: argparse.Namespace) -> int:
    from glance.data._csv import write_csv
    from glance.data.loading import load_dataset
    from glance.data.morphometrics import METRIC_NAMES, measure

    if not args.path.exists():
        raise DataValidationError(f"{args.path}: no such file or directory")
    check_new_file(args.out, args.force)
    dataset = load_dataset(args.path, args.split)
    if dataset.image_shape[0] != 1:
        raise DataValidationError(
            f"{args.path}: measure needs greyscale images (1 channel); got {dataset.image_shape[0]}"
        )
    block = 2000  # bounded memory for streamed datasets
    parts: dict[str, list[np.ndarray]] = {name: [] for name in METRIC_NAMES}
    for start in range(0, len(dataset), block):
        idx = np.arange(start, min(start + block, len(dataset)))
        images = dataset._load_uint8(idx)[:, 0]
        for name, values in measure(images, n_jobs=args.jobs, progress=not args.quiet).items():
            parts[name].append(values)
    columns = [np.concatenate(parts[name]) for name in METRIC_NAMES]
    write_csv(args.out, list(METRIC_NAMES), columns)
    logger.info("measured %d images -> %s", len(dataset), args.out)
    return 0
