"""Benchmark of glance's data area (issue 2, "must reach").

Figures:

- ``morpho``: generate causal Morpho-MNIST from all 10,000 embedded digits (all cores), then
  measure every generated digit and compare with the targets in ``*-morpho.csv``: thickness
  Pearson r (>= 0.97) and median |error| (<= 0.15 px), intensity Pearson r (>= 0.99); generation
  time (<= 180 s).
- ``measure``: morphometrics throughput on 28x28 digits (>= 64 images/s on 2 cores): median of 3
  timed runs after one warm-up run (which starts the worker processes), plus that cold first
  run and a single-process figure for reference.
- ``shapes``: time to write 10,000 causal-shapes images at 32 px (<= 60 s).

Wall-clock figures depend on what else runs on the cores, so the machine's load average is
recorded around each section, and the CPU cost of generation and measurement (items per
CPU-second of one process, from ``time.process_time``) is reported too; ``*_estimated_idle_*``
figures are that cost spread over 2 cores, an estimate, not a measurement.

Usage::

    .venv/bin/python benchmarks/bench_data.py                  # everything (~2-4 min on 2 cores)
    .venv/bin/python benchmarks/bench_data.py --sections measure

Prints a table and writes ``benchmarks/results/data.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from glance._io import atomic_write_json  # noqa: E402
from glance.data import load_embedded_digits, load_morphomnist  # noqa: E402
from glance.data._parallel import resolve_n_jobs  # noqa: E402
from glance.data.morpho_generate import generate_morphomnist  # noqa: E402
from glance.data.morphometrics import measure  # noqa: E402
from glance.data.shapes import generate_shapes  # noqa: E402

TARGETS = {
    "thickness_r": (">=", 0.97),
    "thickness_median_abs_err_px": ("<=", 0.15),
    "intensity_r": (">=", 0.99),
    "morpho_generation_s": ("<=", 180.0),
    "measure_images_per_s": (">=", 64.0),
    "shapes_generation_s": ("<=", 60.0),
}


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _cpu_rate(func, n: int) -> float:
    """Items per CPU-second of ``func()`` run in this process (unaffected by other jobs' load)."""
    start = time.process_time()
    func()
    return n / (time.process_time() - start)


def bench_morpho(n: int, tmp: Path) -> dict[str, Any]:
    from glance.data.morpho_generate import _perturb_chunk, sample_morpho_factors

    images = load_embedded_digits()[0][:500]
    targets = sample_morpho_factors(len(images), np.random.default_rng(0))
    cpu_rate = _cpu_rate(lambda: _perturb_chunk((images, targets), {}), len(images))
    load_before = _load()
    start = time.perf_counter()
    out = generate_morphomnist(tmp / "mm", n=n, seed=0)
    elapsed = time.perf_counter() - start
    load_after = _load()
    measured, target = {"thickness": [], "intensity": []}, {"thickness": [], "intensity": []}
    for split in ("train", "t10k"):
        ds = load_morphomnist(out, split)
        m = measure(ds.images[:, 0])
        for name in measured:
            measured[name].append(m[name])
            target[name].append(ds.attribute(name))
    t_m, t_t = np.concatenate(measured["thickness"]), np.concatenate(target["thickness"])
    i_m, i_t = np.concatenate(measured["intensity"]), np.concatenate(target["intensity"])
    return {
        "morpho_n_images": int(len(t_m)),
        "morpho_generation_s": round(elapsed, 1),
        "thickness_r": round(float(np.corrcoef(t_m, t_t)[0, 1]), 4),
        "thickness_median_abs_err_px": round(float(np.median(np.abs(t_m - t_t))), 4),
        "thickness_p90_abs_err_px": round(float(np.percentile(np.abs(t_m - t_t), 90)), 4),
        "intensity_r": round(float(np.corrcoef(i_m, i_t)[0, 1]), 5),
        "intensity_median_abs_err": round(float(np.median(np.abs(i_m - i_t))), 3),
        "morpho_load_before_after": [load_before, load_after],
        "morpho_digits_per_cpu_s": round(cpu_rate, 1),
        "morpho_estimated_idle_2core_s": round(n / (2 * cpu_rate), 1),
    }


def bench_measure(n: int) -> dict[str, Any]:
    images = load_embedded_digits()[0][:n]
    load_before = _load()
    start = time.perf_counter()
    measure(images)  # warm-up: starts the worker processes
    cold = n / (time.perf_counter() - start)
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        measure(images)
        rates.append(n / (time.perf_counter() - start))
    single_n = min(n, 500)
    start = time.perf_counter()
    cpu_rate = _cpu_rate(lambda: measure(images[:single_n], n_jobs=1), single_n)
    single = single_n / (time.perf_counter() - start)
    return {
        "measure_n_images": n,
        "measure_images_per_s": round(statistics.median(rates), 1),
        "measure_runs_images_per_s": [round(r, 1) for r in rates],
        "measure_cold_first_run_images_per_s": round(cold, 1),
        "measure_single_process_images_per_s": round(single, 1),
        "measure_images_per_cpu_s": round(cpu_rate, 1),
        "measure_load_before_after": [load_before, _load()],
    }


def bench_shapes(n: int, tmp: Path) -> dict[str, Any]:
    load_before = _load()
    start = time.perf_counter()
    generate_shapes(tmp / "shapes", n=n, size=32, seed=0)
    elapsed = time.perf_counter() - start
    return {
        "shapes_n_images": n,
        "shapes_generation_s": round(elapsed, 1),
        "shapes_load_before_after": [load_before, _load()],
    }


def _verdict(name: str, value: float) -> str:
    if name not in TARGETS:
        return ""
    op, bound = TARGETS[name]
    ok = value >= bound if op == ">=" else value <= bound
    return f"{op} {bound:g}  {'PASS' if ok else 'FAIL'}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sections", nargs="+", default=["morpho", "measure", "shapes"],
        choices=["morpho", "measure", "shapes"],
    )  # fmt: skip
    parser.add_argument("--n-digits", type=int, default=10_000)
    parser.add_argument("--n-measure", type=int, default=2_000)
    parser.add_argument("--n-shapes", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "data.json")
    args = parser.parse_args()

    results: dict[str, Any] = {
        "machine": {
            "cores_available": resolve_n_jobs(None),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "command": " ".join([".venv/bin/python", "benchmarks/bench_data.py", *sys.argv[1:]]),
        "targets": {k: f"{op} {v:g}" for k, (op, v) in TARGETS.items()},
    }
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        if "measure" in args.sections:
            results.update(bench_measure(args.n_measure))
        if "morpho" in args.sections:
            results.update(bench_morpho(args.n_digits, Path(tmp)))
        if "shapes" in args.sections:
            results.update(bench_shapes(args.n_shapes, Path(tmp)))

    print(f"{'figure':40s} {'value':>14s}  target")
    for key, value in results.items():
        if key in ("machine", "targets"):
            continue
        shown = value if not isinstance(value, float) else f"{value:.4g}"
        verdict = _verdict(key, value) if isinstance(value, (int, float)) else ""
        print(f"{key:40s} {shown!s:>14s}  {verdict}")
    print(f"machine: {results['machine']}")
    atomic_write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
