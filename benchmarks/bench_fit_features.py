"""A fit's classifier features at scale (issue 12): 50,000 images at 128 px within 2 GB.

``Glance.fit`` computes the classifier's features ``h(x)`` of every training image once and
reads them many times. Through small-cnn at 128 px they are 96 x 32 x 32 floats per image,
18.3 GiB for 50,000 images: above ``glance.classifiers.features.FEATURE_MEMORY_BUDGET`` (1 GiB)
they are cached on disk and read back by rows. This measures, on the training split of the
pendulum dataset of ``bench_streaming.py`` (generated there once, under ``--work``), the phases
of a fit that touch all of the features, as the fit runs them:

- ``cache``: ``classifier_outputs`` (decode, classifier forward in batches of 64 at 128 px, rows
  appended to ``features.npy``, fsync, the manifest's sha256), into ``--work``;
- ``reuse``: ``classifier_outputs`` again on the same cache, as a resumed fit verifies it
  (manifest, sizes, identity, 5 rows recomputed) before reusing it;
- ``stats``: ``feature_stats`` (the encoder's per-channel statistics, float64, batches of 64);
- ``encoder_batches``: random batches of ``encoder_batch`` rows (``features[idx]``, as every
  encoder step reads them);
- ``read_all``: every row in batches of 512, in order, without any compute (the disk / page
  cache alone);
- ``encode``: ``encode_features`` through the (untrained) encoder of the ``--preset`` on every
  row (or the first ``--encode-limit``), as the fit encodes all images for the concept mixture;
- ``fit`` (only with ``--fit PRESET``; ``--no-phases`` skips the above): a whole ``Glance.fit``
  of that preset into a run under ``--work``, e.g. ``tiny`` (10 encoder and 10 generator steps
  of narrow networks: the fit's data path end to end, not a generator worth the name).

The classifier is small-cnn trained for one epoch on ``--classifier-images`` images (its quality
does not matter here), in a child process, once, and saved under ``--work``: a fit loads its
classifier, and the trainer's memory must not count against the fit's. Peak RSS is the
process's ``VmHWM``, reset before each phase (see ``bench_streaming.py``); it includes the
~0.5 GB that importing torch maps. No generator is trained (too slow at 128 px on this CPU).

Usage::

    GLANCE_THREADS=1 .venv/bin/python benchmarks/bench_fit_features.py

Prints a table and writes ``benchmarks/results/fit_features.json``; the cache (18.3 GiB of disk)
is removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_info  # noqa: E402
from bench_streaming import (  # noqa: E402
    PEAK_RSS_TARGET,
    _status_kib,
    peak_rss_bytes,
    prepare,
    reset_peak,
)

from glance._io import atomic_write_json  # noqa: E402
from glance.threads import fixed_threads  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def _rss_bytes() -> int | None:
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def _phase(name: str, n_images: int, fn: Any) -> tuple[Any, dict[str, Any]]:
    before = _rss_bytes()
    reset_peak()
    t, cpu = time.perf_counter(), time.process_time()
    out = fn()
    dt, dcpu = time.perf_counter() - t, time.process_time() - cpu
    row = {
        "images": n_images,
        "seconds": dt,
        "cpu_seconds": dcpu,
        "images_per_s": n_images / dt if dt > 0 else None,
        "peak_rss_bytes": peak_rss_bytes(),
        "rss_before_bytes": before,
    }
    print(f"  {name}: {dt:.1f} s, peak RSS {row['peak_rss_bytes'] / 1024**3:.2f} GB", flush=True)
    return out, row


def _train(data: str, n: int, seed: int, path: str, threads: int | None) -> None:
    """Train small-cnn for one epoch on ``n`` training images and save it (child process)."""
    from glance.classifiers import save_classifier
    from glance.classifiers.training import train_classifier
    from glance.data import load_dataset

    if threads:
        torch.set_num_threads(threads)
    ds = load_dataset(data, "train")
    idx = np.sort(np.random.default_rng(seed).choice(len(ds), size=min(n, len(ds)), replace=False))
    clf = train_classifier(ds.subset(idx), "small-cnn", epochs=1, seed=seed, quiet=True)
    save_classifier(clf, path)


def small_cnn(data: Path, work: Path, n: int, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """The classifier, trained once in a child process and saved under ``work`` (a fit loads
    its classifier; training it here would leave the trainer's memory in this process)."""
    import multiprocessing

    from glance.classifiers import load_classifier

    path = work / f"small-cnn-{data.name}-n{n}-s{seed}.safetensors"
    info: dict[str, Any] = {"arch": "small-cnn", "images": n, "epochs": 1, "path": str(path)}
    if not path.is_file():
        print(f"training small-cnn on {n} images ...", flush=True)
        t = time.perf_counter()
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(target=_train, args=(str(data), n, seed, str(path), fixed_threads()))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"training the classifier failed (exit {proc.exitcode})")
        info["train_seconds"] = time.perf_counter() - t
    return load_classifier(path), info


