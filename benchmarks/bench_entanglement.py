"""Where the twin's entanglement enters, and what each fix against it does (issue 13).

On causal shapes (plain classifier, the data and classifier of ``bench_explain.py``), for each
``--settings`` entry (a name and preset overrides; ``now`` is the preset as it is), fit a twin on
the same seed and measure, one stage at a time:

- **encoder**: the renderer moves one factor of held-out scenes by one training std (nothing else
  changes); the mean absolute change of every aligned dim of ``E`` per unit move
  (``encoder_matrix[k][j]``: row = the factor moved). A specific encoder has 1 on the diagonal
  and 0 elsewhere, except where the data tie two factors (shape → hue, pos_y → brightness);
- **free dims**: the R² (3-fold cross-validated gradient boosting) of each context predicted from
  the *free* dims alone: a context the free dims also carry is one the generator can draw from
  them, so an intervention on its aligned dim alone is only partly drawn;
- **generator**: ``do(dim k)`` without the graph (no descendants follow), the contexts read back
  from the generated images by a context reader fitted on real images
  (:mod:`glance.metrics.readers`): effectiveness (Spearman and slope, 1 = as much as asked) and
  the cross-talk on every other readable context;
- **orientation**: the held-out R² of each shape's orientation (modulo its symmetry) read
  linearly from the classifier's pooled features and from the concepts: a detail the classifier
  sees but does not decide by, which the concepts drop and the generator then draws as an average
  (the blobs of docs/faithfulness.md);
- **explanation**: per image, the ranking of the 8 contexts by GLANCE's total importance (graph
  with the data's DAG among the contexts given as knowledge, MLP mechanisms) against the oracle
  (the same interventions made with the renderer, judged by the real classifier), beside the
  TCAV-style baseline and the oracle's own mean importance used as a constant ranking; and each
  context's mean importance over the oracle's (1 = the right size). The same twin is also
  explained stepping every context by one standardised unit (``glance_unit_scale``), as glance
  did before it fitted each context's scale (``Glance.context_scale_``).

Usage::

    .venv/bin/python benchmarks/bench_entanglement.py --work /tmp/glance-bench-ent \\
        --settings now readback-1='{"loss":{"readback":1}}' \\
        independence-4='{"loss":{"independence":4}}'

Prints a table and writes ``benchmarks/results/entanglement.json``. Fit times are recorded but are
only comparable between settings fitted alone on the machine (``--threads``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
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
from bench_explain import (  # noqa: E402
    SHAPES_BOUNDS,
    _classifier,
    _data,
    _fidelity,
    _relabelled,
    _test_images,
    agreement,
    cached_run,
    oracle_shapes,
    tcav_ranking,
    truth_knowledge,
)

from glance._io import atomic_write_json  # noqa: E402

logger = logging.getLogger("bench_entanglement")
RESULTS = ROOT / "benchmarks" / "results" / "entanglement.json"


def _fit(clf: Any, data: Path, contexts: list[str], name: str, overrides: dict, args) -> Any:
    import glance
    from glance.data import load_dataset

    run = args.work / f"run-{data.name}-{args.preset}-{name}"
    if (run / "MANIFEST.json").is_file():
        est = cached_run(run, clf, args.preset, overrides or None)
        if est is not None:
            return est
    est = glance.Glance(
        clf,
        contexts=contexts,
        preset=args.preset,
        random_state=args.seed,
        quiet=True,
        config=overrides or None,
        n_threads=args.threads,  # fixed, not the load-following choice (bench_explain._fit)
    )
    return est.fit(_relabelled(load_dataset(data, split="train"), clf), out=run)


def encoder_matrix(est: Any, data: Path, contexts: list[str], n: int) -> np.ndarray:
    """Mean |Δ aligned dim j| per unit (training std) renderer move of factor k; NaN rows for
    the factors not moved."""
    from glance.data import load_dataset
    from glance.data.shapes import render_shape

    test, train = load_dataset(data, split="test"), load_dataset(data, split="train")
    names = list(test.attribute_names)
    table = np.asarray(test.attributes, dtype=np.float64)[:n]
    std = np.asarray(train.attributes, dtype=np.float64).std(0)
    side = test.image_shape[-1]

    def encode(rows: list[dict[str, float]]) -> np.ndarray:
        imgs = np.stack([render_shape(r, side).transpose(2, 0, 1) for r in rows])
        return est.encode(torch.as_tensor(imgs).float().div(255))[:, : len(contexts)].numpy()

    base = [dict(zip(names, r, strict=True)) for r in table]
    z0 = encode(base)
    out = np.full((len(contexts), len(contexts)), np.nan)
    for k, name in enumerate(contexts):
        if name not in SHAPES_BOUNDS:  # shape is categorical, a raw rotation not readable
            continue
        lo, hi = SHAPES_BOUNDS[name]
        step = std[names.index(name)]
        moved_rows, moved = [], []
        for f in base:
            g = dict(f)  # one std up, or down where up would leave the renderer's range
            g[name] = float(np.clip(f[name] + (step if f[name] + step <= hi else -step), lo, hi))
            moved_rows.append(g)
            moved.append(abs(g[name] - f[name]) / step)
        dz = np.abs(encode(moved_rows) - z0).mean(0)
        out[k] = dz / max(float(np.mean(moved)), 1e-12)
    return out


def free_dim_r2(est: Any, data: Path, contexts: list[str], n: int, seed: int) -> dict[str, float]:
    """Cross-validated R² of each context from the free dims of E (gradient boosting)."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.model_selection import cross_val_score

    from glance.data import load_dataset

    ds = load_dataset(data, split="train")
    idx = np.arange(min(n, len(ds)))
    z = est.encode(ds.load_images(idx).float()).numpy()[:, len(contexts) :]
    out = {}
    for c in contexts:
        y = np.asarray(ds.attribute(c), dtype=np.float64)[idx]
        model = HistGradientBoostingRegressor(max_iter=100, random_state=seed)
        out[c] = float(cross_val_score(model, z, y, cv=3, scoring="r2").mean())
    return out


