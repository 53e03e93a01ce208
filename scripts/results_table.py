"""Rebuild the README's results table from the JSON files the benchmarks wrote.

Every number in the table is read from ``benchmarks/results/*.json``; nothing is typed in by hand.
Run after the benchmarks: ``.venv/bin/python scripts/results_table.py`` (rewrites the block between
the ``results-table`` markers in README.md).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- results-table -->", "<!-- /results-table -->"


def _get(d: dict, path: str):
    for key in path.split("."):
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def _load(name: str) -> dict | None:
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.is_file() else None


def _check(value, target: str) -> str:
    m = re.match(r"\s*(>=|<=|>|<)\s*([-\d.]+)", target)
    if value is None or not m or not isinstance(value, (int, float)):
        return ""
    op, t = m.group(1), float(m.group(2))
    ok = {">=": value >= t, "<=": value <= t, ">": value > t, "<": value < t}[op]
    return "yes" if ok else "**no**"


# (area, figure, json file, key path, target)
KEYED = [
    ("data", "generated thickness vs target, Pearson r", "data", "thickness_r", ">= 0.97"),
    (
        "data",
        "generated thickness median abs error (px)",
        "data",
        "thickness_median_abs_err_px",
        "<= 0.15",
    ),
    ("data", "generated intensity vs target, Pearson r", "data", "intensity_r", ">= 0.99"),
    ("data", "morphometrics throughput (images/s)", "data", "measure_images_per_s", ">= 64"),
    ("data", "10,000 Morpho-MNIST digits generated (s)", "data", "morpho_generation_s", "<= 180"),
    ("data", "10,000 causal-shapes images at 32 px (s)", "data", "shapes_generation_s", "<= 60"),
    (
        "classifier",
        "small-cnn held-out digit accuracy",
        "classifier",
        "results.digits.test_accuracy",
        ">= 0.98",
    ),
    (
        "classifier",
        "small-cnn training time (s)",
        "classifier",
        "results.digits.train_wall_s",
        "<= 180",
    ),
    (
        "classifier",
        "feature caching, 10,000 digits (s)",
        "classifier",
        "results.cache.cache_wall_s",
        "<= 30",
    ),
]
for preset, tgt in (
    ("fast", {"fidelity": ">= 0.95", "alignment": ">= 0.8", "fit": "<= 300"}),
    ("default", {"fidelity": ">= 0.97", "alignment": ">= 0.9", "fit": "<= 1200"}),
):
    p = f"results.{preset}"
    KEYED += [
        (
            "surrogate",
            f"{preset}: fidelity S(E(h(x))) vs f(x)",
            "surrogate",
            f"{p}.fidelity",
            tgt["fidelity"],
        ),
        (
            "surrogate",
            f"{preset}: reconstruction fidelity",
            "surrogate",
            f"{p}.reconstruction_fidelity",
            ">= 0.90" if preset == "default" else "(info)",
        ),
        (
            "surrogate",
            f"{preset}: sampled fidelity",
            "surrogate",
            f"{p}.sampled_fidelity",
            ">= 0.90" if preset == "default" else "(info)",
        ),
        (
            "surrogate",
            f"{preset}: alignment R² thickness",
            "surrogate",
            f"{p}.alignment_r2.thickness",
            tgt["alignment"],
        ),
        (
            "surrogate",
            f"{preset}: alignment R² intensity",
            "surrogate",
            f"{p}.alignment_r2.intensity",
            tgt["alignment"],
        ),
        (
            "surrogate",
            f"{preset}: generated alignment thickness (Spearman)",
            "surrogate",
            f"{p}.generated_alignment.thickness",
            ">= 0.8" if preset == "default" else "(info)",
        ),
        (
            "surrogate",
            f"{preset}: generated alignment intensity (Spearman)",
            "surrogate",
            f"{p}.generated_alignment.intensity",
            ">= 0.8" if preset == "default" else "(info)",
        ),
        ("surrogate", f"{preset}: fit wall time (s)", "surrogate", f"{p}.fit_seconds", tgt["fit"]),
    ]

# A user's torchvision ResNet-18 at 64 px RGB (benchmarks/bench_resolution.py, issue 12).
KEYED += [
    ("64 px", "pendulum: ResNet-18 test accuracy", "resolution",
     "pendulum.classifier.test_accuracy", "(info)"),
    ("64 px", "pendulum: fast fit wall (s)", "resolution", "pendulum.fit_wall_s", "<= 1200"),
    ("64 px", "pendulum: fidelity", "resolution", "pendulum.metrics.fidelity", ">= 0.95"),
    ("64 px", "pendulum: reconstruction fidelity", "resolution",
     "pendulum.metrics.reconstruction_fidelity", ">= 0.90"),
    ("64 px", "pendulum: sampled fidelity", "resolution",
     "pendulum.metrics.sampled_fidelity", ">= 0.85"),
    ("64 px", "pendulum: reconstruction SSIM", "resolution",
     "pendulum.metrics.reconstruction_ssim", ">= 0.75"),
    ("64 px", "pendulum: reconstruction edges (report floor 0.60)", "resolution",
     "pendulum.metrics.reconstruction_edges", ">= 0.90"),
]
for _c in ("pendulum_angle", "light_angle", "shadow_length", "shadow_position"):
    KEYED += [
        ("64 px", f"pendulum: alignment R² {_c}", "resolution",
         f"pendulum.metrics.alignment_r2.{_c}", ">= 0.80"),
        ("64 px", f"pendulum: read-back R² {_c} from G(E(x))", "resolution",
         f"pendulum.metrics.readback_r2.{_c}", ">= 0.80"),
    ]
KEYED += [
    ("64 px", "pendulum: mediator first by direct importance", "resolution",
     "pendulum.mediator_first_direct", ">= 0.90"),
    ("64 px", "pendulum: mediator first by direct importance (oracle says)", "resolution",
     "pendulum.oracle.mediator_first_direct", "(info)"),
    ("64 px", "pendulum: mediator first by total importance (oracle says)", "resolution",
     "pendulum.oracle.mediator_first", "(info)"),
    ("64 px", "pendulum: mediator first by total importance", "resolution",
     "pendulum.mediator_first", "(info)"),
    ("64 px", "pendulum: pendulum_angle total / mediator", "resolution",
     "pendulum.pendulum_angle_total_over_mediator", ">= 0.30"),
    ("64 px", "pendulum: light_angle total / mediator", "resolution",
     "pendulum.light_angle_total_over_mediator", ">= 0.30"),
    ("64 px", "pendulum: pendulum_angle direct / total", "resolution",
     "pendulum.pendulum_angle_direct_over_total", "<= 0.10"),
    ("64 px", "pendulum: light_angle direct / total", "resolution",
     "pendulum.light_angle_direct_over_total", "<= 0.10"),
    ("64 px", "pendulum: the oracle's pendulum_angle direct / total", "resolution",
     "pendulum.oracle.pendulum_angle_direct_over_total", "(info)"),
    ("64 px", "pendulum: the oracle's light_angle direct / total", "resolution",
     "pendulum.oracle.light_angle_direct_over_total", "(info)"),
    ("64 px", "pendulum: agreement with the oracle (Spearman, total)", "resolution",
     "pendulum.oracle.agreement.mean_spearman", "(info)"),
    ("64 px", "pendulum: shadow_length -> output in bootstrap resamples", "resolution",
     "pendulum.parents_of_output.shadow_length.directed_into_output", ">= 0.90"),
    ("64 px", "pendulum: pendulum_angle adjacent to output (resamples)", "resolution",
     "pendulum.parents_of_output.pendulum_angle.adjacent_to_output", "<= 0.10"),
    ("64 px", "pendulum: light_angle adjacent to output (resamples)", "resolution",
     "pendulum.parents_of_output.light_angle.adjacent_to_output", "<= 0.10"),
    ("64 px", "pendulum: the real classifier's logit vs light_angle given the shadow "
     "(partial r, real images)", "resolution",
     "pendulum.classifier_dependence.light_angle.partial_r", "(info)"),
    ("64 px", "pendulum: the real classifier's logit vs pendulum_angle given the shadow "
     "(partial r, real images)", "resolution",
     "pendulum.classifier_dependence.pendulum_angle.partial_r", "(info)"),
    ("64 px", "pendulum: counterfactual validity", "resolution",
     "pendulum.counterfactual_validity", ">= 0.90"),
    ("64 px", "pendulum, MobileNetV3-small (15 epochs): test accuracy", "resolution-mobilenet",
     "pendulum.classifier.test_accuracy", "(info)"),
    ("64 px", "pendulum, MobileNetV3-small: fast fit wall (s)", "resolution-mobilenet",
     "pendulum.fit_wall_s", "<= 1200"),
    ("64 px", "pendulum, MobileNetV3-small: fidelity", "resolution-mobilenet",
     "pendulum.metrics.fidelity", ">= 0.95"),
    ("64 px", "pendulum, MobileNetV3-small: read-back R² shadow_length (weakest)",
     "resolution-mobilenet", "pendulum.metrics.readback_r2.shadow_length", ">= 0.80"),
    ("64 px", "pendulum, MobileNetV3-small: reconstruction edges", "resolution-mobilenet",
     "pendulum.metrics.reconstruction_edges", ">= 0.90"),
    ("64 px", "pendulum, MobileNetV3-small: mediator first by direct importance",
     "resolution-mobilenet", "pendulum.mediator_first_direct", ">= 0.90"),
    ("64 px", "pendulum, MobileNetV3-small: mediator first by direct importance (oracle says)",
     "resolution-mobilenet", "pendulum.oracle.mediator_first_direct", "(info)"),
    ("64 px", "pendulum, MobileNetV3-small: pendulum_angle direct / total (the oracle's 0.54)",
     "resolution-mobilenet", "pendulum.pendulum_angle_direct_over_total", "<= 0.10"),
    ("64 px", "pendulum, MobileNetV3-small: light_angle adjacent to output (resamples)",
     "resolution-mobilenet", "pendulum.parents_of_output.light_angle.adjacent_to_output",
     "<= 0.10"),
    ("64 px", "pendulum, MobileNetV3-small: the classifier's logit vs light_angle given the "
     "shadow (partial r)", "resolution-mobilenet",
     "pendulum.classifier_dependence.light_angle.partial_r", "(info)"),
    ("64 px", "pendulum, MobileNetV3-small: counterfactual validity", "resolution-mobilenet",
     "pendulum.counterfactual_validity", ">= 0.90"),
]
# The same ResNet-18 recipe trained 15 epochs instead of 6: a network that reads the shadow, not
# the light (docs/causal-graph.md, "the output's parents follow the network").
_E15, _E15_NAME = "resolution-resnet18-e15", "pendulum, ResNet-18 (15 epochs)"
KEYED += [
    ("64 px", f"{_E15_NAME}: test accuracy", _E15, "pendulum.classifier.test_accuracy", "(info)"),
    ("64 px", f"{_E15_NAME}: fast fit wall (s)", _E15, "pendulum.fit_wall_s", "<= 1200"),
    ("64 px", f"{_E15_NAME}: fidelity", _E15, "pendulum.metrics.fidelity", ">= 0.95"),
    ("64 px", f"{_E15_NAME}: read-back R² shadow_length (weakest)", _E15,
     "pendulum.metrics.readback_r2.shadow_length", ">= 0.80"),
    ("64 px", f"{_E15_NAME}: reconstruction edges", _E15,
     "pendulum.metrics.reconstruction_edges", ">= 0.90"),
    ("64 px", f"{_E15_NAME}: the classifier's logit vs light_angle given the shadow (partial r)",
     _E15, "pendulum.classifier_dependence.light_angle.partial_r", "(info)"),
    ("64 px", f"{_E15_NAME}: shadow_length -> output in bootstrap resamples", _E15,
     "pendulum.parents_of_output.shadow_length.directed_into_output", ">= 0.90"),
    ("64 px", f"{_E15_NAME}: pendulum_angle adjacent to output (resamples)", _E15,
     "pendulum.parents_of_output.pendulum_angle.adjacent_to_output", "<= 0.10"),
    ("64 px", f"{_E15_NAME}: light_angle adjacent to output (resamples)", _E15,
     "pendulum.parents_of_output.light_angle.adjacent_to_output", "<= 0.10"),
    ("64 px", f"{_E15_NAME}: mediator first by direct importance", _E15,
     "pendulum.mediator_first_direct", ">= 0.90"),
    ("64 px", f"{_E15_NAME}: mediator first by direct importance (oracle says)", _E15,
     "pendulum.oracle.mediator_first_direct", "(info)"),
    ("64 px", f"{_E15_NAME}: pendulum_angle direct / total", _E15,
     "pendulum.pendulum_angle_direct_over_total", "<= 0.10"),
    ("64 px", f"{_E15_NAME}: the oracle's pendulum_angle direct / total", _E15,
     "pendulum.oracle.pendulum_angle_direct_over_total", "(info)"),
    ("64 px", f"{_E15_NAME}: agreement with the oracle (Spearman, total)", _E15,
     "pendulum.oracle.agreement.mean_spearman", "(info)"),
    ("64 px", f"{_E15_NAME}: counterfactual validity", _E15,
     "pendulum.counterfactual_validity", ">= 0.90"),
]
KEYED += [
    ("64 px", "shapes: rule factor first", "resolution", "shapes.rule_factor_first", ">= 0.90"),
    ("64 px", "shapes: the oracle's rule factor first", "resolution",
     "shapes.oracle.rule_factor_first", "(info)"),
    ("64 px", "shapes: read-back R² brightness (weakest readable)", "resolution",
     "shapes.metrics.readback_r2.brightness", ">= 0.80"),
    ("64 px", "shapes: read-back R² shape", "resolution", "shapes.metrics.readback_r2.shape",
     ">= 0.80"),
    ("64 px", "shapes: reconstruction SSIM", "resolution",
     "shapes.metrics.reconstruction_ssim", ">= 0.75"),
    ("64 px", "shapes: reconstruction edges (rounded shapes; report floor 0.60)", "resolution",
     "shapes.metrics.reconstruction_edges", ">= 0.90"),
    ("64 px", "shapes: a square's rotation held by the concepts (R², cos/sin 4θ)", "resolution",
     "shapes.rotation_information.square.concepts", "(info)"),
    ("64 px", "shapes: counterfactual validity", "resolution",
     "shapes.counterfactual_validity", ">= 0.90"),
    ("64 px", "shapes: fast fit wall (s)", "resolution", "shapes.fit_wall_s", "(info)"),
]  # fmt: skip

# The same two fits with mixed_precision="bf16" on this CPU's bf16 matrix units (AMX): not the
# default, as causal shapes' brightness read-back fell under its bar (docs/own-model.md).
_BF = "resolution-bf16"
KEYED += [
    ("64 px", "pendulum, bf16: fast fit wall (s)", _BF, "pendulum.fit_wall_s", "(info)"),
    ("64 px", "pendulum, bf16: FID (classifier features)", _BF, "pendulum.metrics.fid", "(info)"),
    ("64 px", "pendulum, bf16: read-back R² shadow_length (weakest)", _BF,
     "pendulum.metrics.readback_r2.shadow_length", ">= 0.80"),
    ("64 px", "pendulum, bf16: mediator first by direct importance", _BF,
     "pendulum.mediator_first_direct", ">= 0.90"),
    ("64 px", "pendulum, bf16: pendulum_angle direct / total", _BF,
     "pendulum.pendulum_angle_direct_over_total", "<= 0.10"),
    ("64 px", "pendulum, bf16: agreement with the oracle (Spearman, total)", _BF,
     "pendulum.oracle.agreement.mean_spearman", "(info)"),
    ("64 px", "shapes, bf16: fast fit wall (s)", _BF, "shapes.fit_wall_s", "(info)"),
    ("64 px", "shapes, bf16: FID (classifier features)", _BF, "shapes.metrics.fid", "(info)"),
    ("64 px", "shapes, bf16: read-back R² brightness (weakest readable)", _BF,
     "shapes.metrics.readback_r2.brightness", ">= 0.80"),
    ("64 px", "shapes, bf16: rule factor first", _BF, "shapes.rule_factor_first", ">= 0.90"),
]  # fmt: skip

# The same, the pendulum rendered at 128 px (--size 128): the fast preset with its 64 and 128 px
# overrides; the run before the 128 px one (generator batch 32) is kept beside it.
_R128 = "resolution-pendulum-128px"
_R128_B32 = "resolution-pendulum-128px-batch32"
KEYED += [
    ("128 px", "pendulum: ResNet-18 test accuracy", _R128, "pendulum.classifier.test_accuracy",
     "(info)"),
    ("128 px", "pendulum: fast fit wall in fp32 (s)", _R128, "pendulum.fit_wall_s", "(info)"),
    ("128 px", "pendulum: fast fit wall, generator batch 32 (s; another day)", _R128_B32,
     "pendulum.fit_wall_s", "(info)"),
    ("128 px", "pendulum: FID (classifier features)", _R128, "pendulum.metrics.fid", "(info)"),
    ("128 px", "pendulum: FID, generator batch 32", _R128_B32, "pendulum.metrics.fid", "(info)"),
    ("128 px", "pendulum: fidelity", _R128, "pendulum.metrics.fidelity", ">= 0.95"),
    ("128 px", "pendulum: reconstruction fidelity", _R128,
     "pendulum.metrics.reconstruction_fidelity", ">= 0.90"),
    ("128 px", "pendulum: sampled fidelity", _R128, "pendulum.metrics.sampled_fidelity",
     ">= 0.85"),
    ("128 px", "pendulum: reconstruction SSIM", _R128, "pendulum.metrics.reconstruction_ssim",
     ">= 0.75"),
    ("128 px", "pendulum: reconstruction edges (report floor 0.60)", _R128,
     "pendulum.metrics.reconstruction_edges", ">= 0.90"),
    ("128 px", "pendulum: read-back R² shadow_length (weakest)", _R128,
     "pendulum.metrics.readback_r2.shadow_length", ">= 0.80"),
    ("128 px", "pendulum: mediator first by direct importance", _R128,
     "pendulum.mediator_first_direct", ">= 0.90"),
    ("128 px", "pendulum: pendulum_angle direct / total", _R128,
     "pendulum.pendulum_angle_direct_over_total", "<= 0.10"),
    ("128 px", "pendulum: light_angle direct / total", _R128,
     "pendulum.light_angle_direct_over_total", "<= 0.10"),
    ("128 px", "pendulum: agreement with the oracle (Spearman, total)", _R128,
     "pendulum.oracle.agreement.mean_spearman", "(info)"),
    ("128 px", "pendulum: shadow_length -> output in bootstrap resamples", _R128,
     "pendulum.parents_of_output.shadow_length.directed_into_output", ">= 0.90"),
    ("128 px", "pendulum: light_angle adjacent to output (resamples)", _R128,
     "pendulum.parents_of_output.light_angle.adjacent_to_output", "<= 0.10"),
    ("128 px", "pendulum: the classifier's logit vs light_angle given the shadow (partial r)",
     _R128, "pendulum.classifier_dependence.light_angle.partial_r", "(info)"),
    ("128 px", "pendulum: counterfactual validity", _R128, "pendulum.counterfactual_validity",
     ">= 0.90"),
]  # fmt: skip

# The same fit in bf16 on this CPU's bf16 matrix units: what mixed_precision="auto" chooses there
# from 128 px (glance.training.loop.AUTO_CPU_BF16_MIN_SIDE).
_R128_BF = "resolution-pendulum-128px-bf16"
KEYED += [
    ("128 px", "pendulum, bf16 (auto on an AMX CPU): fast fit wall, strided D (s)", _R128_BF,
     "pendulum.fit_wall_s", "(info)"),
    ("128 px", "pendulum, bf16: FID (classifier features)", _R128_BF, "pendulum.metrics.fid",
     "(info)"),
    ("128 px", "pendulum, bf16: reconstruction edges", _R128_BF,
     "pendulum.metrics.reconstruction_edges", ">= 0.90"),
    ("128 px", "pendulum, bf16: read-back R² shadow_length (weakest)", _R128_BF,
     "pendulum.metrics.readback_r2.shadow_length", ">= 0.80"),
    ("128 px", "pendulum, bf16: mediator first by direct importance", _R128_BF,
     "pendulum.mediator_first_direct", ">= 0.90"),
    ("128 px", "pendulum, bf16: pendulum_angle direct / total", _R128_BF,
     "pendulum.pendulum_angle_direct_over_total", "<= 0.10"),
    ("128 px", "pendulum, bf16: agreement with the oracle (Spearman, total)", _R128_BF,
     "pendulum.oracle.agreement.mean_spearman", "(info)"),
]  # fmt: skip

# What the context readers read, against the renderer (benchmarks/bench_readers.py, issue 13):
# read change per std of one factor moved alone; 1 on the diagonal, 0 elsewhere when clean.
KEYED += [
    ("readers", "shapes: shape read when the shape alone changes", "readers",
     "tasks.shapes.slope.shape.shape", "(info)"),
    ("readers", "shapes: shape read when the hue alone changes", "readers",
     "tasks.shapes.slope.hue.shape", "(info)"),
    ("readers", "shapes: brightness read when the brightness alone changes", "readers",
     "tasks.shapes.slope.brightness.brightness", "(info)"),
    ("readers", "shapes: brightness read when pos_y alone changes", "readers",
     "tasks.shapes.slope.pos_y.brightness", "(info)"),
    ("readers", "pendulum: shadow_position read when it alone changes", "readers",
     "tasks.pendulum.slope.shadow_position.shadow_position", "(info)"),
    ("readers", "pendulum: shadow_length read when it alone changes", "readers",
     "tasks.pendulum.slope.shadow_length.shadow_length", "(info)"),
    ("readers", "shapes: every reading >= 0.2 across contexts is a declared tie", "readers",
     "tasks.shapes.all_leaks_declared", "(info)"),
    ("readers", "pendulum: every reading >= 0.2 across contexts is a declared tie", "readers",
     "tasks.pendulum.all_leaks_declared", "(info)"),
]  # fmt: skip


def rows() -> list[tuple[str, str, str, str, str]]:
    out = []
    for area, fig, name, path, target in KEYED:
        d = _load(name)
        v = _get(d, path) if d else None
        if v is not None:
            out.append((area, fig, _fmt(v), target, _check(v, target)))
    thr = _load("generator_throughput")
    for _, r in sorted((thr or {}).get("runs", {}).items()):
        flops, th = r["generator_train_flops_per_s_median"], r["torch_threads"]
        for what, key in (
            ("fp32 matmul peak", "fp32_matmul_flops_median"),
            ("best of matmul and 3x3 conv", "fp32_peak_flops_median"),
        ):
            fig = (
                f"{r['preset']}: G training, % of {what} ({th} thread(s), "
                f"{r[key] / 1e9:.0f} GFLOP/s)"
            )
            v = 100 * flops / r[key]
            out.append(("surrogate", fig, _fmt(v), ">= 50", _check(v, ">= 50")))
    disc = _load("discriminator")
    for r in disc.get("rows", []) if disc else []:
        ms = r["median_ms"]
        fig = (
            f"fast: D forward + backward at {r['size']} px, batch {r['batch']}: before (real / "
            "generated images) -> now (ms)"
        )
        v = f"{ms['pool']:.0f} / {ms['pool-nhwc']:.0f} -> {ms['strided-nhwc']:.0f}"
        out.append(("surrogate", fig, v, "(info)", ""))
    causal = _load("causal")
    for r in causal.get("rows", []) if causal else []:
        if r.get("pass") is not None and not r["metric"].startswith(" "):
            out.append(
                (
                    "causal",
                    f"{r['section']}: {r['metric']}",
                    _fmt(r["value"]),
                    str(r["target"]),
                    "yes" if r["pass"] else "**no**",
                )
            )
    threads = _load("threads")
    for r in threads.get("rows", []) if threads else []:
        case, preset = r["case"], r["preset"]
        changes = " -> ".join(str(c[2]) for c in r.get("thread_changes", [])) or "pinned"
        fig = f"{preset}: fit wall time, {case} (threads {changes}) (s)"
        target = r.get("target", "(reference)" if case == "pinned-1" else "(info)")
        met = "" if "met" not in r else ("yes" if r["met"] else "**no**")
        out.append(("threads", fig, _fmt(r["fit_seconds"]), target, met))
        if case != "pinned-1":
            out.append(
                (
                    "threads",
                    f"{preset}: {case} / pinned-1 wall time; largest figure difference",
                    f"{r['ratio_to_pinned_1']:.2f}; {r['largest_figure_difference']:.3f}",
                    "(info)",
                    "",
                )
            )
    twin = _load("twin")
    for r in twin.get("rows", []) if twin else []:
        tag = f"{r['preset']} twin, {r['setting']} (seed {r['seed']})"
        now = r["setting"] == "now" and r["preset"] == "fast"
        for fig, key, target in (
            ("FID on the classifier's features", "fid", "<= 1.5" if now else "(info)"),
            ("reconstruction fidelity", "reconstruction_fidelity", ">= 0.96" if now else "(info)"),
            ("reconstruction SSIM", "reconstruction_ssim", "(info)"),
        ):
            v = r.get(key)
            if v is not None:
                out.append(("twin", f"{tag}: {fig}", _fmt(v), target, _check(v, target)))
    atlas = _load("atlas")
    for c in atlas.get("checks", []) if atlas else []:
        ok = "yes" if c["met"] else "**no**"
        out.append(("atlas", c["check"], "met" if c["met"] else "not met", "met", ok))
    stream = _load("streaming")
    if stream:
        out.append(
            (
                "data",
                "50,000 images at 128 px: decoding, random batches of 32 (images/s)",
                _fmt(stream["random"]["images_per_s"]),
                "(info)",
                "",
            )
        )
        rss = stream["peak_rss_bytes"] / 2**30
        out.append(
            ("data", "50,000 images at 128 px: streaming peak RSS (GiB)", _fmt(rss), "<= 2",
             _check(rss, "<= 2"))  # fmt: skip
        )
    feats = _load("fit_features")
    if feats:
        f = feats["features"]
        out.append(
            (
                "data",
                f"{feats['n_images']:,} images at 128 px: fit's classifier features cached, "
                "small-cnn, 1 thread (images/s)",
                _fmt(f["cache"]["images_per_s"]),
                "(info)",
                "",
            )
        )
        rss = feats["peak_rss_bytes"] / 2**30
        out.append(
            (
                "data",
                f"{feats['n_images']:,} images at 128 px: fit's feature phases peak RSS (GiB)",
                _fmt(rss),
                "<= 2",
                _check(rss, "<= 2"),
            )
        )
    whole = _load("fit_features_fit")
    if whole:
        rss, preset = whole["fit"]["peak_rss_bytes"] / 2**30, whole["fit"]["preset"]
        out.append(
            (
                "data",
                f"{whole['n_images']:,} images at 128 px: whole Glance.fit ({preset}) peak RSS "
                "(GiB)",
                _fmt(rss),
                "<= 2",
                _check(rss, "<= 2"),
            )
        )
    mig = _load("mig")
    for d in mig.get("datasets", []) if mig else []:
        data = f"Morpho-MNIST, corr(thickness, intensity) {d['correlation']:.2f}"
        for r2 in ("1.0", "0.99", "0.95"):
            v = d["reference"].get(r2, {}).get("median")
            if v is not None:
                fig = f"{data}: MIG of ideal codes correlated r² {r2} with their contexts"
                out.append(("surrogate", fig, _fmt(v), "(reference)", ""))
        for name, p in sorted(d.get("presets", {}).items()):
            fig = f"{data}: {name} MIG, measured; ideal codes as aligned"
            value = f"{p['mig_measured']:.3f}; {p['reference_at_that_alignment']:.3f}"
            out.append(("surrogate", fig, value, ">= 0.40 (issue 13)", _check(
                p["mig_measured"], ">= 0.40")))  # fmt: skip
    explain = _load("explain")
    for r in explain.get("must_reach", []) if explain else []:
        out.append(("explain", r["figure"], _fmt(r["value"]), str(r["target"]), _passed(r)))
    # causal shapes explained by the default preset's twin (the rows above use the fast one),
    # seed 0 and two more seeds (each its own data, classifier and fit)
    for name, label in (
        ("explain-shapes-default", "shapes (default preset)"),
        ("explain-shapes-default-seed1", "shapes (default preset, seed 1)"),
        ("explain-shapes-default-seed2", "shapes (default preset, seed 2)"),
    ):
        res = _load(name)
        for r in res.get("must_reach", []) if res else []:
            if not r["figure"].startswith("shapes"):
                continue
            fig = re.sub(r"^shapes( plain)?:", f"{label}:", r["figure"])
            out.append(("explain", fig, _fmt(r["value"]), str(r["target"]), _passed(r)))
    return out


def _passed(row: dict) -> str:
    """The "met" cell of a bench_explain must-reach row (empty for a reference figure)."""
    return "" if row.get("pass") is None else ("yes" if row["pass"] else "**no**")


def table() -> str:
    lines = [
        "| area | figure | measured | target | met |",
        "|---|---|---|---|---|",
    ]
    cells = ([c.replace("|", "\\|") for c in row] for row in rows())  # a pipe ends a cell
    lines += [f"| {a} | {f} | {v} | {t} | {m} |" for a, f, v, t, m in cells]
    return "\n".join(lines)


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    block = f"{START}\n{table()}\n{END}"
    if START in text and END in text:
        text = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    elif START in text:
        text = text.replace(START, block)
    else:
        sys.stderr.write("README.md has no results-table marker\n")
        return 1
    readme.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
