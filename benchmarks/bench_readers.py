"""What the context readers read: every factor moved alone in the renderer (issue 13).

``glance evaluate``'s effectiveness and specificity, the read-back loss and the calibration of
interventions all read contexts on images with a context reader (:mod:`glance.metrics.readers`):
a CNN fitted on the real training images. Those images are observational, so where two
contexts go together in them the reader may learn one from the other's evidence. This
benchmark measures each reader against the renderer itself: for held-out scenes, each factor
is moved alone (every other factor, its descendants included, held where it was; ±1 training
std inside the renderer's range; ``shape`` to each other shape with its colour kept), the scene
re-rendered and every context read again. ``slope[j][k]`` is the read change of ``k`` (in its
training std) per std of ``j`` moved (least squares through the origin): 1 on the diagonal and
0 elsewhere for a reader that reads each context from its own evidence. It checks that every
off-diagonal reading of at least ``--leak`` is a pair the reader declares it cannot tell apart
(:meth:`~glance.metrics.readers.ContextReader.read_through`), which ``evaluate`` then does not
count as cross-talk.

Usage::

    .venv/bin/python benchmarks/bench_readers.py --work /tmp/glance-readers

Prints a table and writes ``benchmarks/results/readers.json``.
"""

from __future__ import annotations

import argparse
import json
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
from bench_explain import SHAPES_BOUNDS, _support  # noqa: E402
from bench_resolution import _data as resolution_data  # noqa: E402

from glance._io import atomic_write_json  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "readers.json"
DELTAS = (-1.0, 1.0)  # training stds


def _data(task: str, work: Path, n: int, seed: int) -> Path:
    """The benchmarks' own data (bench_resolution's layout): causal shapes at 32 px as
    bench_explain explains them, the pendulum at 64 px."""
    size = 32 if task == "shapes" else 64
    return resolution_data(task, argparse.Namespace(work=work, size=size, n=n, seed=seed))


def _moves(task: str, name: str, f: dict[str, float], std: float, lo: float, hi: float):
    """The scenes of ``f`` with ``name`` alone moved, and the move in training stds."""
    from glance.data.shapes import SHAPE_CODES

    if task == "shapes" and name == "shape":
        for other in SHAPE_CODES:
            if other != int(f["shape"]):
                yield {**f, "shape": float(other)}, (other - f["shape"]) / std
        return
    for dl in DELTAS:
        v = float(np.clip(f[name] + dl * std, lo, hi))
        if abs(v - f[name]) > 1e-9:
            yield {**f, name: v}, (v - f[name]) / std


def measure(task: str, data: Path, n: int, seed: int) -> dict[str, Any]:
    """Slopes of every reader column on every factor moved alone, over ``n`` test scenes."""
    from glance.data import load_dataset
    from glance.data.pendulum import render_pendulum
    from glance.data.shapes import render_shape
    from glance.metrics.readers import fit_reader

    train, test = load_dataset(data, split="train"), load_dataset(data, split="test")
    names = list(train.attribute_names)
    t0 = time.perf_counter()
    reader = fit_reader(train, names, random_state=seed)  # as glance evaluate fits it
    fit_s = time.perf_counter() - t0
    draw = render_shape if task == "shapes" else render_pendulum
    size = train.image_shape[-1]
    table = np.asarray(train.attributes, dtype=np.float64)
    std = table.std(0)
    rows = [dict(zip(names, r, strict=True)) for r in np.asarray(test.attributes)[:n]]

    def read(scenes: list[dict[str, float]]) -> np.ndarray:
        x = np.stack([draw(s, size).transpose(2, 0, 1) for s in scenes])
        return reader.read(torch.from_numpy(x).float() / 255.0) / std

    base = read(rows)
    moved = [c for c in names if reader.readable(c) and not (task == "shapes" and c == "rotation")]
    slope: dict[str, dict[str, float]] = {}
    for name in moved:
        k = names.index(name)
        lo, hi = _support(table[:, k])
        if task == "shapes" and name in SHAPES_BOUNDS:
            lo, hi = max(lo, SHAPES_BOUNDS[name][0]), min(hi, SHAPES_BOUNDS[name][1])
        scenes, asked, which = [], [], []
        for i, f in enumerate(rows):
            for g, a in _moves(task, name, f, float(std[k]), lo, hi):
                scenes.append(g)
                asked.append(a)
                which.append(i)
        change = read(scenes) - base[which]  # [M, m] in training stds
        a = np.asarray(asked)
        slope[name] = {
            c: float(a @ change[:, j] / (a @ a)) for j, c in enumerate(names) if reader.readable(c)
        }
    tied = reader.record["tied"]
    return {
        "contexts": names,
        "heldout_r2": reader.heldout_r2,
        "readable": [c for c in names if reader.readable(c)],
        "tied": tied,
        "read_through": {c: reader.read_through(c) for c in names},
        "slope": slope,
        "n_scenes": len(rows),
        "reader_fit_s": fit_s,
    }


def _leaks(r: dict[str, Any], leak: float) -> list[dict[str, Any]]:
    """Off-diagonal readings of at least ``leak``: the moved factor, the context read, the
    slope, and whether the reader declared the pair (``read_through``)."""
    out = []
    for moved, row in r["slope"].items():
        for read, s in row.items():
            if read != moved and abs(s) >= leak:
                declared = moved in r["read_through"].get(read, [])
                out.append({"moved": moved, "read": read, "slope": s, "declared": declared})
    return sorted(out, key=lambda e: -abs(e["slope"]))


def _print(results: dict[str, Any], leak: float) -> None:
    for task, r in results["tasks"].items():
        cols = r["readable"]
        print(f"\n== {task}: read change (std) per std moved alone; rows moved, columns read ==")
        print(f"{'':>16}" + "".join(f"{c[:10]:>11}" for c in cols))
        for moved, row in r["slope"].items():
            print(f"{moved:>16}" + "".join(f"{row[c]:>11.2f}" for c in cols))
        print(f"tied in the training data: {r['tied']}")
        for e in r["leaks"]:
            tag = "declared (not counted as cross-talk)" if e["declared"] else "NOT declared"
            print(f"  {e['moved']} moved -> {e['read']} read {e['slope']:+.2f}: {tag}")
        print(f"  every reading >= {leak} declared: {r['all_leaks_declared']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="shapes,pendulum")
    ap.add_argument("--work", type=Path, default=Path("/tmp/glance-bench-readers"))
    ap.add_argument("--n", type=int, default=4000, help="scenes per dataset (80%% train)")
    ap.add_argument("--n-test", type=int, default=256, help="held-out scenes moved")
    ap.add_argument("--leak", type=float, default=0.2, help="off-diagonal slope that counts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {"settings": vars(args) | {"work": str(args.work)}, "tasks": {}}
    results["settings"]["out"] = str(args.out)
    for task in args.tasks.split(","):
        data = _data(task, args.work, args.n, args.seed)
        r = measure(task, data, args.n_test, args.seed)
        r["leaks"] = _leaks(r, args.leak)
        r["all_leaks_declared"] = all(e["declared"] for e in r["leaks"])
        results["tasks"][task] = r
    results["machine"] = machine_info()
    _print(results, args.leak)
    atomic_write_json(args.out, json.loads(json.dumps(results, default=float)))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