#: Rotational symmetry of each shape code of the renderer (circle: none to read).
SYMMETRY = {1: 4, 2: 3}  # square, triangle


def orientation_r2(est: Any, data: Path, n: int, seed: int) -> dict[str, dict[str, float]]:
    """Held-out R² of each shape's orientation, read linearly from the classifier's features and
    from the concepts: what the classifier sees of a detail it does not decide by, and how much
    of it the concepts keep (a generator cannot draw what they drop: it draws the average).

    The target is ``(cos, sin)`` of the rotation times the shape's symmetry (a square rotated by
    90° is the same image), so a perfect reading gives 1. Features are pooled to the encoder's
    pooled size; ridge regression with its penalty chosen by cross-validation on the training
    images, scored on the test split.
    """
    import torch.nn.functional as F
    from sklearn.linear_model import RidgeCV

    from glance.data import load_dataset

    pooled = est.encoder_.pooled
    read: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    for split in ("train", "test"):
        ds = load_dataset(data, split=split)
        idx = np.sort(np.random.default_rng(seed).permutation(len(ds))[: min(n, len(ds))])
        x = ds.load_images(idx).float()
        feats, zs = [], []
        with torch.no_grad():
            for i in range(0, len(x), 256):  # one classifier pass serves both readings
                f = est.adapter_.features(x[i : i + 256])
                feats.append(F.adaptive_avg_pool2d(f, pooled).flatten(1))
                zs.append(est.encoder_(f)[0])  # the posterior mean: what est.encode returns
        feats, z = torch.cat(feats).numpy(), torch.cat(zs).numpy()
        shape = np.asarray(ds.attribute("shape"))[idx]
        angle = np.deg2rad(np.asarray(ds.attribute("rotation"), dtype=np.float64)[idx])
        read[split] = (feats, z, shape, angle)
    out: dict[str, dict[str, float]] = {"features": {}, "concepts": {}}
    names = {1: "square", 2: "triangle"}
    for code, k in SYMMETRY.items():
        tr, te = (np.asarray(read[s][2]) == code for s in ("train", "test"))

        def target(angle: np.ndarray, k: int = k) -> np.ndarray:
            return np.stack([np.cos(k * angle), np.sin(k * angle)], 1)

        for col, key in ((0, "features"), (1, "concepts")):
            model = RidgeCV(alphas=np.logspace(-3, 3, 7))
            model.fit(read["train"][col][tr], target(read["train"][3][tr]))
            r2 = model.score(read["test"][col][te], target(read["test"][3][te]))
            out[key][names[code]] = float(r2)
    return out


