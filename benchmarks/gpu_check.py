"""GPU check (issue 12): generator-training throughput, bf16 against fp32, and the paper fit's cost.

Ready to run on a lent H100/H200 in under 8 minutes; ``--cpu`` runs the same on the CPU
(``--cpu --quick`` is the smoke check). Three parts, each under its own time budget:

1. **throughput**: images/s of the generator stage's training step, ``Trainer.train_step`` as
   the fit runs it (G and D forward and backward with the real losses, the frozen classifier and
   encoder, lazy R1 and the disentanglement penalty at their intervals, the EMA update), with
   the ``paper`` preset's generator and discriminator widths at 64, 128 and 256 px (batch 32,
   the preset's), in fp32 and under bf16 autocast (``TrainConfig.mixed_precision``; fp16 where
   the GPU has no bf16). The generator is channels_last always; the discriminator and classifier
   run in both layouts. The FLOPs of the step are counted by ``FlopCounterMode`` on the step
   itself (a window of steps that doubles as warm-up), then the same pattern of steps is timed;
   the rate is compared with the device's bf16 matmul peak measured in the same run (a large
   bf16 matmul timed with CUDA events; the fp32 peak beside it).
2. **fit**: a short fit at 64 px (``glance data pendulum``; small-cnn trained with glance's
   ``train_classifier``; the ``fast`` preset with fewer steps) in fp32 and in bf16 on the same
   seed, ``evaluate()`` side by side and the largest difference of the headline figures
   (fidelities, R², SSIM, MIG, DCI; target <= 0.02). A repeat of the fp32 fit on the same seed
   (when the budget allows) shows the device's own run-to-run difference.
3. **paper fit at 64 px**: wall time extrapolated from (1), the ``paper`` preset's step counts
   times the measured encoder and generator step times (target <= 1 GPU-hour).

Nothing is assumed: a figure that was not measured (budget, no device) is missing, with the
reason. Results: a table on stdout and ``benchmarks/results/gpu_check.json`` (``--json``),
which says on which device every figure was measured.

Usage::

    .venv/bin/python benchmarks/gpu_check.py                       # CUDA device, < 8 min
    GLANCE_THREADS=1 .venv/bin/python benchmarks/gpu_check.py --cpu --quick   # CPU smoke check

``--out DIR`` holds the generated data (default ``/tmp/glance-gpu-check``).

Multi-GPU: glance trains data-parallel through ``torchrun`` and DistributedDataParallel
(``src/glance/training/distributed.py``): ``torchrun --nproc_per_node=K -m glance.cli.main fit
--device cuda --preset paper ...`` starts K processes, each taking its share of every global
batch (NCCL). This script measures one device; a K-GPU fit's generator stage runs at up to K
times the single-device images/s below, less the gradient all-reduce.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
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

RESULTS = ROOT / "benchmarks" / "results" / "gpu_check.json"
CONTEXTS = ("pendulum_angle", "light_angle")
#: Figures compared between the fp32 and the bf16 fit: fidelities, R², Spearman, SSIM, MIG, DCI.
HEADLINE = (
    "fidelity",
    "reconstruction_fidelity",
    "sampled_fidelity",
    "alignment_r2",
    "generated_alignment",
    "readback_r2",
    "reconstruction_ssim",
    "mig",
    "dci",
)
TARGETS = {"max_metric_difference": 0.02, "paper_fit_hours": 1.0, "total_seconds": 8 * 60}

# -------------------------------------------------------------------------------------- setup
SETTINGS = {
    "full": {
        "resolutions": (64, 128, 256),
        "batch": 32,
        "window": 16,  # steps counted (warm-up), then as many timed: one lazy-R1 cycle
        "peak_n": 8192,
        "fit_images": 5000,
        "fit_steps": 400,
        "classifier_epochs": 3,
        "eval_images": 1000,
        "fit_batches": {},  # the fast preset's own
        "budgets": {"throughput": 180, "fit": 200},
    },
    "quick": {
        "resolutions": (64,),
        "batch": 4,
        "window": 1,
        "peak_n": 1024,
        "fit_images": 400,
        "fit_steps": 12,
        "classifier_epochs": 1,
        "eval_images": 80,
        "fit_batches": {"encoder_batch": 64, "generator_batch": 8},
        "budgets": {"throughput": 150, "fit": 240},
    },
}


class Budget:
    """Seconds left for one part; a part never starts work it cannot expect to finish."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.start = float(seconds), time.perf_counter()

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)

    def allows(self, predicted: float) -> bool:
        return predicted <= self.left()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"type": device.type, "torch": torch.__version__}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            name=props.name,
            capability=f"{props.major}.{props.minor}",
            memory_gib=round(props.total_memory / 1024**3, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            bf16_supported=torch.cuda.is_bf16_supported(),
            matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
            cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
            cudnn_benchmark=torch.backends.cudnn.benchmark,
        )
    else:
        info.update(name=platform.processor() or platform.machine(), cpus=os.cpu_count())
    info["torch_threads"] = torch.get_num_threads()
    return info


