"""Streaming at scale (issue 12): a folder of >= 50,000 images at 128 px, decoded from disk.

Targets: the images stream with bounded memory (peak RSS of the process <= 2 GB) and decode at
least as fast as training consumes them. Measured on the training split of a pendulum dataset
(``glance data pendulum --size 128``, PNG, generated once and cached under ``--work``):

- ``open``: building the streaming :class:`~glance.data.ImageFolderDataset` through
  :func:`glance.data.load_dataset` (the CSV is read, every file's header checked);
- ``random``: random batches of 32 through ``dataset.load_images(idx)``, the call the generator
  stage makes every step (``Trainer._generator_step``), indices from a shuffled permutation;
- ``sequential``: one full pass in batches of 256 in file order, as ``Glance.fit`` computes the
  classifier's features (``glance.classifiers.features.classifier_outputs``: batches of 256 up to
  64 px, 64 at 128 px; ``cache_features`` on its own uses batches of 500).

Peak RSS is the process's ``VmHWM`` (``/proc/self/status``), reset before each phase through
``/proc/self/clear_refs`` so each phase reports its own peak; it includes the ~0.5 GB that
importing torch maps. The consumption rate compared against is the fastest *measured* generator
training throughput in ``benchmarks/results/`` (``generator_throughput.json``, the whole
generator stage in ``surrogate.json``, and any GPU figure of ``gpu_check.json``), each named in
the output with its source; none of them was measured at 128 px, and at 128 px the same
networks consume fewer images per second, so the comparison errs on the strict side.

Not part of the data layer, but the memory a fit at this scale needs: ``Glance.fit`` holds the
classifier's features of every training image in memory (``TrainData.features``) only up to
``glance.classifiers.features.FEATURE_MEMORY_BUDGET`` (1 GiB) and caches them on disk above it;
the projected size for small-cnn at this size, and what the fit holds of it in memory, are
reported beside the target. ``bench_fit_features.py`` measures that fit phase itself.

Usage::

    GLANCE_THREADS=1 .venv/bin/python benchmarks/bench_streaming.py --jobs 1

Generating the 62,500 images (50,000 in ``train``) takes about 2 minutes on one core, once.
Prints a table and writes ``benchmarks/results/streaming.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from glance._io import atomic_write_json  # noqa: E402
from glance.threads import fixed_threads  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PEAK_RSS_TARGET = 2 * 1024**3
GENERATOR_BATCH = 32  # TrainConfig.generator_batch of every preset
FEATURE_BATCH = 256  # glance.classifiers.features.FEATURE_BATCH (the batch up to 64 px)


# ------------------------------------------------------------------------------------- memory
def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset the process's peak RSS (``VmHWM``) to its current RSS; False where impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int:
    """Peak RSS since the last :func:`reset_peak` (or of the process, without ``/proc``)."""
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return hwm * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --------------------------------------------------------------------------------------- data
def prepare(work: Path, n_train: int, size: int, jobs: int | None) -> Path:
    """The cached pendulum dataset with ``n_train`` training images (generated once)."""
    from glance.data.pendulum import TRAIN_FRACTION, generate_pendulum

    n_total = math.ceil(n_train / TRAIN_FRACTION)
    path = work / f"pendulum-{size}-n{n_total}-s0"
    if not (path / "MANIFEST.json").is_file():
        print(f"generating {n_total} pendulum images at {size} px into {path} ...", flush=True)
        t = time.perf_counter()
        generate_pendulum(path, n=n_total, size=size, seed=0, n_jobs=jobs, progress=True)
        print(f"generated in {time.perf_counter() - t:.0f} s", flush=True)
    return path


def measure_open(path: Path) -> tuple[Any, dict[str, Any]]:
    from glance.data import load_dataset

    reset_peak()
    t = time.perf_counter()
    ds = load_dataset(path, "train")
    dt = time.perf_counter() - t
    return ds, {
        "seconds": dt,
        "n_images": len(ds),
        "image_shape": list(ds.image_shape),
        "dataset_class": type(ds).__name__,
        "peak_rss_bytes": peak_rss_bytes(),
    }


def measure_random(ds: Any, n_batches: int, seed: int = 0) -> dict[str, Any]:
    """Random batches of 32 as the generator stage loads them (a shuffled permutation)."""
    perm = np.random.default_rng(seed).permutation(len(ds))
    ds.load_images(perm[:GENERATOR_BATCH])  # first file-system touches outside the timing
    reset_peak()
    times = []
    for b in range(1, n_batches + 1):
        idx = perm[np.arange(b * GENERATOR_BATCH, (b + 1) * GENERATOR_BATCH) % len(perm)]
        t = time.perf_counter()
        ds.load_images(idx)
        times.append(time.perf_counter() - t)
    total = float(np.sum(times))
    return {
        "batches": n_batches,
        "batch": GENERATOR_BATCH,
        "images_per_s": n_batches * GENERATOR_BATCH / total,
        "ms_per_batch_median": 1e3 * float(np.median(times)),
        "ms_per_batch_p95": 1e3 * float(np.percentile(times, 95)),
        "peak_rss_bytes": peak_rss_bytes(),
    }


def measure_sequential(ds: Any, limit: int | None = None) -> dict[str, Any]:
    """One pass over the images in file order, in batches of 256 (feature caching)."""
    n = len(ds) if limit is None else min(limit, len(ds))
    reset_peak()
    t, cpu = time.perf_counter(), time.process_time()
    checksum = 0.0
    for start in range(0, n, FEATURE_BATCH):
        images = ds.load_images(np.arange(start, min(start + FEATURE_BATCH, n)))
        checksum += float(images[:, :, ::32, ::32].sum())  # use the data
    dt, dcpu = time.perf_counter() - t, time.process_time() - cpu
    return {
        "images": n,
        "batch": FEATURE_BATCH,
        "seconds": dt,
        "images_per_s": n / dt,
        "images_per_cpu_s": n / dcpu if dcpu > 0 else None,
        "peak_rss_bytes": peak_rss_bytes(),
        "checksum": checksum,
    }


# -------------------------------------------------------------------------------- consumption
def measured_consumption() -> list[dict[str, Any]]:
    """Every measured generator-training throughput in benchmarks/results, with its source."""
    rows: list[dict[str, Any]] = []
    path = RESULTS / "generator_throughput.json"
    if path.is_file():
        for key, r in json.loads(path.read_text()).get("runs", {}).items():
            rows.append(
                {
                    "source": f"{path.name} runs[{key!r}]",
                    "what": "G forward+backward only (square loss), Morpho-MNIST 28 px, CPU, "
                    f"{r.get('torch_threads')} thread(s), batch {r.get('batch')}",
                    "images_per_s": r["images_per_s_median"],
                }
            )
    path = RESULTS / "surrogate.json"
    if path.is_file():
        for name, r in json.loads(path.read_text()).get("results", {}).items():
            if r.get("generator_stage_images_per_s"):
                rows.append(
                    {
                        "source": f"{path.name} results[{name!r}].generator_stage_images_per_s",
                        "what": "whole generator stage (G, D, classifier, encoder; the real "
                        "losses), Morpho-MNIST 28 px, CPU, 1 thread",
                        "images_per_s": r["generator_stage_images_per_s"],
                    }
                )
    path = RESULTS / "gpu_check.json"
    if path.is_file():
        doc = json.loads(path.read_text())
        if doc.get("device", {}).get("type") == "cuda":
            for row in doc.get("throughput", {}).get("rows", []):
                if row.get("images_per_s"):
                    rows.append(
                        {
                            "source": f"{path.name} throughput {row.get('label')}",
                            "what": f"generator step (G+D, real losses) on "
                            f"{doc['device'].get('name')}, {row.get('resolution')} px",
                            "images_per_s": row["images_per_s"],
                        }
                    )
    return rows


def feature_memory(size: int, n_images: int) -> dict[str, Any]:
    """Bytes of small-cnn features that ``Glance.fit`` would hold for ``n_images`` images."""
    from glance.classifiers import ClassifierAdapter
    from glance.classifiers.architectures import build_classifier
    from glance.classifiers.features import FEATURE_MEMORY_BUDGET

    net = build_classifier("small-cnn", 2, 3, (size, size)).eval()
    shape = ClassifierAdapter(net, in_channels=3, input_size=size).feature_shape
    per_image = 4 * int(np.prod(shape))
    total = per_image * n_images
    return {
        "classifier": "small-cnn",
        "feature_shape": list(shape),
        "bytes_per_image": per_image,
        "bytes_total": total,
        "budget_bytes": FEATURE_MEMORY_BUDGET,
        "bytes_in_memory": total if total <= FEATURE_MEMORY_BUDGET else 0,
        "where": "glance.classifiers.features.classifier_outputs -> TrainData.features: a tensor "
        "up to the budget, else a feature cache on disk read by rows (bench_fit_features.py)",
    }


# ------------------------------------------------------------------------------------- report
def _gb(b: float) -> str:
    return f"{b / 1024**3:.2f} GB"


def table(res: dict[str, Any]) -> str:
    o, r, s, c = res["open"], res["random"], res["sequential"], res["consumption"]
    lines = [
        f"dataset: {res['data']} ({o['n_images']} images, {o['image_shape']})",
        f"{'phase':<34}{'images/s':>10}{'peak RSS':>11}  notes",
        f"{'open (load_dataset)':<34}{'':>10}{_gb(o['peak_rss_bytes']):>11}  {o['seconds']:.1f} s",
        f"{'random batches of 32 (G stage)':<34}{r['images_per_s']:>10.0f}"
        f"{_gb(r['peak_rss_bytes']):>11}  median {r['ms_per_batch_median']:.1f} ms/batch, "
        f"p95 {r['ms_per_batch_p95']:.1f}",
        f"{'sequential pass, batches of 256':<34}{s['images_per_s']:>10.0f}"
        f"{_gb(s['peak_rss_bytes']):>11}  {s['images']} images in {s['seconds']:.1f} s",
    ]
    if c["fastest"] is not None:
        f = c["fastest"]
        lines.append(
            f"consumption (fastest measured): {f['images_per_s']:.0f} images/s: {f['source']}"
        )
    t = res["targets"]
    lines += [
        f"peak RSS <= {_gb(PEAK_RSS_TARGET)}: {'yes' if t['peak_rss'] else 'NO'} "
        f"(max {_gb(res['peak_rss_bytes'])})",
        f"decode >= consumption: {'yes' if t['decode_keeps_up'] else 'NO'} "
        f"(random {r['images_per_s']:.0f}, sequential {s['images_per_s']:.0f} images/s)",
        f"Glance.fit features (small-cnn, not the data layer): "
        f"{_gb(res['fit_feature_memory']['bytes_total'])} for {o['n_images']} images, "
        f"{_gb(res['fit_feature_memory']['bytes_in_memory'])} of them in memory "
        f"({'within' if t['fit_feature_memory'] else 'OVER'} the 2 GB bound)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/glance-bench-stream"))
    p.add_argument("--n", type=int, default=50_000, help="training images (default 50000)")
    p.add_argument("--size", type=int, choices=(64, 128), default=128)
    p.add_argument("--jobs", type=int, default=None, help="generation worker processes")
    p.add_argument("--batches", type=int, default=300, help="random batches of 32 timed")
    p.add_argument("--sequential-limit", type=int, default=None, help="images of the pass")
    p.add_argument("--out", type=Path, default=RESULTS / "streaming.json")
    args = p.parse_args(argv)
    threads = fixed_threads()
    if threads:
        torch.set_num_threads(threads)
    args.work.mkdir(parents=True, exist_ok=True)
    data = prepare(args.work, args.n, args.size, args.jobs)
    base_rss = _status_kib("VmRSS")
    ds, opened = measure_open(data)
    res: dict[str, Any] = {
        "benchmark": "streaming a >= 50,000-image folder at 128 px (issue 12)",
        "command": "benchmarks/bench_streaming.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "data": str(data),
        "rss_after_imports_bytes": None if base_rss is None else base_rss * 1024,
        "open": opened,
        "random": measure_random(ds, args.batches),
        "sequential": measure_sequential(ds, args.sequential_limit),
    }
    rows = measured_consumption()
    res["consumption"] = {
        "rows": rows,
        "fastest": max(rows, key=lambda r: r["images_per_s"]) if rows else None,
        "note": "measured at 28 px (CPU) unless the row says otherwise; at 128 px the same "
        "networks consume fewer images per second, so these are upper bounds",
    }
    res["fit_feature_memory"] = feature_memory(args.size, len(ds))
    peak = max(res[k]["peak_rss_bytes"] for k in ("open", "random", "sequential"))
    need = res["consumption"]["fastest"]["images_per_s"] if rows else float("nan")
    res["peak_rss_bytes"] = peak
    res["targets"] = {
        "peak_rss": peak <= PEAK_RSS_TARGET,
        "decode_keeps_up": bool(
            min(res["random"]["images_per_s"], res["sequential"]["images_per_s"]) >= need
        ),
        "fit_feature_memory": res["fit_feature_memory"]["bytes_in_memory"] <= PEAK_RSS_TARGET,
    }
    res["machine"] = machine_info()
    print(table(res))
    atomic_write_json(args.out, res)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