def generator_soundness(est: Any, data: Path, x: torch.Tensor, seed: int) -> dict[str, Any]:
    """Effectiveness and cross-talk of single-dim moves (no graph: nothing else follows)."""
    from glance.data import load_dataset
    from glance.metrics.readers import fit_reader

    reader = fit_reader(load_dataset(data, split="train"), est.context_names_, random_state=seed)
    out = _generator_soundness(est, x, reader)
    if getattr(est, "context_readback_", None) is not None:  # the same moves, calibrated
        out["calibrated"] = _generator_soundness(est, x, reader, calibrated=True)
    return out


def _generator_soundness(
    est: Any, x: torch.Tensor, reader: Any, calibrated: bool = False
) -> dict[str, Any]:
    from glance.evaluation import _soundness

    s = _soundness(est, x, reader, calibrated=calibrated)
    out: dict[str, Any] = {}
    for name in est.context_names_:
        e, sp = s["effectiveness"].get(name), s["specificity"].get(name)
        if e is None:
            out[name] = {"unreadable": reader.reason(name)}
            continue
        out[name] = {
            "effectiveness": e["spearman"],
            "slope": e["slope"],
            "worst_cross_talk": sp["worst"],
            "worst_context": sp["worst_context"],
            "cross_talk": sp["cross_talk"],
            "not_compared_tied": sp["tied"],
        }
    return out


def explanation_agreement(
    est: Any, clf: Any, data: Path, contexts: list[str], x: torch.Tensor, oracle: np.ndarray
) -> dict[str, Any]:
    from glance.data import load_dataset
    from glance.explain import LocalExplainer, Twin

    knowledge = truth_knowledge(data, contexts)
    train = _relabelled(load_dataset(data, split="train"), clf)
    est.global_explanation(
        train, n_resamples=0, max_images=2000, knowledge=knowledge, mechanism="mlp"
    )
    twin = Twin.from_glance(est)
    exp = LocalExplainer(twin, batch_size=64).explain(x)
    idx = [exp.nodes.index(c) for c in contexts]
    ours = exp.importance[:, idx]
    # Ablation: the same twin stepping every context by one standardised unit, as glance did
    # before it fitted each context's scale (``Glance.context_scale_``).
    m = len(est.context_names_)
    unit = dataclasses.replace(twin, node_std=np.r_[np.ones(m), twin.node_std[m:]])
    exp_unit = LocalExplainer(unit, batch_size=64).explain(
        x, interactions=False, counterfactual=False
    )
    ours_unit = exp_unit.importance[:, idx]
    # The same twin with calibrated interventions (opt-in), where the fit measured them.
    cal = Twin.from_glance(est, calibrated=True)
    ours_cal = (
        LocalExplainer(cal, batch_size=64)
        .explain(x, interactions=False, counterfactual=False)
        .importance[:, idx]
    )
    tcav = tcav_ranking(est, data, x, torch.as_tensor(exp.target), contexts)
    constant = np.tile(oracle.mean(0), (len(oracle), 1))
    ratio = ours.mean(0) / np.maximum(oracle.mean(0), 1e-12)
    ratio_unit = ours_unit.mean(0) / np.maximum(oracle.mean(0), 1e-12)
    return {
        "glance": agreement(ours, oracle),
        # the twin's context steps are the fitted scale (1 for runs saved without one)
        "context_scale": dict(
            zip(est.context_names_, twin.node_std[:m].round(3).tolist(), strict=True)
        ),
        "interventions_measured": getattr(est, "context_readback_", None) is not None,
        "glance_calibrated": agreement(ours_cal, oracle),
        "importance_over_oracle_calibrated": dict(
            zip(
                contexts,
                (ours_cal.mean(0) / np.maximum(oracle.mean(0), 1e-12)).round(3).tolist(),
                strict=True,
            )
        ),
        "glance_unit_scale": agreement(ours_unit, oracle),
        "importance_over_oracle_unit_scale": dict(
            zip(contexts, ratio_unit.round(3).tolist(), strict=True)
        ),
        "tcav": agreement(tcav, oracle),
        "oracle_mean_as_constant": agreement(constant, oracle),
        "importance_over_oracle": dict(zip(contexts, ratio.round(3).tolist(), strict=True)),
        "mean_importance": dict(zip(contexts, ours.mean(0).round(4).tolist(), strict=True)),
    }