def mixed_mode(device: torch.device) -> tuple[str, str]:
    """(label, ``mixed_precision``) of the reduced precision this device trains in."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "fp16", "fp16"
    return "bf16", "bf16"


# -------------------------------------------------------------------------------------- peaks
def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls (CUDA events on a GPU), after one warm-up call."""
    fn()
    sync(device)
    out = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return out


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 10) -> float:
    """Best FLOP/s of an ``n``-square matmul in ``dtype`` on ``device``."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / min(timed(lambda: torch.mm(a, b), device, repeats))


def peaks(device: torch.device, n: int) -> dict[str, Any]:
    bf16 = matmul_peak(device, torch.bfloat16, n)
    fp32 = matmul_peak(device, torch.float32, n)
    return {
        "bf16_matmul_flops": bf16,
        "fp32_matmul_flops": fp32,
        "matmul_n": n,
        "timer": "CUDA events" if device.type == "cuda" else "perf_counter",
        "note": "best of 10 after a warm-up; fp32 with torch's matmul TF32 setting as recorded",
    }


# --------------------------------------------------------------------------------- throughput
def build_trainer(
    resolution: int,
    mixed_precision: str,
    channels_last: bool,
    device: torch.device,
    *,
    batch: int,
    encoder_steps: int,
    generator_steps: int,
    work: Path,
    preset: str = "paper",
) -> Any:
    """A :class:`~glance.training.loop.Trainer` with the ``preset``'s networks and losses at
    ``resolution`` on synthetic data (random images, a random-weight small-cnn classifier)."""
    from glance.classifiers import ClassifierAdapter
    from glance.classifiers.architectures import build_classifier
    from glance.data import ArrayDataset
    from glance.estimator import build_networks
    from glance.training.config import resolve_config
    from glance.training.distributed import DistContext
    from glance.training.loop import Parts, TrainData, Trainer, make_ema

    train = {
        "encoder_steps": encoder_steps,
        "generator_steps": generator_steps,
        "joint_steps": 0,
        "generator_batch": batch,
        "mixed_precision": mixed_precision,
    }
    config = resolve_config(preset, {"train": train})
    rng = np.random.default_rng(0)
    n = max(256, 4 * batch)
    images = rng.integers(0, 256, (n, 3, resolution, resolution), dtype=np.uint8)
    attributes = rng.normal(size=(n, len(CONTEXTS)))
    data = ArrayDataset(images, attributes=attributes, attribute_names=CONTEXTS)
    torch.manual_seed(0)
    net = build_classifier("small-cnn", 2, 3, (resolution, resolution)).eval().to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    adapter = ClassifierAdapter(net, in_channels=3, input_size=resolution)
    with torch.no_grad():
        outs = [
            adapter.forward_features(data.load_images(np.arange(i, min(i + 64, n))).to(device))
            for i in range(0, n, 64)
        ]
    logits = torch.cat([o[0].float().cpu() for o in outs])
    feats = torch.cat([o[1].float().cpu() for o in outs])
    nets = build_networks(config, len(CONTEXTS), adapter.feature_shape, 2, data.image_shape)
    flat = feats.transpose(0, 1).reshape(feats.shape[1], -1)
    nets["encoder"].set_feature_stats(flat.mean(1), flat.std(1))
    nets = {k: v.to(device) for k, v in nets.items()}
    if channels_last:
        nets["discriminator"] = nets["discriminator"].to(memory_format=torch.channels_last)
    parts = Parts(
        encoder=nets["encoder"],
        head=nets["head"],
        generator=nets["generator"],
        generator_ema=make_ema(nets["generator"]),
        discriminator=nets["discriminator"],
        classify=adapter.forward_features,
    )
    contexts = torch.from_numpy(data.attributes.astype(np.float32))
    return Trainer(
        parts,
        TrainData(dataset=data, features=feats, logits=logits, contexts=contexts),
        config,
        checkpoint_dir=work / "checkpoints",
        metrics_path=None,
        seed=0,
        fingerprint="gpu-check",
        dist=DistContext(0, 1, device),
        quiet=True,
    )


class _GlobalOnly:
    """Stands in for FlopCounterMode's module tracker: every FLOP counts under "Global"."""

    parents = frozenset({"Global"})

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def flop_counter() -> Any:
    """``FlopCounterMode`` without its per-module tracking, whose backward hooks make
    ``autograd.grad`` on a leaf (the R1 penalty) fail ("A leaf node was passed to
    _will_engine_execute_node"); the total is the same."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    return counter


def count_and_time(trainer: Any, first: int, window: int, cycle: int) -> dict[str, float]:
    """FLOPs of ``window`` steps from ``first`` (the warm-up), then the wall time of the same
    pattern of steps a whole number of lazy-regularisation cycles later.

    A window of whole cycles holds the lazy R1 and disentanglement steps in proportion; a shorter
    one starts one step later, so that both hold plain steps only.
    """
    device = trainer.device
    start = first + (0 if window % cycle == 0 else 1)
    with flop_counter() as counter:
        for step in range(start, start + window):
            trainer.train_step(step)
    sync(device)
    shift = cycle * math.ceil(window / cycle)
    t = time.perf_counter()
    for step in range(start + shift, start + shift + window):
        trainer.train_step(step)
    sync(device)
    seconds = time.perf_counter() - t
    return {"flops": float(counter.get_total_flops()), "seconds": seconds, "steps": window}


def steps_needed(window: int, cycle: int) -> int:
    """Steps of a stage that :func:`count_and_time` runs through (the last index + 1)."""
    return (0 if window % cycle == 0 else 1) + cycle * math.ceil(window / cycle) + window


def throughput_plan(resolutions: tuple[int, ...], mixed: str) -> list[tuple[int, str, bool]]:
    """(resolution, precision, channels_last) in order of importance: the fastest expected
    setting at every size first, then fp32, then the other layouts."""
    plan = [(r, mixed, True) for r in resolutions]
    plan += [(r, "fp32", False) for r in resolutions]
    plan += [(r, mixed, False) for r in resolutions]
    plan += [(r, "fp32", True) for r in resolutions]
    return plan


def _predict(done: list[dict[str, Any]], resolution: int, steps: int) -> float:
    """Seconds a new setting will take, from the slowest step measured at or below its size."""
    per_step = 0.0
    for row in done:
        if "step_seconds" in row and row["resolution"] <= resolution:
            scale = (resolution / row["resolution"]) ** 2
            per_step = max(per_step, row["step_seconds"] * scale)
    return 1.5 * per_step * steps + 5.0


def measure_throughput(
    device: torch.device, s: dict[str, Any], peak: dict[str, Any], budget: Budget
) -> dict[str, Any]:
    from glance.training.config import PRESETS

    label, mode = mixed_mode(device)
    loss = PRESETS.get("paper").loss
    cycle = math.lcm(loss.r1_interval, loss.disentangle_interval)
    window = s["window"]
    rows: list[dict[str, Any]] = []
    for resolution, precision, cl in throughput_plan(s["resolutions"], label):
        row: dict[str, Any] = {
            "label": f"{resolution}px {precision} {'channels_last' if cl else 'default'}",
            "resolution": resolution,
            "precision": precision,
            "layout": "channels_last (G; D and classifier weights too)"
            if cl
            else "as the fit builds it (G channels_last, D and classifier NCHW weights)",
            "batch": s["batch"],
        }
        rows.append(row)
        enc = 2 * window if resolution == 64 else 0  # the encoder step does not depend on it
        predicted = _predict(rows, resolution, 2 * window + enc)
        if not budget.allows(predicted):
            row["skipped"] = f"budget: ~{predicted:.0f} s needed, {budget.left():.0f} s left"
            continue
        try:
            row.update(_measure_one(device, s, resolution, precision, mode, cl, enc, cycle))
        except torch.cuda.OutOfMemoryError as exc:  # a real limit: report it, go on
            row["skipped"] = f"out of memory: {str(exc).splitlines()[0]}"
        except Exception as exc:  # recorded with its traceback; the other settings still run
            row["skipped"] = f"error: {type(exc).__name__}: {exc}"
            row["traceback"] = traceback.format_exc()
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        if "images_per_s" in row:
            rate = row["flops_per_step"] / row["step_seconds"]
            row["flops_per_s"] = rate
            row["fraction_of_bf16_peak"] = rate / peak["bf16_matmul_flops"]
            row["fraction_of_fp32_peak"] = rate / peak["fp32_matmul_flops"]
        print(f"  {_row_text(row)}", flush=True)
    return {
        "rows": rows,
        "lazy_cycle_steps": cycle,
        "regularisation_in_proportion": window % cycle == 0,
        "window_steps": window,
        "preset_widths": "paper",
        "classifier": "small-cnn (random weights)",
    }


def _measure_one(
    device: torch.device,
    s: dict[str, Any],
    resolution: int,
    precision: str,
    mode: str,
    cl: bool,
    encoder_steps: int,
    cycle: int,
) -> dict[str, Any]:
    window = s["window"]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="glance-gpu-check-") as tmp:
        trainer = build_trainer(
            resolution,
            "off" if precision == "fp32" else mode,
            cl,
            device,
            batch=s["batch"],
            encoder_steps=encoder_steps,
            generator_steps=steps_needed(window, cycle),
            work=Path(tmp),
        )
        out: dict[str, Any] = {
            "autocast": trainer.precision.enabled,
            "autocast_dtype": str(trainer.precision.dtype) if trainer.precision.enabled else None,
        }
        if encoder_steps:
            enc = count_and_time(trainer, 0, encoder_steps // 2, encoder_steps // 2)
            out["encoder_step_seconds"] = enc["seconds"] / enc["steps"]
            out["encoder_batch"] = trainer.config.train.encoder_batch
        trainer.ensure_mixture()  # once per fit (latents of every image): not in the steps
        gen = count_and_time(trainer, encoder_steps, window, cycle)
    out["step_seconds"] = gen["seconds"] / gen["steps"]
    out["images_per_s"] = s["batch"] / out["step_seconds"]
    out["flops_per_step"] = gen["flops"] / gen["steps"]
    out["flops_per_image_step"] = out["flops_per_step"] / s["batch"]
    out["wall_seconds"] = time.perf_counter() - t0
    if device.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 1024**3
    return out


def _row_text(row: dict[str, Any]) -> str:
    if "skipped" in row:
        return f"{row['label']:<32} skipped ({row['skipped']})"
    return (
        f"{row['label']:<32} {row['images_per_s']:>9.1f} images/s  "
        f"{row['flops_per_s'] / 1e12:>7.2f} TFLOP/s  "
        f"{100 * row['fraction_of_bf16_peak']:>5.1f}% of bf16 peak"
    )


# ---------------------------------------------------------------------------------------- fit
def fit_data(out: Path, n: int) -> Path:
    from glance.data.pendulum import generate_pendulum

    path = out / f"pendulum-64-n{n}-s0"
    if not (path / "MANIFEST.json").is_file():
        generate_pendulum(path, n=n, size=64, seed=0)
    return path


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric headline figures, nested ones as ``key.sub``."""
    out: dict[str, float] = {}
    for key in HEADLINE:
        value = metrics.get(key)
        items = value.items() if isinstance(value, dict) else [("", value)]
        for sub, v in items:
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out[f"{key}.{sub}" if sub else key] = float(v)
    return out


