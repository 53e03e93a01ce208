"""Benchmark of a user's own torchvision model at real resolution (issue 12, "must reach").

Each task runs end to end as a user would (docs/own-model.md): glance renders the data, a
torchvision network is trained **outside glance** by a plain PyTorch loop (normalisation inside
the module, random initialisation: nothing is downloaded), then ``Glance(model, layer=...)`` is
fitted with a preset, evaluated on held-out images, its causal graph discovered with bootstrap
resamples, and 64 held-out images explained and compared with an oracle (the same interventions
made with the renderer and judged by the real classifier).

- ``pendulum``: the pendulum scene (64 px RGB; ``--size 128`` on request). The label is a rule
  on the mediator ``shadow_length``; the angles act on it only through the shadow. Targets: fit
  ≤ 20 min wall; fidelity ≥ 0.95, reconstruction fidelity ≥ 0.90, sampled fidelity ≥ 0.85,
  alignment R² ≥ 0.80 for every context; the mediator first among the contexts in ≥ 90% of
  images; each angle's total importance ≥ 30% of the mediator's with its direct importance ≤ 10%
  of its total; the output's parents contain the mediator and not the angles in ≥ 18/20
  bootstrap resamples; counterfactual validity ≥ 0.90; read-back R² ≥ 0.80 for every context.
- ``shapes``: causal shapes at 64 px RGB, the same network family: the rule factor first in
  ≥ 90% of images, counterfactual validity ≥ 0.90, read-back R² ≥ 0.80 for every visible context.

Usage::

    .venv/bin/python benchmarks/bench_resolution.py --tasks pendulum --work /tmp/glance-res
    .venv/bin/python benchmarks/bench_resolution.py --tasks pendulum --preset tiny --n 800

Prints a table and writes ``benchmarks/results/resolution.json`` and a grid of inputs and
reconstructions per task (``resolution-<task>-reconstructions.png``). A figure that could not
be measured is reported as missing with the reason.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import machine_info  # noqa: E402
from bench_explain import (  # noqa: E402
    _oracle_importance,
    _rank,
    _support,
    agreement,
    calibrated,
    oracle_shapes,
    truth_knowledge,
)

from glance._io import atomic_write_json  # noqa: E402

logger = logging.getLogger("bench_resolution")
RESULTS = ROOT / "benchmarks" / "results" / "resolution.json"
ORACLE_DELTAS = (-2.0, -1.0, 1.0, 2.0)  # in training standard deviations, as GLANCE's default

#: torchvision families and the layer glance reads (the last convolutional stage).
ARCHS = {"resnet18": "net.layer4", "mobilenet_v3_small": "net.features"}


# ----------------------------------------------------------------------------------- the model
class Normalised(torch.nn.Module):
    """A torchvision network with its ImageNet normalisation inside (what a user ships)."""

    def __init__(self, net: torch.nn.Module, size: int) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
        self.in_channels, self.input_size = 3, (size, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def make_model(arch: str, n_classes: int, size: int) -> torch.nn.Module:
    import torchvision

    return Normalised(getattr(torchvision.models, arch)(weights=None, num_classes=n_classes), size)


def train_outside(model: torch.nn.Module, ds: Any, epochs: int, seed: int) -> dict[str, Any]:
    """A plain PyTorch loop, no glance code: Adam, cosine schedule, flips off (they would change
    the pendulum's geometry), 20% of the training split held out for the accuracy."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, y = ds.load_images(), torch.as_tensor(np.asarray(ds.labels), dtype=torch.long)
    perm = torch.randperm(len(x), generator=gen)
    n_val = len(x) // 5
    val, tr = perm[:n_val], perm[n_val:]
    steps = epochs * ((len(tr) + 63) // 64)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    t0 = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for idx in tr[torch.randperm(len(tr), generator=gen)].split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx].float()), y[idx]).backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i].float()).argmax(1) for i in val.split(256)])
    return {
        "val_accuracy": float((pred == y[val]).float().mean()),
        "train_s": time.perf_counter() - t0,
    }


def _classifier(data: Path, args: argparse.Namespace) -> tuple[torch.nn.Module, dict[str, Any]]:
    from safetensors.torch import load_file, save_file

    from glance.data import load_dataset

    train = load_dataset(data, split="train")
    model = make_model(args.arch, len(train.classes), train.image_shape[-1])
    path = args.work / f"{args.arch}-{data.name}-e{args.epochs}-s{args.seed}.safetensors"
    info_path = path.with_suffix(".json")
    if path.is_file() and info_path.is_file():
        model.load_state_dict(load_file(path))
        return model.eval(), json.loads(info_path.read_text())
    info = train_outside(model, train, args.epochs, args.seed)
    test = load_dataset(data, split="test")
    xt, yt = test.load_images(), np.asarray(test.labels)
    with torch.no_grad():
        pred = torch.cat([model(b.float()).argmax(1) for b in xt.split(256)]).numpy()
    info["test_accuracy"] = float(np.mean(pred == yt))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    info_path.write_text(json.dumps(info))
    return model.eval(), info


# ----------------------------------------------------------------------------------- pipeline
def _data(kind: str, args: argparse.Namespace) -> Path:
    from glance.data.pendulum import generate_pendulum
    from glance.data.shapes import generate_shapes

    out = args.work / f"{kind}-{args.size}px-n{args.n}-s{args.seed}"
    if not (out / "MANIFEST.json").is_file():
        if kind == "pendulum":
            generate_pendulum(out, n=args.n, size=args.size, seed=args.seed, force=True)
        else:
            generate_shapes(out, n=args.n, size=args.size, seed=args.seed, force=True)
    return out


def _fit(model: torch.nn.Module, data: Path, contexts: list[str], args: argparse.Namespace):
    import glance
    from glance.data import load_dataset

    overrides = json.loads(args.config) if args.config else None
    tag = f"{args.preset}-{args.arch}-{args.tag}" if args.tag else f"{args.preset}-{args.arch}"
    run = args.work / f"run-{data.name}-{tag}"
    if (run / "MANIFEST.json").is_file():
        est = glance.load(run, classifier=model)
        return calibrated(est, load_dataset(data, split="train")), run, None
    est = glance.Glance(
        model,
        layer=ARCHS[args.arch],
        contexts=contexts,
        preset=args.preset,
        random_state=args.seed,
        quiet=True,
        config=overrides,
        n_threads=args.threads,
    )
    t0 = time.perf_counter()
    est.fit(load_dataset(data, split="train"), out=run)
    return est, run, time.perf_counter() - t0


def _grid(est: Any, x: torch.Tensor, path: Path) -> None:
    """Inputs (odd rows) above their reconstructions G(E(x)) (even rows), 8 per row."""
    from PIL import Image

    with torch.no_grad():
        rec = est.generate(est.encode(x)).clamp(0, 1)
    rows = []
    for i in range(0, len(x), 8):
        for t in (x[i : i + 8], rec[i : i + 8]):
            rows.append(torch.cat(list(t), dim=-1))
    img = (torch.cat(rows, dim=-2).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


def _graph(est: Any, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Bootstrap discovery; per edge into the output, its share of resamples.

    ``--knowledge truth`` gives discovery the data's DAG among the contexts as required edges
    (what a user who knows how the scene is made can say); edges into the outputs are always
    left to discovery."""
    from glance.data import load_dataset

    knowledge = truth_knowledge(data, list(est.contexts)) if args.knowledge == "truth" else None
    t0 = time.perf_counter()
    graph = est.global_explanation(
        load_dataset(data, split="train"),
        n_resamples=args.resamples,
        max_images=2000,
        random_state=args.seed,
        knowledge=knowledge,
        mechanism=args.mechanism,
    )
    freqs = graph.meta.get("bootstrap", {}).get("edge_frequencies", [])
    return {
        "discovery_s": time.perf_counter() - t0,
        "edges": [f"{e.source}{'->' if e.directed else '--'}{e.target}" for e in graph.edges()],
        "edge_frequencies": freqs,
    }


def _output_edge_shares(freqs: list[Any], node: str, outputs: list[str]) -> dict[str, float]:
    """Shares of resamples in which ``node`` is adjacent to an output, and has an edge directed
    into one (the largest over the output nodes)."""
    out = {"directed_into_output": 0.0, "adjacent_to_output": 0.0}
    for f in freqs:
        a, b = f.get("source"), f.get("target")
        if a == node and b in outputs:
            into = float(f.get("forward", 0.0))
        elif b == node and a in outputs:
            into = float(f.get("backward", 0.0))
        else:
            continue
        out["directed_into_output"] = max(out["directed_into_output"], into)
        out["adjacent_to_output"] = max(out["adjacent_to_output"], float(f.get("presence", 0.0)))
    return out


def oracle_pendulum(
    model: torch.nn.Module, ds: Any, train: Any, n: int, *, direct: bool = False
) -> np.ndarray:
    """Ground-truth importance (N, 4) of the pendulum factors with the renderer.

    Total (default): an angle's intervention recomputes its descendants (the shadow); an
    intervention on a shadow factor changes it alone. ``direct``: every intervention changes
    its factor alone (the shadow stays where it was), as GLANCE's direct importance does.
    Shifts of ±1, ±2 training std, clipped to the central 99% of the training values as GLANCE's
    twin does."""
    from glance.data.pendulum import PENDULUM_FACTORS, pendulum_descendants, render_pendulum

    names = list(ds.attribute_names)
    table = np.asarray(ds.attributes, dtype=np.float64)[:n]
    tr = np.asarray(train.attributes, dtype=np.float64)
    std = tr.std(0)
    size = ds.image_shape[-1]
    base_rows = [dict(zip(names, r, strict=True)) for r in table]

    def render(rows: list[dict[str, float]]) -> np.ndarray:
        return np.stack([render_pendulum(r, size).transpose(2, 0, 1) for r in rows])

    variants = []
    for name in PENDULUM_FACTORS:
        k = names.index(name)
        lo, hi = _support(tr[:, k])
        per_delta = []
        for dl in ORACLE_DELTAS:
            rows, moved = [], []
            for f in base_rows:
                g = dict(f)
                g[name] = float(np.clip(f[name] + dl * std[k], lo, hi))
                if name in ("pendulum_angle", "light_angle") and not direct:
                    d = pendulum_descendants(g["pendulum_angle"], g["light_angle"])
                    g.update({c: float(d[c]) for c in ("shadow_length", "shadow_position")})
                rows.append(g)
                moved.append(abs(g[name] - f[name]) > 1e-9)
            per_delta.append((render(rows), np.asarray(moved)))
        variants.append(per_delta)
    return _oracle_importance(model, render(base_rows), variants)


def _explain(est: Any, x: torch.Tensor, contexts: list[str], args: argparse.Namespace):
    from glance.explain import LocalExplainer, Twin

    twin = Twin.from_glance(est, calibrated=args.calibrated)
    t0 = time.perf_counter()
    exp = LocalExplainer(twin, batch_size=args.batch_size).explain(x)
    cols = [exp.nodes.index(c) for c in contexts]
    return exp, exp.importance[:, cols], exp.direct_importance[:, cols], time.perf_counter() - t0


def _common(kind: str, contexts: list[str], args: argparse.Namespace) -> tuple:
    from glance.data import load_dataset

    data = _data(kind, args)
    model, clf_info = _classifier(data, args)
    est, run, fit_wall = _fit(model, data, contexts, args)
    test = load_dataset(data, split="test")
    t0 = time.perf_counter()
    metrics = est.evaluate(test, n_images=args.eval_images)
    res: dict[str, Any] = {
        "data": str(data),
        "run": str(run),
        "arch": args.arch,
        "layer": ARCHS[args.arch],
        "classifier": clf_info,
        "fit_wall_s": fit_wall,
        "fit_seconds": getattr(est, "fit_seconds_", None),
        "precision": getattr(est, "precision_", None),  # what the training steps computed in
        "interventions_measured": getattr(est, "context_readback_", None) is not None,
        "explained_calibrated": bool(args.calibrated),
        # set where a cached run was measured here (a fresh fit's time includes it)
        "calibration_seconds": getattr(est, "calibration_seconds_", None),
        "evaluate_s": time.perf_counter() - t0,
        "metrics": {
            k: metrics.get(k)
            for k in (
                "fidelity",
                "reconstruction_fidelity",
                "sampled_fidelity",
                "alignment_r2",
                "generated_alignment",
                "readback_r2",
                "readback_r2_unmeasured",
                "readers",
                "reconstruction_ssim",
                "reconstruction_edges",
                "fid",
                "kid",
                "mig",
                "counterfactual_soundness",
            )
        },
    }
    x = test.load_images(np.arange(min(args.n_explain, len(test)))).float()
    tag = f"-{args.tag}" if args.tag else ""
    _grid(est, x[:32], args.out.parent / f"resolution-{kind}{tag}-reconstructions.png")
    return data, model, est, test, x, res


def task_pendulum(args: argparse.Namespace) -> dict[str, Any]:
    from glance.data import load_dataset
    from glance.data.pendulum import PENDULUM_FACTORS

    contexts = list(PENDULUM_FACTORS)
    data, model, est, test, x, res = _common("pendulum", contexts, args)
    res.update(_graph(est, data, args))
    outputs = [n.name for n in est.graph_.nodes if n.kind == "output"]
    res["outputs"] = outputs
    res["parents_of_output"] = {
        c: _output_edge_shares(res["edge_frequencies"], c, outputs) for c in contexts
    }
    exp, total, direct, explain_s = _explain(est, x, contexts, args)
    res["explain_s"] = explain_s
    m = contexts.index("shadow_length")
    res["mediator_first"] = float(np.mean(_rank(total, m) == 0))
    res["mean_total"] = dict(zip(contexts, total.mean(0).round(5).tolist(), strict=True))
    res["mean_direct"] = dict(zip(contexts, direct.mean(0).round(5).tolist(), strict=True))
    res.update(_angle_ratios(total, direct, contexts))
    # The mediator is the only direct cause of the label: first by direct importance. By total
    # importance the angles may come first (they move the whole shadow); the oracle says which.
    res["mediator_first_direct"] = float(np.mean(_rank(direct, m) == 0))
    res["counterfactual_validity"] = float(exp.counterfactual.valid.mean())
    train = load_dataset(data, split="train")
    orc = oracle_pendulum(model, test, train, len(x))
    orc_direct = oracle_pendulum(model, test, train, len(x), direct=True)
    res["oracle"] = {
        "mean_importance": dict(zip(contexts, orc.mean(0).round(5).tolist(), strict=True)),
        "mean_direct": dict(zip(contexts, orc_direct.mean(0).round(5).tolist(), strict=True)),
        "mediator_first": float(np.mean(_rank(orc, m) == 0)),
        "mediator_first_direct": float(np.mean(_rank(orc_direct, m) == 0)),
        "agreement": agreement(total, orc),
        "agreement_direct": agreement(direct, orc_direct),
    }
    res["oracle"].update(_angle_ratios(orc, orc_direct, contexts))
    res["classifier_dependence"] = classifier_dependence(model, train, contexts, "shadow_length")
    return res


def _cv_r2(x: np.ndarray, y: np.ndarray) -> float:
    """Cross-validated R² (3 folds) of a gradient-boosted regression of ``y`` on ``x``."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.model_selection import cross_val_score

    reg = HistGradientBoostingRegressor(random_state=0)
    return float(cross_val_score(reg, x, y, cv=3, scoring="r2").mean())


def classifier_dependence(
    model: torch.nn.Module, ds: Any, contexts: list[str], mediator: str, n: int = 2000
) -> dict[str, Any]:
    """Does the real classifier read each other context beyond the mediator? Ground truth for
    the graph's edges into the output, measured on real images (no twin involved).

    The classifier's logit margin (last class minus first) on ``n`` real images, against each
    context given the mediator: the partial correlation after an additive cubic-spline
    regression on the mediator (so that a nonlinear read of the mediator is not taken for a
    second cause), its Fisher-z p-value, and the cross-validated R² of a gradient-boosted
    regression of the margin on the mediator alone and with the context added."""
    import math

    from sklearn.preprocessing import SplineTransformer

    idx = np.arange(min(n, len(ds)))
    x = ds.load_images(idx).float()
    with torch.no_grad():
        logits = torch.cat([model(b) for b in x.split(256)]).double().numpy()
    margin = logits[:, -1] - logits[:, 0]
    table = np.asarray(ds.attributes, dtype=np.float64)[idx]
    names = list(ds.attribute_names)
    med = table[:, [names.index(mediator)]]
    basis = np.column_stack([np.ones(len(idx)), SplineTransformer(n_knots=8).fit_transform(med)])

    def resid(v: np.ndarray) -> np.ndarray:
        return v - basis @ np.linalg.lstsq(basis, v, rcond=None)[0]

    r2_mediator = _cv_r2(med, margin)
    out: dict[str, Any] = {"n_images": len(idx), "margin_r2_mediator": r2_mediator}
    dof = len(idx) - basis.shape[1] - 2
    for c in contexts:
        if c == mediator:
            continue
        v = table[:, names.index(c)]
        r = float(np.corrcoef(resid(v), resid(margin))[0, 1])
        z = math.sqrt(dof) * abs(math.atanh(min(abs(r), 1 - 1e-12)))
        out[c] = {
            "partial_r": r,
            "p_value": math.erfc(z / math.sqrt(2.0)),
            "margin_r2_gain": _cv_r2(np.column_stack([med, v]), margin) - r2_mediator,
        }
    return out


def _angle_ratios(total: np.ndarray, direct: np.ndarray, contexts: list[str]) -> dict[str, float]:
    """Each angle's mean total importance over the mediator's, and its direct over its total."""
    m, out = contexts.index("shadow_length"), {}
    for angle in ("pendulum_angle", "light_angle"):
        a = contexts.index(angle)
        out[f"{angle}_total_over_mediator"] = float(
            total[:, a].mean() / max(total[:, m].mean(), 1e-12)
        )
        out[f"{angle}_direct_over_total"] = float(
            direct[:, a].mean() / max(total[:, a].mean(), 1e-12)
        )
    return out


def task_shapes(args: argparse.Namespace) -> dict[str, Any]:
    from glance.data import load_dataset
    from glance.data.shapes import SHAPES_FACTORS

    contexts = list(SHAPES_FACTORS)
    data, model, est, test, x, res = _common("shapes", contexts, args)
    truth = json.loads((data / "truth.json").read_text())
    exp, total, _direct, explain_s = _explain(est, x, contexts, args)
    res["explain_s"] = explain_s
    (rule,) = truth["label_rule"]["factors"]
    res["rule_factor_first"] = float(np.mean(_rank(total, contexts.index(rule)) == 0))
    res["mean_total"] = dict(zip(contexts, total.mean(0).round(5).tolist(), strict=True))
    res["counterfactual_validity"] = float(exp.counterfactual.valid.mean())
    orc = oracle_shapes(model, data, len(x), contexts)
    res["oracle"] = {
        "mean_importance": dict(zip(contexts, orc.mean(0).round(5).tolist(), strict=True)),
        "rule_factor_first": float(np.mean(_rank(orc, contexts.index(rule)) == 0)),
        "agreement": agreement(total, orc),
    }
    res["rotation_information"] = rotation_information(
        model, est, load_dataset(data, split="train"), ARCHS[args.arch]
    )
    return res


def rotation_information(
    model: torch.nn.Module, est: Any, ds: Any, layer: str, n: int = 3000
) -> dict[str, Any]:
    """How much of each shape's rotation the concepts and the classifier hold.

    A square looks the same every 90°, a triangle every 120°: the readable rotation is the
    pair (cos kθ, sin kθ) with k = 4 or 3, which a reader of the raw angle cannot learn. Per
    shape, the cross-validated R² (gradient boosting, 3 folds) of that pair from the concept
    vector E(x) and from the classifier's features at ``layer`` averaged over space. A twin
    whose concepts hold no rotation can only draw the average over rotations: a blob."""
    idx = np.arange(min(n, len(ds)))
    x = ds.load_images(idx).float()
    with torch.no_grad():
        z = torch.cat([est.encode(b) for b in x.split(200)]).numpy()
    module = dict(model.named_modules())[layer]
    pooled: list[torch.Tensor] = []
    hook = module.register_forward_hook(lambda _m, _i, o: pooled.append(o.mean((2, 3))))
    try:  # the hook only around the classifier's own passes (encode runs it too)
        with torch.no_grad():
            for b in x.split(200):
                model(b)
    finally:
        hook.remove()
    feats = torch.cat(pooled).numpy()
    names = list(ds.attribute_names)
    table = np.asarray(ds.attributes, dtype=np.float64)[idx]
    shape = table[:, names.index("shape")].astype(int)
    theta = np.deg2rad(table[:, names.index("rotation")])
    out: dict[str, Any] = {"n_images": len(idx)}
    for code, name, k in ((1, "square", 4), (2, "triangle", 3)):
        sel = shape == code
        row = {}
        for src, data in (("concepts", z[sel]), ("classifier_features", feats[sel])):
            targets = (np.cos(k * theta[sel]), np.sin(k * theta[sel]))
            row[src] = float(np.mean([_cv_r2(data, t) for t in targets]))
        out[name] = row
    return out


TASKS = {"pendulum": task_pendulum, "shapes": task_shapes}


# ----------------------------------------------------------------------------------- report
def _checks(name: str, r: dict[str, Any]) -> list[tuple[str, str, Any, bool | None]]:
    rows: list[tuple[str, str, Any, bool | None]] = []

    def add(fig: str, target: str, value: Any, ok: bool | None) -> None:
        rows.append((fig, target, value, ok))

    m = r.get("metrics", {})
    if name == "pendulum":
        w = r.get("fit_wall_s")
        add("fit wall (s)", "<= 1200", w, None if w is None else w <= 1200)
        for key, floor in (("fidelity", 0.95), ("reconstruction_fidelity", 0.90),
                           ("sampled_fidelity", 0.85)):  # fmt: skip
            v = m.get(key)
            add(key, f">= {floor}", v, None if v is None else v >= floor)
    for c, v in (m.get("alignment_r2") or {}).items():
        if name == "pendulum":
            add(f"alignment R2 {c}", ">= 0.80", v, None if v is None else v >= 0.80)
    for c, v in (m.get("readback_r2") or {}).items():
        add(f"read-back R2 {c}", ">= 0.80", v, None if v is None else v >= 0.80)
    v = m.get("reconstruction_edges")  # the report's floor (glance.report thresholds)
    add("reconstruction edges", ">= 0.60", v, None if v is None else v >= 0.60)
    if name == "pendulum":
        for key in ("mediator_first", "mediator_first_direct"):
            v = r.get(key)
            add(key.replace("_", " "), ">= 0.90", v, None if v is None else v >= 0.9)
        o = r.get("oracle", {})
        for key in ("agreement", "agreement_direct"):
            v = o.get(key, {}).get("mean_spearman")
            add(f"oracle {key.replace('_', ' ')} (Spearman)", "report", v, None)
        for a in ("pendulum_angle", "light_angle"):
            t, d = r.get(f"{a}_total_over_mediator"), r.get(f"{a}_direct_over_total")
            add(f"{a} total / mediator", ">= 0.30", t, None if t is None else t >= 0.30)
            add(f"{a} direct / total", "<= 0.10", d, None if d is None else d <= 0.10)
            o = r.get("oracle", {}).get(f"{a}_direct_over_total")
            add(f"  the oracle's {a} direct / total", "report", o, None)
        p = r.get("parents_of_output", {})
        med = p.get("shadow_length", {}).get("directed_into_output")
        add("mediator -> output (resamples)", ">= 0.90", med, None if med is None else med >= 0.9)
        for a in ("pendulum_angle", "light_angle"):
            adj = p.get(a, {}).get("adjacent_to_output")
            add(f"{a} adjacent to output", "<= 0.10", adj, None if adj is None else adj <= 0.10)
            dep = r.get("classifier_dependence", {}).get(a, {})
            add(f"  the classifier's {a} partial r", "report", dep.get("partial_r"), None)
            add(f"  the classifier's {a} R2 gain", "report", dep.get("margin_r2_gain"), None)
    else:
        v = r.get("rule_factor_first")
        add("rule factor first", ">= 0.90", v, None if v is None else v >= 0.90)
        o = r.get("oracle", {})
        add("  the oracle's rule factor first", "report", o.get("rule_factor_first"), None)
        v = o.get("agreement", {}).get("mean_spearman")
        add("oracle agreement (Spearman)", "report", v, None)
        for shape, row in (r.get("rotation_information") or {}).items():
            if isinstance(row, dict):
                for src, v in row.items():
                    add(f"  {shape} rotation R2 from {src.replace('_', ' ')}", "report", v, None)
    v = r.get("counterfactual_validity")
    add("counterfactual validity", ">= 0.90", v, None if v is None else v >= 0.90)
    return rows


def _print(results: dict[str, Any], tasks: list[str]) -> None:
    for name in tasks:
        r = results.get(name, {})
        print(f"\n== {name} ({r.get('arch')}, {results['settings']['preset']}) ==")
        if "error" in r:
            print("  failed:", r["error"])
            continue
        for fig, target, value, ok in _checks(name, r):
            v = f"{value:.3f}" if isinstance(value, float) else str(value)
            mark = {True: "met", False: "NOT met", None: "not measured"}[ok]
            if target == "report":
                mark = "(no target)" if value is not None else "not measured"
            print(f"  {fig:<36} {v:>10}  {target:<9} {mark}")


def _setting_row(result: dict[str, Any], task: str) -> dict[str, Any]:
    """The figures that compare twin settings, from one run's result file (or a merged one: the
    task's own record of its run)."""
    r, m = result[task], result[task]["metrics"]
    run = result["runs"][task] if "runs" in result else result
    return {
        "command": run["command"],
        "threads": run["settings"].get("threads"),
        "precision": r.get("precision"),
        "fit_wall_s": r.get("fit_wall_s"),
        "readback_r2": m.get("readback_r2"),
        "alignment_r2": m.get("alignment_r2"),
        "reconstruction_ssim": m.get("reconstruction_ssim"),
        "reconstruction_edges": m.get("reconstruction_edges"),
        "rule_factor_first": r.get("rule_factor_first"),
        "fid": m.get("fid"),
        "fidelity": m.get("fidelity"),
        "reconstruction_fidelity": m.get("reconstruction_fidelity"),
        "sampled_fidelity": m.get("sampled_fidelity"),
        "oracle_agreement": r.get("oracle", {}).get("agreement"),
    }


def merge(files: list[Path], settings: list[Path], out: Path) -> int:
    """Tasks taken from each result file into ``out``; ``settings``: runs of other twin settings,
    summarised under ``settings`` (each row with its command)."""
    merged: dict[str, Any] = {"merged_from": [str(f) for f in files], "runs": {}}
    for f in files:
        r = json.loads(f.read_text())
        for name in TASKS:
            if name in r:
                merged[name] = r[name]
                merged["runs"][name] = (
                    r["runs"][name]  # an earlier merged file: its record of the run
                    if "runs" in r
                    else {k: r[k] for k in ("command", "machine", "settings")}
                )
    o = merged.get("pendulum", {}).get("oracle")
    if o and "pendulum_angle_direct_over_total" not in o:  # a run from before the ratios
        tot, dire = o["mean_importance"], o["mean_direct"]
        for a in ("pendulum_angle", "light_angle"):
            o[f"{a}_total_over_mediator"] = tot[a] / tot["shadow_length"]
            o[f"{a}_direct_over_total"] = dire[a] / tot[a]
        o["ratios_from"] = "the rounded per-factor means (mean over images, 5 decimals)"
    merged["settings"] = {"preset": "fast"}
    # Rows of other settings, per task; rows already in a merged input file are kept (their
    # own result files may be gone), new ones are appended.
    for name in TASKS:
        key = f"{name}_settings"
        rows = [row for f in files for row in json.loads(f.read_text()).get(key, [])]
        for f in settings:
            r = json.loads(f.read_text())
            if name in r and "metrics" in r[name]:
                rows.append(_setting_row(r, name))
        if rows:
            merged[key] = rows
    atomic_write_json(out, merged)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="pendulum,shapes")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--config", default=None, help="JSON overrides of the preset")
    ap.add_argument(
        "--calibrated", action="store_true", help="explain with calibrated interventions"
    )
    ap.add_argument("--tag", default="", help="name of this setting (separate runs in --work)")
    ap.add_argument("--arch", default="resnet18", choices=sorted(ARCHS))
    ap.add_argument("--work", type=Path, default=Path("/tmp/glance-bench-resolution"))
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--n", type=int, default=5000, help="images per dataset (80%% train)")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--n-explain", type=int, default=64)
    ap.add_argument("--eval-images", type=int, default=1000)
    ap.add_argument("--resamples", type=int, default=20)
    ap.add_argument(
        "--knowledge",
        choices=("none", "truth"),
        default="truth",
        help="truth: the data's DAG among the contexts as required edges",
    )
    ap.add_argument("--mechanism", default="mlp", help="SCM mechanism (linear | mlp | gbm)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="glance threads (default: auto)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        help="merge the tasks of these result files into --out and exit",
    )
    ap.add_argument("--settings-from", type=Path, nargs="*", default=[],
                    help="with --merge: runs of other settings to summarise, per task")  # fmt: skip
    args = ap.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.settings_from, args.out)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "machine": machine_info(),
        "settings": {k: str(v) for k, v in vars(args).items()},
    }
    tasks = args.tasks.split(",")
    for name in tasks:
        t0 = time.perf_counter()
        try:
            results[name] = TASKS[name](args)
        except Exception as exc:  # report and go on
            logger.error("task %s failed: %s", name, exc)
            results[name] = {"error": f"{type(exc).__name__}: {exc}",
                             "traceback": traceback.format_exc(limit=8)}  # fmt: skip
        results[name]["wall_s"] = time.perf_counter() - t0
        results[name]["checks"] = [list(c) for c in _checks(name, results[name])]
        atomic_write_json(args.out, results)
    _print(results, tasks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