def _setting(text: str) -> tuple[str, dict[str, Any]]:
    name, _, js = text.partition("=")
    return name, (json.loads(js) if js else {})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settings", nargs="+", default=["now"], help="NAME or NAME=JSON overrides")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--work", type=Path, default=Path("/tmp/glance-bench-entanglement"))
    ap.add_argument("--n-shapes", type=int, default=4000)
    ap.add_argument("--n-explain", type=int, default=64)
    ap.add_argument("--n-probe", type=int, default=2000, help="images for the free-dim probe")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    from glance.data.shapes import SHAPES_FACTORS

    data = _data("plain", args.work, args.n_shapes, args.seed)
    contexts = list(SHAPES_FACTORS)
    clf = _classifier(data, "label", args.work, args.epochs, args.seed)
    x, _ = _test_images(data, args.n_explain, "test")
    x_fid, _ = _test_images(data, 1000, "test")
    oracle = oracle_shapes(clf, data, len(x), contexts)
    results: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "machine": machine_info(),
        "preset": args.preset,
        "data": str(data),
        "classifier_accuracy": clf.meta.get("accuracy"),
        "settings": {},
    }
    for text in args.settings:
        name, overrides = _setting(text)
        t0 = time.perf_counter()
        est = _fit(clf, data, contexts, name, overrides, args)
        results["settings"][name] = {
            "overrides": overrides,
            "fit_seconds": getattr(est, "fit_seconds_", None),
            # No regression of the twin's agreement with the classifier (1000 held-out images).
            **_fidelity(est, x_fid, None),
            "encoder_matrix": encoder_matrix(est, data, contexts, 256).round(3).tolist(),
            "free_dim_r2": free_dim_r2(est, data, contexts, args.n_probe, args.seed),
            "orientation_r2": orientation_r2(est, data, args.n_probe, args.seed),
            "generator": generator_soundness(est, data, x, args.seed),
            "explanation": explanation_agreement(est, clf, data, contexts, x, oracle),
            "wall_s": time.perf_counter() - t0,
        }
        results["contexts"] = contexts
        atomic_write_json(args.out, results)
    _print(results)
    return 0


def _print(r: dict[str, Any]) -> None:
    print(f"\ncausal shapes, {r['preset']} preset, 64 held-out images")
    head = "setting            Spearman  cosine   (TCAV  const)  fid   rec  | slope per context"
    print(head)
    for name, s in r["settings"].items():
        e = s["explanation"]
        slopes = " ".join(
            f"{c[:5]}={g['slope']:.2f}" for c, g in s["generator"].items() if "slope" in g
        )
        print(
            f"{name:18s} {e['glance']['mean_spearman']:8.3f} {e['glance']['mean_cosine']:7.3f}"
            f"   ({e['tcav']['mean_spearman']:.3f} "
            f"{e['oracle_mean_as_constant']['mean_spearman']:.3f})"
            f" {s['fidelity']:.3f} {s['reconstruction_fidelity']:.3f} | {slopes}"
        )
    print("worst cross-talk of a single-dim move (read; tied contexts not compared)")
    for name, s in r["settings"].items():
        worst = " ".join(
            f"{c[:5]}={g['worst_cross_talk']:.2f}({(g['worst_context'] or '')[:5]})"
            for c, g in s["generator"].items()
            if g.get("worst_cross_talk") is not None
        )
        print(f"{name:18s} {worst}")
    for name, s in r["settings"].items():
        e = s["explanation"]
        if "glance_calibrated" in e:
            u = e["glance_calibrated"]
            print(
                f"{name:18s} {u['mean_spearman']:8.3f} {u['mean_cosine']:7.3f}   "
                "(the same twin, its interventions calibrated)"
            )
        if "glance_unit_scale" in e:
            u = e["glance_unit_scale"]
            print(
                f"{name:18s} {u['mean_spearman']:8.3f} {u['mean_cosine']:7.3f}   "
                "(the same twin stepping each context by one standardised unit)"
            )
    for name, s in r["settings"].items():
        leak = " ".join(f"{c[:5]}={v:.2f}" for c, v in s["free_dim_r2"].items())
        print(f"{name:18s} free-dim R2: {leak}")
        if "orientation_r2" in s:
            o = s["orientation_r2"]
            kept = " ".join(
                f"{k}={o['concepts'][k]:.2f} (features {o['features'][k]:.2f})"
                for k in o["features"]
            )
            print(f"{'':18s} orientation R2 from the concepts: {kept}")
        over = s["explanation"]["importance_over_oracle"]
        ratio = " ".join(f"{c[:5]}={v:.2f}" for c, v in over.items())
        print(f"{'':18s} importance / oracle: {ratio}")


if __name__ == "__main__":
    sys.exit(main())