def fit_once(
    clf: Any, train: Any, test: Any, device: torch.device, mode: str, s: dict[str, Any], seed: int
) -> dict[str, Any]:
    import glance

    steps = s["fit_steps"]
    config = {
        "train": {
            "encoder_steps": steps,
            "generator_steps": steps,
            "eval_images": s["eval_images"],
            "mixed_precision": mode,
            **s["fit_batches"],
        }
    }
    est = glance.Glance(
        copy.deepcopy(clf),
        contexts=CONTEXTS,
        preset="fast",
        config=config,
        random_state=seed,
        device=str(device),
        quiet=True,
    )
    t = time.perf_counter()
    est.fit(train)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    metrics = est.evaluate(test, n_images=s["eval_images"], random_state=0)
    return {
        "mixed_precision": mode,
        "fit_seconds": fit_s,
        "evaluate_seconds": time.perf_counter() - t,
        "headline": flat_metrics(metrics),
        "fid": metrics.get("fid"),
        "kid": metrics.get("kid"),
    }


def compare(a: dict[str, float], b: dict[str, float]) -> dict[str, Any]:
    keys = sorted(set(a) & set(b))
    diffs = {k: abs(a[k] - b[k]) for k in keys}
    worst = max(diffs, key=diffs.get) if diffs else None
    return {
        "differences": diffs,
        "largest": None if worst is None else {"metric": worst, "difference": diffs[worst]},
        "only_in_one": sorted(set(a) ^ set(b)),
    }