class _First:
    """The first ``m`` rows of ``rows``, read as ``encode_features`` reads (slices)."""

    def __init__(self, rows: Any, m: int) -> None:
        self.rows, self.shape = rows, (m, *rows.shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> torch.Tensor:
        return self.rows[slice(*key.indices(self.shape[0]))]


def measure(ds: Any, clf: Any, args: argparse.Namespace) -> dict[str, Any]:
    from glance.classifiers import ClassifierAdapter
    from glance.classifiers import features as F
    from glance.classifiers.serialization import classifier_fingerprint
    from glance.estimator import build_networks
    from glance.training.checkpoint import dataset_fingerprint
    from glance.training.config import resolve_config
    from glance.training.loop import encode_features

    cpu = torch.device("cpu")
    adapter = ClassifierAdapter(clf)
    adapter.check_dataset(ds)
    n = len(ds)
    identity = {
        "data_fingerprint": dataset_fingerprint(ds),
        "classifier": classifier_fingerprint(clf),
        "layer": adapter.layer_name,
    }
    cache_dir = args.work / "fit-features" / "features"
    shutil.rmtree(cache_dir, ignore_errors=True)
    res: dict[str, Any] = {
        "feature_shape": list(adapter.feature_shape),
        "feature_bytes": F.features_nbytes(adapter, n),
        "budget_bytes": F.FEATURE_MEMORY_BUDGET,
        "cache_dir": str(cache_dir),
    }

    def outputs() -> Any:
        return F.classifier_outputs(
            adapter, ds, cpu, cache_dir=cache_dir, identity=identity, quiet=args.quiet
        )

    (logits, rows), res["cache"] = _phase("cache", n, outputs)
    res["in_memory"] = isinstance(rows, torch.Tensor)
    if not res["in_memory"]:
        res["cache_file_bytes"] = (cache_dir / "features.npy").stat().st_size
    F.close_features(rows)
    (logits, rows), res["reuse"] = _phase("reuse (verify)", n, outputs)
    (mean, std), res["stats"] = _phase("stats", n, lambda: F.feature_stats(rows))
    res["stats"]["std_range"] = [float(std.min()), float(std.max())]

    config = resolve_config(args.preset, None)
    b = config.train.encoder_batch
    perm = np.random.default_rng(0).permutation(n)

    def batches() -> None:
        for k in range(args.encoder_batches):
            rows[perm[(np.arange(b) + k * b) % n]]

    _, res["encoder_batches"] = _phase("encoder batches", args.encoder_batches * b, batches)
    res["encoder_batches"]["batch"] = b

    def read_all() -> float:
        return sum(float(rows[i : i + 512][:, 0, 0, 0].sum()) for i in range(0, n, 512))

    _, res["read_all"] = _phase("read all", n, read_all)

    torch.manual_seed(0)
    encoder = build_networks(config, 2, adapter.feature_shape, adapter.n_classes, ds.image_shape)[
        "encoder"
    ].eval()
    encoder.set_feature_stats(mean, std)
    m = n if args.encode_limit is None else min(args.encode_limit, n)
    _, res["encode"] = _phase("encode", m, lambda: encode_features(encoder, _First(rows, m), cpu))
    res["encode"]["preset"] = args.preset
    F.close_features(rows)
    if not args.keep:
        shutil.rmtree(cache_dir.parent, ignore_errors=True)
    return res


def measure_fit(ds: Any, clf: Any, args: argparse.Namespace) -> dict[str, Any]:
    """A whole ``Glance.fit`` of preset ``args.fit`` into a run under ``--work`` (removed)."""
    from glance.estimator import Glance

    run = args.work / "fit-features" / "run"
    shutil.rmtree(run, ignore_errors=True)
    est = Glance(clf, contexts=args.contexts, preset=args.fit, random_state=0, quiet=args.quiet)
    _, row = _phase(f"fit ({args.fit})", len(ds), lambda: est.fit(ds, out=run))
    row.update(
        preset=args.fit,
        contexts=list(args.contexts),
        feature_cache_removed=not run.joinpath("checkpoints", "features").exists(),
        last_logged=est.history_[-1] if est.history_ else None,
    )
    shutil.rmtree(run.parent, ignore_errors=True)
    return row


def table(res: dict[str, Any]) -> str:
    lines = [f"dataset: {res['data']} ({res['n_images']} images)"]
    if "fit" in res:
        r = res["fit"]
        lines.append(
            f"Glance.fit, preset {r['preset']}: {r['seconds']:.0f} s, peak RSS "
            f"{r['peak_rss_bytes'] / 1024**3:.2f} GB, feature cache removed: "
            f"{'yes' if r['feature_cache_removed'] else 'NO'}"
        )
    if "features" not in res:
        return "\n".join(lines)
    f = res["features"]
    lines += [
        f"features: {f['feature_shape']} per image, {f['feature_bytes'] / 1024**3:.1f} GiB "
        f"(budget {f['budget_bytes'] / 1024**3:.1f} GiB: "
        f"{'in memory' if f['in_memory'] else 'cached on disk'})",
        f"{'phase':<22}{'images/s':>10}{'seconds':>9}{'peak RSS':>11}",
    ]
    for key in ("cache", "reuse", "stats", "encoder_batches", "read_all", "encode"):
        r = f[key]
        rate = "-" if key == "reuse" else f"{r['images_per_s']:.0f}"  # a check, not a pass
        lines.append(
            f"{key:<22}{rate:>10}{r['seconds']:>9.1f}{r['peak_rss_bytes'] / 1024**3:>9.2f} GB"
        )
    t = res["targets"]
    lines.append(
        f"peak RSS <= {PEAK_RSS_TARGET / 1024**3:.2f} GB: {'yes' if t['peak_rss'] else 'NO'} "
        f"(max {res['peak_rss_bytes'] / 1024**3:.2f} GB)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/glance-bench-stream"))
    p.add_argument("--n", type=int, default=50_000, help="training images (default 50000)")
    p.add_argument("--size", type=int, choices=(64, 128), default=128)
    p.add_argument("--jobs", type=int, default=None, help="generation worker processes")
    p.add_argument("--limit", type=int, default=None, help="use the first N images (smoke)")
    p.add_argument("--classifier-images", type=int, default=1000)
    p.add_argument("--preset", default="fast", help="preset whose encoder / batch are used")
    p.add_argument("--encoder-batches", type=int, default=200)
    p.add_argument("--encode-limit", type=int, default=None, help="rows encoded (default all)")
    p.add_argument("--budget-mib", type=int, default=None, help="override the memory budget")
    p.add_argument("--keep", action="store_true", help="keep the feature cache")
    p.add_argument("--no-phases", action="store_true", help="skip the phases (with --fit)")
    p.add_argument("--fit", default=None, help="also run a whole Glance.fit of this preset")
    p.add_argument(
        "--contexts", nargs="*", default=["pendulum_angle", "light_angle"], help="of --fit"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", type=Path, default=RESULTS / "fit_features.json")
    args = p.parse_args(argv)
    threads = fixed_threads()
    if threads:
        torch.set_num_threads(threads)
    from glance.classifiers import features as F
    from glance.data import load_dataset

    if args.budget_mib is not None:
        F.FEATURE_MEMORY_BUDGET = args.budget_mib << 20

    data = prepare(args.work, args.n, args.size, args.jobs)
    clf, trained = small_cnn(data, args.work, args.classifier_images)
    ds = load_dataset(data, "train")
    if args.limit is not None:
        ds = ds.subset(np.arange(min(args.limit, len(ds))))
    print(f"measuring {len(ds)} images ...", flush=True)
    res: dict[str, Any] = {
        "benchmark": "a fit's classifier features of 50,000 images at 128 px (issue 12)",
        "budget_bytes": F.FEATURE_MEMORY_BUDGET,
        "command": "benchmarks/bench_fit_features.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "data": str(data),
        "n_images": len(ds),
        "classifier": trained,
    }
    peaks = []
    if not args.no_phases:
        res["features"] = measure(ds, clf, args)
        phases = ("cache", "reuse", "stats", "encoder_batches", "read_all", "encode")
        peaks += [res["features"][k]["peak_rss_bytes"] for k in phases]
    if args.fit is not None:
        res["fit"] = measure_fit(ds, clf, args)
        peaks.append(res["fit"]["peak_rss_bytes"])
    res["peak_rss_bytes"] = max(peaks)
    res["targets"] = {"peak_rss": res["peak_rss_bytes"] <= PEAK_RSS_TARGET}
    res["machine"] = machine_info()
    print(table(res))
    atomic_write_json(args.out, res)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
