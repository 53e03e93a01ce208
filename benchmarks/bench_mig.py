"""What MIG can reach on the embedded Morpho-MNIST: ideal codes at each alignment (issue 13).

MIG (Chen et al., 2018) gives each context the gap between its best and second-best code, in
units of the context's entropy. On the embedded Morpho-MNIST thickness causes intensity (their
correlation is about 0.9), so the intensity code is a strong runner-up for thickness and the
other way round, whatever the twin does. This benchmark measures that ceiling with
:func:`glance.metrics.disentanglement.mig_reference`: codes that are each context plus
independent noise at a given squared correlation (1 = a perfect code), every other code pure
noise, as many codes as the fast and default presets have (2 aligned + 8 free). Beside them, the
MIG the presets measured (``benchmarks/results/surrogate.json``) and the reference at the
alignment R² measured there.

Usage::

    .venv/bin/python benchmarks/bench_mig.py [--work DIR] [--data MORPHO_DIR ...]

Prints a table and writes ``benchmarks/results/mig.json``. A ``--data`` directory (Morpho-MNIST
format with thickness and intensity) replaces the embedded data, e.g. one generated with
``glance data morpho-mnist --independent``; ``--embedded DIR`` names the ``--data`` directory
that holds the embedded recipe (the presets' measured MIG applies to it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_info  # noqa: E402

from glance._io import atomic_write_json  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "mig.json"
CONTEXTS = ("thickness", "intensity")
GRID = (1.0, 0.999, 0.995, 0.99, 0.98, 0.97, 0.95, 0.93)
N_CODES = 10  # 2 aligned + 8 free dims: the fast and default presets


def _factors(data: Path, n: int) -> np.ndarray:
    """``n`` rows of the contexts (only the values are needed, not the images): MIG's estimate
    depends on the number of images, so ``n`` matches the evaluation it is compared with."""
    from glance.data import load_dataset

    ds = load_dataset(data, split="train")
    f = np.stack([ds.attribute(c) for c in CONTEXTS], axis=1).astype(np.float64)
    return f[np.random.default_rng(0).permutation(len(f))[:n]]


def measure(data: Path, n: int, seeds: int, presets: bool) -> dict[str, Any]:
    from glance.metrics.disentanglement import mig_reference

    f = _factors(data, n)
    ok = np.all(np.isfinite(f), axis=1)
    out: dict[str, Any] = {
        "data": str(data),
        "n_images": int(len(f)),
        "correlation": float(np.corrcoef(f[ok].T)[0, 1]),
        "reference": {},
    }
    for r in GRID:
        vals = [mig_reference(f, [r, r], N_CODES, random_state=s) for s in range(seeds)]
        out["reference"][str(r)] = {"median": float(np.median(vals)), "values": vals}
    surrogate = ROOT / "benchmarks" / "results" / "surrogate.json"
    if presets and surrogate.is_file():
        presets = json.loads(surrogate.read_text()).get("results", {})
        out["presets"] = {}
        for name, res in presets.items():
            r2 = [res["alignment_r2"][c] for c in CONTEXTS]
            vals = [mig_reference(f, r2, N_CODES, random_state=s) for s in range(seeds)]
            out["presets"][name] = {
                "mig_measured": res.get("mig"),
                "alignment_r2": dict(zip(CONTEXTS, r2, strict=True)),
                "reference_at_that_alignment": float(np.median(vals)),
            }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT / ".cache")
    ap.add_argument("--data", type=Path, nargs="*", help="Morpho-MNIST directories")
    ap.add_argument("--seeds", type=int, default=5, help="noise seeds per reference")
    ap.add_argument(
        "--n-images", type=int, default=5000, help="images (the default preset's eval_images)"
    )
    ap.add_argument(
        "--embedded",
        type=Path,
        help="which --data directory holds the embedded recipe (generate_morphomnist, seed 0), "
        "so that surrogate.json's measured MIG applies to it",
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    datasets = args.data
    if not datasets:
        from bench_surrogate import prepare

        datasets = [prepare(args.work)[0]]
    result = {
        "benchmark": "MIG ceiling (bench_mig.py)",
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "machine": machine_info(),
        "n_codes": N_CODES,
        "datasets": [
            measure(d, args.n_images, args.seeds, not args.data or d == args.embedded)
            for d in datasets
        ],
    }
    for d in result["datasets"]:
        print(f"{d['data']}: {d['n_images']} images, corr(thickness, intensity) "
              f"{d['correlation']:.3f}")  # fmt: skip
        print("  squared correlation of each code -> MIG of ideal codes (median of seeds)")
        for r, v in d["reference"].items():
            print(f"  {float(r):6.3f}  {v['median']:.3f}")
        for name, p in d.get("presets", {}).items():
            r2 = ", ".join(f"{c} {v:.3f}" for c, v in p["alignment_r2"].items())
            print(f"  {name}: measured MIG {p['mig_measured']:.3f}; ideal codes at R² ({r2}): "
                  f"{p['reference_at_that_alignment']:.3f}")  # fmt: skip
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