def fit_compare(
    device: torch.device, s: dict[str, Any], out: Path, budget: Budget, seed: int
) -> dict[str, Any]:
    from glance.classifiers.training import train_classifier
    from glance.data import load_dataset

    label, mode = mixed_mode(device)
    t = time.perf_counter()
    path = fit_data(out, s["fit_images"])
    train, test = load_dataset(path, "train"), load_dataset(path, "test")
    clf = train_classifier(train, "small-cnn", epochs=s["classifier_epochs"], seed=seed, quiet=True)
    res: dict[str, Any] = {
        "data": str(path),
        "contexts": list(CONTEXTS),
        "preset": "fast",
        "steps": {"encoder": s["fit_steps"], "generator": s["fit_steps"]},
        "seed": seed,
        "classifier": {"arch": "small-cnn", "epochs": s["classifier_epochs"], "device": "cpu"},
        "setup_seconds": time.perf_counter() - t,
        "runs": {},
    }
    for name, mp in (("fp32", "off"), (label, mode), ("fp32_repeat", "off")):
        spent = [r["fit_seconds"] + r["evaluate_seconds"] for r in res["runs"].values()]
        predicted = 1.3 * max(spent) if spent else 0.0
        if not budget.allows(predicted):
            res["runs"][name] = {"skipped": f"budget: ~{predicted:.0f} s, {budget.left():.0f} left"}
            continue
        print(f"  fit {name} ...", flush=True)
        res["runs"][name] = fit_once(clf, train, test, device, mp, s, seed)
    runs = res["runs"]
    res["reduced_precision"] = label
    for key, other in (("comparison", label), ("repeat_comparison", "fp32_repeat")):
        if "headline" in runs["fp32"] and "headline" in runs.get(other, {}):
            res[key] = compare(runs["fp32"]["headline"], runs[other]["headline"])
            res[key]["between"] = ["fp32", other]
    return res


