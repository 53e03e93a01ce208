"""Benchmark of glance's reference classifier and feature cache (issue 3, "must reach").

Sections:

- ``digits``: small-cnn trained on the 9,000 ``train`` digits of a generated Morpho-MNIST set
  (``glance data morpho-mnist --n 10000``; 10 % of them held out inside training for early
  stopping), accuracy on the 1,000 held-out ``t10k`` digits (must reach >= 98 %) and training
  wall time (must reach <= 180 s).
- ``cache``: ``cache_features`` of all 10,000 digits at the classifier's automatic layer
  (must reach <= 30 s).
- ``thickness`` (optional): the "thick vs thin" classifier (``thickness:median``) and its t10k
  accuracy, reported without a target.
- ``shapes`` (optional): the known-behaviour recipes ``shapes-plain`` and ``shapes-spurious`` on
  generated causal shapes (3,000 images, 32 px): test accuracy, and for the spurious variant the
  accuracy on ``test_reversed`` (cue flipped); the drop measures reliance on the cue.

Data generation is not timed as training. The machine is shared, so the 1-minute load average
before and after each timed section is recorded next to the figure.

Usage::

    .venv/bin/python benchmarks/bench_classifier.py                  # digits + cache
    .venv/bin/python benchmarks/bench_classifier.py --sections digits cache thickness
    .venv/bin/python benchmarks/bench_classifier.py --threads 1      # busy machine

Prints a table and writes ``benchmarks/results/classifier.json``.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from glance._io import atomic_write_json  # noqa: E402
from glance.classifiers import (  # noqa: E402
    ClassifierAdapter,
    cache_features,
    evaluate_classifier,
    train_classifier,
)
from glance.data import ArrayDataset, load_dataset  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "classifier.json"
TARGET_ACC, TARGET_TRAIN_S, TARGET_CACHE_S = 0.98, 180.0, 30.0


def _load() -> float:
    return os.getloadavg()[0]


def _data(directory: Path, seed: int) -> Path:
    from glance.data.morpho_generate import generate_morphomnist

    if (directory / "MANIFEST.json").is_file():
        return directory
    t0 = time.perf_counter()
    generate_morphomnist(directory, n=10_000, seed=seed)
    logging.info("generated 10,000 digits in %.1f s", time.perf_counter() - t0)
    return directory


def _train(data: Path, target: str, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    train = load_dataset(data, "train")
    load0 = _load()
    t0 = time.perf_counter()
    model = train_classifier(
        train, "small-cnn", target, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        seed=args.seed, quiet=True, num_threads=args.threads,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    test = evaluate_classifier(model, load_dataset(data, "t10k"))
    row = {
        "target": target,
        "n_train": len(train),
        "n_test": test["n"],
        "test_accuracy": test["accuracy"],
        "validation_accuracy": model.meta["accuracy"],
        "epochs_run": model.meta["training"]["epochs_run"],
        "train_wall_s": wall,
        "load_avg_before": load0,
        "load_avg_after": _load(),
    }
    return model, row


def _cache(model: Any, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    parts = [load_dataset(data, s) for s in ("train", "t10k")]
    images = np.concatenate([p.images for p in parts])
    labels = np.concatenate([p.labels for p in parts])
    ds = ArrayDataset(images, labels=labels, source=f"{data} (train+t10k)")
    adapter = ClassifierAdapter(model)
    with tempfile.TemporaryDirectory() as tmp:
        load0 = _load()
        t0 = time.perf_counter()
        cache = cache_features(adapter, ds, Path(tmp) / "cache", num_threads=args.threads)
        wall = time.perf_counter() - t0
        shape = list(cache.features.shape)
    return {
        "n_images": len(ds),
        "layer": adapter.layer_name,
        "features_shape": shape,
        "cache_wall_s": wall,
        "load_avg_before": load0,
        "load_avg_after": _load(),
    }


def _shapes(args: argparse.Namespace) -> dict[str, Any]:
    from glance.classifiers import train_recipe
    from glance.data.shapes import generate_shapes

    out: dict[str, Any] = {}
    root = Path(tempfile.gettempdir()) / "glance-bench-classifier-shapes"
    for variant in ("plain", "spurious"):
        data = root / variant
        if not (data / "MANIFEST.json").is_file():
            generate_shapes(data, n=3000, size=32, variant=variant, seed=args.seed)
        t0 = time.perf_counter()
        _, report = train_recipe(
            f"shapes-{variant}", data, seed=args.seed, num_threads=args.threads
        )
        out[variant] = {**report, "train_wall_s": time.perf_counter() - t0}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--sections",
        nargs="+",
        default=["digits", "cache"],
        choices=["digits", "cache", "thickness", "shapes"],
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="generated Morpho-MNIST directory (reused if complete)",
    )
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    p.add_argument("--results", type=Path, default=RESULTS, help="JSON output path")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data_dir = args.data_dir or Path(tempfile.gettempdir()) / "glance-bench-classifier-morpho10k"
    data = _data(data_dir, args.seed)
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": args.threads or torch.get_num_threads(),
    }
    rows: dict[str, Any] = {}
    model = None
    if "digits" in args.sections or "cache" in args.sections:
        model, rows["digits"] = _train(data, "label", args)
        rows["digits"]["pass_accuracy"] = rows["digits"]["test_accuracy"] >= TARGET_ACC
        rows["digits"]["pass_time"] = rows["digits"]["train_wall_s"] <= TARGET_TRAIN_S
    if "cache" in args.sections:
        rows["cache"] = _cache(model, data, args)
        rows["cache"]["pass_time"] = rows["cache"]["cache_wall_s"] <= TARGET_CACHE_S
    if "thickness" in args.sections:
        _, rows["thickness"] = _train(data, "thickness:median", args)
    if "shapes" in args.sections:
        rows["shapes"] = _shapes(args)
    print(f"{'figure':44s} {'value':>10s} {'target':>10s} {'load':>6s}")
    if "digits" in rows:
        d = rows["digits"]
        print(
            f"{'digits t10k accuracy (small-cnn)':44s} {d['test_accuracy']:10.4f} "
            f"{'>= 0.98':>10s} {d['load_avg_before']:6.1f}"
        )
        print(
            f"{'digits training wall time (s)':44s} {d['train_wall_s']:10.1f} {'<= 180':>10s} "
            f"{d['load_avg_before']:6.1f}"
        )
    if "cache" in rows:
        c = rows["cache"]
        print(
            f"{'feature caching, 10,000 digits (s)':44s} {c['cache_wall_s']:10.1f} "
            f"{'<= 30':>10s} {c['load_avg_before']:6.1f}"
        )
    if "thickness" in rows:
        t = rows["thickness"]
        print(
            f"{'thick vs thin t10k accuracy':44s} {t['test_accuracy']:10.4f} {'-':>10s} "
            f"{t['load_avg_before']:6.1f}"
        )
    for variant, r in rows.get("shapes", {}).items():
        for split, acc in r["accuracy"].items():
            label = f"shapes-{variant} {split} accuracy"
            print(f"{label:44s} {acc:10.4f} {'-':>10s} {_load():6.1f}")
    atomic_write_json(
        args.results,
        {"env": env, "args": {k: str(v) for k, v in vars(args).items()}, "results": rows},
    )
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
