"""CLI subcommands of the 'classifier' area: ``train-classifier`` and ``test-classifier``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from glance.cli._common import (
    check_new_file,
    nonneg_int,
    positive_float,
    positive_int,
    seed,
)
from glance.exceptions import ConfigError
from glance.run import check_writable
from glance.threads import compute

logger = logging.getLogger(__name__)


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train-classifier`` and ``test-classifier``."""
    from glance.classifiers.architectures import ARCHITECTURES

    p = subparsers.add_parser(
        "train-classifier",
        help="train a reference classifier on a dataset directory",
        description="Train a reference classifier (Adam, held-out split, early stopping) and "
        "write MODEL.safetensors + MODEL.json.",
    )
    p.add_argument("--data", required=True, help="dataset directory (Morpho-MNIST, shapes, ...)")
    p.add_argument("--split", default=None, help="training split (default: train)")
    p.add_argument("--arch", default="small-cnn", help=f"one of {', '.join(ARCHITECTURES)}")
    p.add_argument("--target", default="label", help="label | COLUMN | COLUMN:median")
    p.add_argument("--out", required=True, help="output weights file MODEL.safetensors")
    p.add_argument("--epochs", type=positive_int, default=6, help="maximum epochs (default 6)")
    p.add_argument(
        "--batch-size", type=positive_int, default=128, help="mini-batch size (default 128)"
    )
    p.add_argument(
        "--lr", type=positive_float, default=3e-3, help="peak Adam learning rate (default 3e-3)"
    )
    p.add_argument(
        "--patience", type=nonneg_int, default=2, help="early-stopping patience (epochs)"
    )
    p.add_argument("--seed", type=seed, default=0, help="split, initialisation and batch order")
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch threads (default: the cores other processes leave free)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.add_argument(
        "--no-augment", action="store_true", help="no random whole-pixel shifts in training"
    )
    p.set_defaults(func=_train)

    t = subparsers.add_parser(
        "test-classifier",
        help="print a classifier's accuracy on a dataset",
        description="Accuracy of MODEL on DIR (any Morpho-MNIST-format directory, causal shapes "
        "or image folder + CSV), using the target the model was trained for.",
    )
    t.add_argument("model", help="MODEL.safetensors (with MODEL.json) or a state-dict .pt")
    t.add_argument("--data", required=True, help="dataset directory")
    t.add_argument("--split", default=None, help="split (default: the held-out one, e.g. t10k)")
    t.add_argument("--json", default=None, help="also write the result to this JSON file")
    t.add_argument("--force", action="store_true", help="replace an existing --json file")
    t.add_argument("--arch", default=None, help="architecture of a plain state dict")
    t.add_argument("--target", default=None, help="override the saved target spec")
    t.set_defaults(func=_test)


def _train(args: argparse.Namespace) -> int:
    from glance.classifiers.serialization import save_classifier
    from glance.classifiers.training import train_classifier
    from glance.data import load_dataset

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"--out must end in .safetensors; got {out}")
    check_new_file(out, args.force)
    check_writable(out.parent)  # before training, not after it
    dataset = load_dataset(args.data, args.split)
    with compute(args.threads):  # the free cores, or --threads
        model = train_classifier(
            dataset,
            args.arch,
            args.target,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            patience=args.patience,
            seed=args.seed,
            quiet=args.quiet,
            augment=not args.no_augment,
        )
    save_classifier(model, out)
    acc = model.meta["accuracy"]
    n_val = model.meta["training"]["n_val"]
    print(
        f"{args.arch} on {args.data} (target {args.target}): held-out accuracy {acc:.4f} "
        f"on {n_val} images; saved {out}"
    )
    return 0


def _test(args: argparse.Namespace) -> int:
    from glance._io import atomic_write_json
    from glance.classifiers.serialization import load_classifier
    from glance.classifiers.training import evaluate_classifier
    from glance.data import load_dataset, test_split

    if args.json:
        check_new_file(Path(args.json), args.force, "--json")
    split = args.split or test_split(args.data)
    dataset = load_dataset(args.data, split)
    size = tuple(dataset.image_shape[1:]) if args.arch else None
    model = load_classifier(args.model, arch=args.arch, input_size=size)
    result = evaluate_classifier(model, dataset, target=args.target)
    result.update({"model": str(args.model), "data": str(args.data), "split": split})
    if args.json:
        atomic_write_json(args.json, result)
    print(
        f"accuracy {result['accuracy']:.4f} on {result['n']} images of {args.data} "
        f"(split {split}, target {result['target'].get('name', 'label')})"
    )
    return 0