# ------------------------------------------------------------------------------- extrapolation
def extrapolate(throughput: dict[str, Any]) -> dict[str, Any]:
    """Wall time of the paper preset's fit at 64 px from the measured step times."""
    from glance.training.config import PRESETS

    t = PRESETS.get("paper").train
    out: dict[str, Any] = {
        "steps": {
            "encoder": t.encoder_steps,
            "generator": t.generator_steps,
            "joint": t.joint_steps,
            "generator_batch": t.generator_batch,
            "encoder_batch": t.encoder_batch,
        },
        "model": "encoder_steps x encoder step + generator_steps x generator step + joint_steps "
        "x (encoder step + generator step); a generator step at the preset's batch = batch / "
        "measured images/s. Not included: classifier features of the training set, the "
        "mixture fit, checkpoints, evaluation.",
        "by_setting": {},
    }
    for row in throughput.get("rows", []):
        if row["resolution"] != 64 or "encoder_step_seconds" not in row:
            continue
        gen = t.generator_batch / row["images_per_s"]
        enc = row["encoder_step_seconds"]
        seconds = t.encoder_steps * enc + t.generator_steps * gen + t.joint_steps * (enc + gen)
        out["by_setting"][row["label"]] = {
            "generator_step_seconds": gen,
            "encoder_step_seconds": enc,
            "hours": seconds / 3600,
            "measured_batch": row["batch"],
        }
    if out["by_setting"]:
        best = min(out["by_setting"], key=lambda k: out["by_setting"][k]["hours"])
        out["best"] = {"setting": best, "hours": out["by_setting"][best]["hours"]}
    return out


