"""Benchmark of glance's causal graph and SCM (issue 5, "must reach").

Sections:

- ``morpho``: samples of the Deep-SCM Morpho-MNIST factors (DESIGN §3.1, drawn with
  ``glance.data.morpho_generate.sample_morpho_factors``) plus independent noise "concepts" and a
  classifier-like output that depends on thickness and one concept. 20 bootstrap resamples:
  thickness-intensity present in >= 18/20 with a positive effect, oriented intensity -> thickness
  in <= 2/20; with the knowledge "thickness before intensity" oriented thickness -> intensity in
  >= 18/20 (at ``--n`` samples and again at 60,000, the size of the real training split).
  Slant variant (slant drawn independently): no edge between slant and thickness or
  intensity in >= 18/20 (counted per resample).
- ``shapes``: the causal-shapes SCM of ``glance.data.shapes`` (8 factors, label = size rule) with
  a classifier logit monotone in size, and a harder nonlinear variant with v-structures
  (8 factors, label rule on two root factors): SHD <= 1 against the true CPDAG on the factors and
  every label-rule factor a parent of the output.
- ``speed``: a random sparse linear-Gaussian DAG of 30 nodes x 10,000 samples: PC + linear SCM fit
  <= 10 s; a bootstrap of 20 resamples on 2 worker processes <= 60 s.
- ``kci`` (on request): morpho with PC + KCI on 400-row subsamples.
- ``e2e`` (on request): the real pipeline on causal-shapes images (``glance data shapes``,
  ``train-classifier``, ``fit --preset tiny``, ``glance graph``), scored with
  ``glance.metrics.graph.truth_scores`` against the generator's ``truth.json``.
- ``determinism``: the same seed gives byte-identical graph JSON (written by
  ``glance._io.atomic_write_json``), serial and parallel.

Usage::

    .venv/bin/python benchmarks/bench_causal.py            # everything (~1-3 min on 2 cores)
    .venv/bin/python benchmarks/bench_causal.py --sections morpho speed
    .venv/bin/python benchmarks/bench_causal.py --sections kci     # PC + KCI (slow)
    .venv/bin/python benchmarks/bench_causal.py --sections e2e     # real pipeline (~5 min)

Prints a table and writes ``benchmarks/results/causal.json``.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from glance._io import atomic_write_json  # noqa: E402
from glance.causal import (  # noqa: E402
    BackgroundKnowledge,
    DiscoveryOptions,
    StructuralCausalModel,
    bootstrap_discover,
    discover,
)
from glance.causal.options import DATA_CI_TESTS  # noqa: E402
from glance.metrics.graph import graph_scores  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "causal.json"
ROWS: list[dict[str, Any]] = []


#: Discovery options every section but kci passes (``--ci-test``); empty: the library's defaults.
OPTS: dict[str, Any] = {}


def record(section: str, name: str, value: Any, target: str, ok: bool | None) -> None:
    ROWS.append({"section": section, "metric": name, "value": value, "target": target, "pass": ok})


def _freq(graph: Any, a: str, b: str) -> dict[str, float]:
    """Presence and orientation frequencies of the pair (a, b) from the bootstrap table."""
    for row in graph.meta["bootstrap"]["edge_frequencies"]:
        if (row["source"], row["target"]) == (a, b):
            return {
                "presence": row["presence"],
                "a_to_b": row["forward"],
                "b_to_a": row["backward"],
            }
        if (row["source"], row["target"]) == (b, a):
            return {
                "presence": row["presence"],
                "a_to_b": row["backward"],
                "b_to_a": row["forward"],
            }
    return {"presence": 0.0, "a_to_b": 0.0, "b_to_a": 0.0}


# ---------------------------------------------------------------------------------- morpho
def morpho_data(n: int, seed: int, *, slant: bool, n_noise: int = 4):
    from glance.data.morpho_generate import sample_morpho_factors

    rng = np.random.default_rng(seed)
    f = sample_morpho_factors(n, rng, slant=slant)
    names = ["thickness", "intensity"] + (["slant"] if slant else [])
    cols = [f[k] for k in names]
    for k in range(n_noise):
        cols.append(rng.normal(size=n))
        names.append(f"concept_{k}")
    # A classifier-like output: a logit rising with thickness and falling with concept_0.
    z = (f["thickness"] - f["thickness"].mean()) / f["thickness"].std()
    cols.append(1.5 * z - 1.0 * cols[names.index("concept_0")] + 0.5 * rng.normal(size=n))
    names.append("output_thick")
    return np.column_stack(cols), names


def _per_resample_slant_free(x, names, seed, n_resamples, n_jobs) -> int:
    """Resamples with no slant-thickness and no slant-intensity edge (joint, per resample)."""
    from glance.causal._checks import check_discovery_data
    from glance.causal.bootstrap import _one_resample

    rk = BackgroundKnowledge().resolve(names, [_kind(n) for n in names])
    seeds = np.random.SeedSequence(seed).spawn(n_resamples)
    kw = DiscoveryOptions(**OPTS)  # what bootstrap_discover uses
    x = check_discovery_data(x, names)
    from joblib import Parallel, delayed

    res = Parallel(n_jobs=n_jobs)(delayed(_one_resample)(x, names, rk, s, kw) for s in seeds)
    s, t, i = names.index("slant"), names.index("thickness"), names.index("intensity")
    free = 0
    for directed, undirected in res:
        pairs = {frozenset(e) for e in directed + undirected}
        free += frozenset((s, t)) not in pairs and frozenset((s, i)) not in pairs
    return free


def _kind(name: str) -> str:
    from glance.causal.graph import infer_kind

    return infer_kind(name)


def bench_morpho(n: int, n_jobs: int, tag: str = "morpho") -> None:
    b = 20
    sec = tag  # section name in the table
    x, names = morpho_data(n, seed=0, slant=False)
    g = bootstrap_discover(x, names, n_resamples=b, random_state=0, n_jobs=n_jobs, **OPTS)
    f = _freq(g, "thickness", "intensity")
    e = g.edge("thickness", "intensity")
    record(
        sec,
        "thickness-intensity present (of 20)",
        round(f["presence"] * b),
        ">= 18",
        f["presence"] * b >= 18,
    )
    record(
        sec,
        "thickness-intensity effect sign",
        None if e is None else round(e.effect, 3),
        "> 0",
        e is not None and e.effect > 0,
    )
    record(
        sec,
        "oriented intensity->thickness (of 20)",
        round(f["b_to_a"] * b),
        "<= 2",
        f["b_to_a"] * b <= 2,
    )
    record(
        sec,
        "oriented thickness->intensity without knowledge (of 20)",
        round(f["a_to_b"] * b),
        "(info)",
        None,
    )
    bk = BackgroundKnowledge().order("thickness", "intensity")
    gk = bootstrap_discover(
        x, names, n_resamples=b, random_state=0, n_jobs=n_jobs, knowledge=bk, **OPTS
    )
    fk = _freq(gk, "thickness", "intensity")
    record(
        sec,
        "with knowledge: oriented thickness->intensity (of 20)",
        round(fk["a_to_b"] * b),
        ">= 18",
        fk["a_to_b"] * b >= 18,
    )
    out_parents = g.parents("output_thick")
    record(
        sec,
        "output parents",
        out_parents,
        "thickness, concept_0",
        set(out_parents) == {"thickness", "concept_0"},
    )
    xs, names_s = morpho_data(n, seed=1, slant=True)
    free = _per_resample_slant_free(xs, names_s, 0, b, n_jobs)
    record(sec, "slant variant: resamples with no slant edge (of 20)", free, ">= 18", free >= 18)


# ---------------------------------------------------------------------------------- shapes
def shapes_plain(n: int, seed: int):
    from glance.data.shapes import _EDGES, SHAPES_FACTORS, SIZE_THRESHOLD, sample_shape_factors

    rng = np.random.default_rng(seed)
    f = sample_shape_factors(n, rng)
    names = list(SHAPES_FACTORS)
    # A trained "large vs small" classifier: a saturating logit of the size margin.
    logit = 3.0 * np.tanh(25.0 * (f["size"] - SIZE_THRESHOLD)) + 0.3 * rng.normal(size=n)
    x = np.column_stack([f[k] for k in names] + [logit])
    truth = [(a, b) for a, b in _EDGES if b != "label"] + [("size", "output_large")]
    return x, names + ["output_large"], truth, ["size"]


def shapes_hard(n: int, seed: int):
    """8 factors, nonlinear mechanisms, two v-structures; label rule on pos_x and rotation."""
    rng = np.random.default_rng(seed)
    shape = rng.integers(0, 3, n).astype(float)
    size = rng.uniform(0.25, 0.6, n)
    pos_x, pos_y = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    rotation = rng.uniform(0, 360, n)
    background = rng.uniform(0, 0.3, n)
    hue = np.array([0.12, 0.42, 0.72])[shape.astype(int)] + 0.05 * rng.normal(size=n)
    brightness = np.sqrt(size) - 0.15 * pos_y + 0.5 * background + 0.05 * rng.normal(size=n)
    contrast = np.tanh(3 * (brightness - 0.6)) + 0.8 * hue + 0.1 * rng.normal(size=n)
    logit = 2.5 * pos_x - 1.5 * np.cos(np.deg2rad(rotation) / 2) + 0.3 * rng.normal(size=n)
    names = [
        "shape",
        "size",
        "pos_x",
        "pos_y",
        "rotation",
        "background",
        "hue",
        "brightness",
        "contrast",
        "output_label",
    ]
    x = np.column_stack(
        [shape, size, pos_x, pos_y, rotation, background, hue, brightness, contrast, logit]
    )
    truth = [
        ("shape", "hue"),
        ("size", "brightness"),
        ("pos_y", "brightness"),
        ("background", "brightness"),
        ("brightness", "contrast"),
        ("hue", "contrast"),
        ("pos_x", "output_label"),
        ("rotation", "output_label"),
    ]
    return x, names, truth, ["pos_x", "rotation"]


def bench_shapes(n: int) -> None:
    for label, make in (
        ("plain (glance.data.shapes SCM)", shapes_plain),
        ("nonlinear with v-structures", shapes_hard),
    ):
        x, names, truth, rule = make(n, seed=0)
        g = discover(x, names, **OPTS)
        factors = [v for v in names if not v.startswith("output_")]
        s = graph_scores(g, {"nodes": names, "edges": truth}, nodes=factors)
        out = [v for v in names if v.startswith("output_")][0]
        record("shapes", f"{label}: SHD on factors", s["shd"], "<= 1", s["shd"] <= 1)
        record(
            "shapes",
            f"{label}: edge F1 / orientation acc.",
            [round(s["f1"], 3), round(s["orientation_accuracy"], 3)],
            "(info)",
            None,
        )
        parents = g.parents(out)
        record(
            "shapes",
            f"{label}: output parents",
            parents,
            f"include {rule}",
            set(rule) <= set(parents),
        )


# ---------------------------------------------------------------------------------- speed
def random_linear_dag(p: int, n: int, seed: int, degree: float = 2.0):
    rng = np.random.default_rng(seed)
    order = rng.permutation(p)
    prob = degree / (p - 1)
    edges, x = [], np.zeros((n, p))
    for k, j in enumerate(order):
        x[:, j] = rng.normal(size=n)
        for i in order[:k]:
            if rng.random() < prob:
                w = rng.choice([-1, 1]) * rng.uniform(0.5, 1.2)
                x[:, j] += w * x[:, i]
                edges.append((f"x{i}", f"x{j}"))
        x[:, j] /= x[:, j].std()  # keep variances comparable (no varsortability shortcut)
    return x, [f"x{i}" for i in range(p)], edges


def bench_speed(n_jobs: int) -> None:
    x, names, truth = random_linear_dag(30, 10_000, seed=0)
    discover(x[:200, :5], names[:5])  # warm-up: imports are timed apart (cold start row)
    t0 = time.perf_counter()
    g = discover(x, names, **OPTS)
    t1 = time.perf_counter()
    StructuralCausalModel(g).fit(x)
    t2 = time.perf_counter()
    s = graph_scores(g, {"nodes": names, "edges": truth})
    record("speed", "30 nodes x 10k: PC (s)", round(t1 - t0, 2), "(info)", None)
    record("speed", "30 nodes x 10k: PC + SCM fit (s)", round(t2 - t0, 2), "<= 10", t2 - t0 <= 10)
    record(
        "speed", "30 nodes x 10k: SHD vs true CPDAG / edges", [s["shd"], len(truth)], "(info)", None
    )
    t0 = time.perf_counter()
    StructuralCausalModel(g, mechanism="mlp").fit(x)
    record(
        "speed",
        "30 nodes x 10k: SCM fit, mlp mechanism (s)",
        round(time.perf_counter() - t0, 2),
        "(info)",
        None,
    )
    t0 = time.perf_counter()
    gg = discover(x, names, method="ges")
    record(
        "speed",
        "30 nodes x 10k: GES (s) / SHD",
        [
            round(time.perf_counter() - t0, 2),
            graph_scores(gg, {"nodes": names, "edges": truth})["shd"],
        ],
        "(info)",
        None,
    )
    record(
        "speed",
        "cold start: import glance + causal-learn, first PC (s)",
        _cold_start(),
        "(info)",
        None,
    )
    t0 = time.perf_counter()
    gb = bootstrap_discover(x, names, n_resamples=20, random_state=0, n_jobs=n_jobs, **OPTS)
    t1 = time.perf_counter()
    record(
        "speed",
        f"30 nodes x 10k: bootstrap of 20, n_jobs={n_jobs} (s)",
        round(t1 - t0, 2),
        "<= 60",
        t1 - t0 <= 60,
    )
    import glance.causal.bootstrap as bootstrap_module

    saved = bootstrap_module.PARALLEL_MIN_SECONDS
    bootstrap_module.PARALLEL_MIN_SECONDS = 0.0  # force worker processes, startup included
    try:
        t0 = time.perf_counter()
        bootstrap_discover(x, names, n_resamples=20, random_state=0, n_jobs=n_jobs)
        record(
            "speed",
            f"  same, forced onto {n_jobs} worker processes (s)",
            round(time.perf_counter() - t0, 2),
            "(info)",
            None,
        )
    finally:
        bootstrap_module.PARALLEL_MIN_SECONDS = saved
    record(
        "speed",
        "bootstrap graph SHD",
        graph_scores(gb, {"nodes": names, "edges": truth})["shd"],
        "(info)",
        None,
    )


def _cold_start() -> float:
    """Wall time of a fresh interpreter importing glance and running PC on 30 x 10k."""
    import subprocess

    code = (
        "import sys, time; t = time.perf_counter(); sys.path.insert(0, 'benchmarks'); "
        "from bench_causal import random_linear_dag; from glance.causal import discover; "
        "x, n, _ = random_linear_dag(30, 10_000, 0); discover(x, n); "
        "print(time.perf_counter() - t)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return round(float(out.stdout.strip().splitlines()[-1]), 2)


# ---------------------------------------------------------------------------------- kci
def bench_kci(n: int, n_jobs: int) -> None:
    """Morpho with PC + KCI (kernel CI test on 400-row subsamples), 20 bootstraps."""
    b = 20
    x, names = morpho_data(n, seed=0, slant=False, n_noise=2)
    t0 = time.perf_counter()
    g = bootstrap_discover(
        x, names, n_resamples=b, random_state=0, n_jobs=n_jobs, ci_test="kci", kci_subsample=400
    )
    f = _freq(g, "thickness", "intensity")
    record(
        "kci",
        "KCI: thickness-intensity present (of 20)",
        round(f["presence"] * b),
        ">= 18",
        f["presence"] * b >= 18,
    )
    record(
        "kci",
        "KCI: oriented intensity->thickness (of 20)",
        round(f["b_to_a"] * b),
        "<= 2",
        f["b_to_a"] * b <= 2,
    )
    record(
        "kci",
        "KCI: output parents / time (s)",
        [g.parents("output_thick"), round(time.perf_counter() - t0, 1)],
        "(info)",
        None,
    )


# ---------------------------------------------------------------------------------- e2e
def bench_e2e(n: int, n_jobs: int) -> None:
    """The real pipeline through the CLI: causal shapes images -> trained classifier -> GLANCE
    fit (tiny preset, all 8 factors as contexts) -> ``glance graph`` -> scores against the
    generator's truth.json."""
    import json
    import subprocess

    glance_cli = [sys.executable, "-m", "glance.cli.main", "-q"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        steps = [
            [
                "data",
                "shapes",
                "--out",
                str(work / "data"),
                "--n",
                str(n),
                "--seed",
                "0",
                "--jobs",
                str(n_jobs),
            ],
            [
                "train-classifier",
                "--data",
                str(work / "data"),
                "--target",
                "label",
                "--out",
                str(work / "clf.safetensors"),
                "--epochs",
                "3",
                "--threads",
                "1",
            ],
            [
                "fit",
                "--data",
                str(work / "data"),
                "--classifier",
                str(work / "clf.safetensors"),
                "--contexts",
                "shape,size,pos_x,pos_y,rotation,background,hue,brightness",
                "--preset",
                "tiny",
                "--out",
                str(work / "run"),
            ],
            [
                "graph",
                str(work / "run"),
                "--bootstrap",
                "20",
                "--jobs",
                str(n_jobs),
                "--concept-policy",
                "drop",
            ],
        ]
        seconds = {}
        for step in steps:
            t0 = time.perf_counter()
            subprocess.run(glance_cli + step, cwd=ROOT, check=True, capture_output=True)
            seconds[step[0]] = round(time.perf_counter() - t0, 1)
        from glance.causal import CausalGraph
        from glance.metrics.graph import truth_scores

        graph = CausalGraph.load_json(work / "run" / "graph" / "graph.json")
        truth = json.loads((work / "data" / "truth.json").read_text())
        s = truth_scores(graph, truth)
    record("e2e", "shapes pipeline: SHD on the 8 factors", s["shd"], "<= 1", s["shd"] <= 1)
    recall = min(o["recall"] for o in s["outputs"].values())
    record(
        "e2e",
        "shapes pipeline: label-rule factors among output parents (min recall)",
        recall,
        "1.0",
        recall == 1.0,
    )
    record(
        "e2e",
        "shapes pipeline: other factor parents of outputs",
        sorted({p for o in s["outputs"].values() for p in o["other_factor_parents"]}),
        "(info)",
        None,
    )
    record("e2e", "shapes pipeline: seconds per step", seconds, "(info)", None)


# ---------------------------------------------------------------------------------- determinism
def bench_determinism(n: int, n_jobs: int) -> None:
    x, names = morpho_data(n, seed=3, slant=True)
    import glance.causal.bootstrap as bootstrap_module

    saved = bootstrap_module.PARALLEL_MIN_SECONDS
    bootstrap_module.PARALLEL_MIN_SECONDS = 0.0  # exercise the worker processes for real
    blobs = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, jobs in enumerate((n_jobs, n_jobs, 1)):
            g = bootstrap_discover(x, names, n_resamples=20, random_state=42, n_jobs=jobs)
            path = Path(tmp) / f"graph{k}.json"
            atomic_write_json(path, g.to_dict())
            blobs.append(path.read_bytes())
    bootstrap_module.PARALLEL_MIN_SECONDS = saved
    same = blobs[0] == blobs[1] == blobs[2]
    record(
        "determinism",
        "same seed -> byte-identical graph JSON (parallel x2, serial)",
        same,
        "True",
        same,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sections",
        nargs="+",
        default=["morpho", "shapes", "speed", "determinism"],
        choices=["morpho", "shapes", "speed", "determinism", "kci", "e2e"],
    )
    parser.add_argument("--n", type=int, default=10_000, help="samples for morpho and shapes")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--ci-test",
        choices=DATA_CI_TESTS,
        default=None,
        help="PC's CI test in the morpho, shapes and speed sections (default: the library's)",
    )
    args = parser.parse_args(argv)
    if args.ci_test:
        OPTS["ci_test"] = args.ci_test
    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()
    if "morpho" in args.sections:
        bench_morpho(args.n, args.n_jobs)
        if args.n != 60_000:
            bench_morpho(60_000, args.n_jobs, tag="morpho-60k")
    if "kci" in args.sections:
        bench_kci(args.n, args.n_jobs)
    if "e2e" in args.sections:
        bench_e2e(3000, args.n_jobs)
    if "shapes" in args.sections:
        bench_shapes(args.n)
    if "speed" in args.sections:
        bench_speed(args.n_jobs)
    if "determinism" in args.sections:
        bench_determinism(args.n, args.n_jobs)
    width = max(len(r["metric"]) for r in ROWS)
    print(f"{'section':<12} {'metric':<{width}}  {'value':<28} {'target':<22} pass")
    for r in ROWS:
        ok = "-" if r["pass"] is None else ("yes" if r["pass"] else "NO")
        print(
            f"{r['section']:<12} {r['metric']:<{width}}  {str(r['value']):<28} "
            f"{r['target']:<22} {ok}"
        )
    result = {
        "rows": ROWS,
        "all_pass": all(r["pass"] for r in ROWS if r["pass"] is not None),
        "command": "benchmarks/bench_causal.py " + " ".join(argv or sys.argv[1:]),
        "samples": args.n,
        "n_jobs": args.n_jobs,
        "environment": {
            "cpus": os.cpu_count(),
            "load_avg_1m_at_end": os.getloadavg()[0],
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
        "total_s": round(time.perf_counter() - start, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result)
    print(f"wrote {args.out} (all pass: {result['all_pass']}, {result['total_s']} s)")
    return 0 if result["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