# ------------------------------------------------------------------------------------- report
def _fit_lines(fit: dict[str, Any]) -> list[str]:
    if "runs" not in fit:
        return [f"fit: {fit.get('error', 'not run')}"]
    runs = fit["runs"]
    names = [n for n in runs if "headline" in runs[n]]
    lines = ["fit at 64 px (fast preset, fewer steps), same seed:"]
    lines.append(f"  {'metric':<34}" + "".join(f"{n:>13}" for n in names))
    keys = sorted(set().union(*(runs[n]["headline"] for n in names))) if names else []
    for k in keys:
        vals = [runs[n]["headline"].get(k) for n in names]
        cells = ["n/a" if v is None else f"{v:.4f}" for v in vals]
        lines.append(f"  {k:<34}" + "".join(f"{c:>13}" for c in cells))
    lines.append(
        f"  {'fit seconds':<34}" + "".join(f"{runs[n]['fit_seconds']:>13.1f}" for n in names)
    )
    lines += [f"  {n}: {r['skipped']}" for n, r in runs.items() if "skipped" in r]
    for key in ("comparison", "repeat_comparison"):
        w = fit.get(key, {}).get("largest")
        if w is not None:
            a, b = fit[key]["between"]
            lines.append(f"  largest |{a} - {b}|: {w['difference']:.4f} ({w['metric']})")
    return lines


def table(res: dict[str, Any]) -> str:
    dev, pk = res["device"], res["peaks"]
    lines = [
        f"device: {dev['type']} {dev.get('name', '')} (torch {dev['torch']}, "
        f"{dev['torch_threads']} threads)",
        f"matmul peak: bf16 {pk['bf16_matmul_flops'] / 1e12:.3f} TFLOP/s, "
        f"fp32 {pk['fp32_matmul_flops'] / 1e12:.3f} TFLOP/s",
        "generator-stage training step (paper widths):",
    ]
    thr = res.get("throughput", {})
    lines += [f"  {_row_text(r)}" for r in thr.get("rows", [])]
    if "error" in thr:
        lines.append(f"  throughput: {thr['error']}")
    lines += _fit_lines(res.get("fit", {}))
    best = res["paper_fit_64px"].get("best")
    if best is not None:
        lines.append(
            f"paper fit at 64 px on this {res['device']['type']}, extrapolated: "
            f"{best['hours']:.2f} h ({best['setting']}; GPU target <= "
            f"{TARGETS['paper_fit_hours']} h)"
        )
    else:
        lines.append("paper fit at 64 px: not extrapolated (no 64 px step measured)")
    lines.append(
        f"total {res['elapsed_seconds']:.0f} s; GPU figures measured: {res['gpu_measured']}"
    )
    return "\n".join(lines)


def _targets(res: dict[str, Any]) -> dict[str, Any]:
    """Which targets were met (``None``: not measured; the time targets are judged on a GPU)."""
    largest = res.get("fit", {}).get("comparison", {}).get("largest")
    best = res["paper_fit_64px"].get("best")
    gpu = res["gpu_measured"]
    return {
        "max_metric_difference": None
        if largest is None
        else largest["difference"] <= TARGETS["max_metric_difference"],
        "paper_fit_hours": None
        if best is None or not gpu
        else best["hours"] <= TARGETS["paper_fit_hours"],
        "total_seconds": None if not gpu else res["elapsed_seconds"] <= TARGETS["total_seconds"],
        "values": TARGETS,
    }


@contextlib.contextmanager
def part(res: dict[str, Any], name: str) -> Iterator[None]:
    """Run one part; an unexpected error is recorded (with its traceback) and the rest runs."""
    t = time.perf_counter()
    try:
        yield
    except Exception as exc:  # reported in the JSON: the other parts' figures still count
        res[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        print(f"{name} failed: {exc}", flush=True)
    res.setdefault("part_seconds", {})[name] = time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu", action="store_true", help="run on the CPU (no GPU figures)")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke check")
    p.add_argument("--out", type=Path, default=Path("/tmp/glance-gpu-check"), help="data folder")
    p.add_argument("--json", type=Path, default=RESULTS, help="results file")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("no CUDA device on this machine; run with --cpu (--quick for a smoke check)")
        return 2
    threads = fixed_threads()
    if threads:
        torch.set_num_threads(threads)
    device = torch.device("cpu" if args.cpu else "cuda")
    s = SETTINGS["quick" if args.quick else "full"]
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res: dict[str, Any] = {
        "benchmark": "GPU path check (issue 12)",
        "command": "benchmarks/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "device": device_info(device),
        "gpu_measured": device.type == "cuda",
        "settings": dict(s),
    }
    if device.type != "cuda":
        res["note"] = (
            "GPU figures were not measured on this machine: every figure in this file was "
            f"measured on the CPU ({res['device']['name']}, {torch.get_num_threads()} thread(s))"
            + (" with the --quick sizes (a smoke check of the code path)" if args.quick else "")
            + ". Run benchmarks/gpu_check.py on a CUDA machine for the GPU figures."
        )
    print(f"device: {device} ({res['device'].get('name')})", flush=True)
    if "note" in res:
        print(res["note"], flush=True)
    res["peaks"] = peaks(device, s["peak_n"])
    print("throughput ...", flush=True)
    with part(res, "throughput"):
        res["throughput"] = measure_throughput(
            device, s, res["peaks"], Budget(s["budgets"]["throughput"])
        )
    print("fit fp32 vs reduced precision ...", flush=True)
    with part(res, "fit"):
        res["fit"] = fit_compare(device, s, args.out, Budget(s["budgets"]["fit"]), args.seed)
    res["paper_fit_64px"] = extrapolate(res.get("throughput", {}))
    res["elapsed_seconds"] = time.perf_counter() - t0
    res["targets"] = _targets(res)
    res["machine"] = machine_info()
    print(table(res))
    atomic_write_json(args.json, res)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
