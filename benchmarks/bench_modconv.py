"""Benchmark: modulated convolution forms, and generator FLOP/s against the fp32 matmul peak.

Measures, on the current device (CPU unless ``--device cuda``):

1. the fp32 matmul peak (best of a few large square matmuls);
2. ``modulated_conv2d`` forward + backward in the "grouped" form (one grouped convolution of N
   per-sample weights) and the "scaled" form (scale the input, one convolution with the shared
   weight, demodulate the output) at 32, 64 and 128 channels;
3. the generator's training-style throughput (forward + backward, images/s) for a CPU-sized and a
   larger configuration, NHWC (default) and NCHW layouts, and the achieved FLOP/s (3 x the
   forward FLOPs, the usual forward + backward estimate) as a fraction of the matmul peak.

Each is run at every thread count of ``--threads`` (the peak is measured at the same count).

Prints a table and writes ``benchmarks/results/modconv.json``.

Run: ``.venv/bin/python benchmarks/bench_modconv.py [--device cpu] [--threads 1,2] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from glance.surrogate import Generator, modulated_conv2d


def _time(fns: dict, min_time: float, warmup: int = 1) -> dict[str, tuple[float, float]]:
    """(best, median) seconds per call of each function, timed in interleaved rounds.

    Interleaving gives every candidate the same exposure to other load on a shared machine.
    The best time estimates the uncontended speed; the median what a user saw during the run.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    while time.perf_counter() - start < min_time * len(fns) or len(times[next(iter(fns))]) < 5:
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if _DEVICE.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    out = {}
    for name, ts in times.items():
        ts.sort()
        out[name] = (ts[0], ts[len(ts) // 2])
    return out


def matmul_peak(min_time: float) -> float:
    """fp32 FLOP/s: best over square matmuls of a few sizes (2 n^3 flops each)."""
    best = 0.0
    for n in (512, 1024, 2048):
        a = torch.randn(n, n, device=_DEVICE)
        b = torch.randn(n, n, device=_DEVICE)
        sec, _ = _time({"mm": lambda a=a, b=b: torch.mm(a, b)}, min_time)["mm"]
        best = max(best, 2 * n**3 / sec)
    return best


def bench_modconv(channels: int, batch: int, res: int, min_time: float) -> dict:
    """Forward + backward of one modulated 3x3 convolution in each form (and NHWC input)."""
    x = torch.randn(batch, channels, res, res, device=_DEVICE)
    w = torch.randn(channels, channels, 3, 3, device=_DEVICE, requires_grad=True)
    s = torch.randn(batch, channels, device=_DEVICE, requires_grad=True)
    inputs = {
        "grouped": (x.clone().requires_grad_(), "grouped"),
        "scaled": (x.clone().requires_grad_(), "scaled"),
        "scaled_nhwc": (
            x.contiguous(memory_format=torch.channels_last).requires_grad_(),
            "scaled",
        ),
    }

    def make(xi, impl):
        def step():
            xi.grad = w.grad = s.grad = None
            modulated_conv2d(xi, w, s, impl=impl).square().mean().backward()

        return step

    timed = _time({k: make(*v) for k, v in inputs.items()}, min_time)
    row: dict = {"channels": channels, "batch": batch, "resolution": res}
    for k, (best, med) in timed.items():
        row[f"{k}_ms"], row[f"{k}_median_ms"] = best * 1e3, med * 1e3
    row["speedup_scaled_over_grouped"] = row["grouped_ms"] / row["scaled_ms"]
    row["speedup_scaled_nhwc_over_grouped"] = row["grouped_ms"] / row["scaled_nhwc_ms"]
    with torch.no_grad():
        a = modulated_conv2d(x, w, s, impl="grouped")
        b = modulated_conv2d(x, w, s, impl="scaled")
    row["max_abs_diff"] = float((a - b).abs().max())
    return row


def bench_generators(configs: list, min_time: float, peak: float, compile: bool) -> list[dict]:
    """Generator forward + backward steps, all configurations timed in interleaved rounds."""
    steps, rows = {}, {}
    for name, kwargs, batch in configs:
        torch.manual_seed(0)
        g = Generator(**kwargs).to(_DEVICE)
        variants = [(name, g)]
        if compile and name == configs[0][0]:
            # torch.compile fuses the elementwise ops around each convolution
            variants.append((name + "-compiled", torch.compile(g)))
        z = torch.randn(batch, kwargs["z_dim"], device=_DEVICE)
        for vname, run_g in variants:

            def step(g=g, run_g=run_g, z=z):
                g.zero_grad(set_to_none=True)
                run_g(z, noise_mode="random").mean().backward()

            t0 = time.perf_counter()
            step()  # first call: compilation for the compiled variant
            steps[vname] = step
            rows[vname] = {
                "config": vname,
                **kwargs,
                "batch": batch,
                "first_call_seconds": time.perf_counter() - t0,
                "forward_gflop_per_image": g.flops_per_image() / 1e9,
            }
    for vname, (best, med) in _time(steps, min_time).items():
        r = rows[vname]
        flops = 3 * r["forward_gflop_per_image"] * 1e9 * r["batch"]  # fwd + bwd ~ 3x fwd
        r.update(
            step_ms=best * 1e3,
            step_median_ms=med * 1e3,
            images_per_s=r["batch"] / best,
            images_per_s_median=r["batch"] / med,
            achieved_gflops=flops / best / 1e9,
            fraction_of_matmul_peak=flops / best / peak,
            fraction_of_matmul_peak_median=flops / med / peak,
        )
    return list(rows.values())


_G48 = dict(
    z_dim=18,
    img_resolution=28,
    img_channels=1,
    channel_base=1536,
    channel_max=48,
    w_dim=128,
    mapping_layers=2,
)
_G128 = dict(
    z_dim=18,
    img_resolution=32,
    img_channels=1,
    channel_base=4096,
    channel_max=128,
    w_dim=128,
    mapping_layers=2,
)
GENERATORS = [
    # (name, Generator kwargs, batch); the first is the default layout and form
    ("28px-48ch", _G48, 64),
    ("28px-48ch-nchw", {**_G48, "channels_last": False}, 64),
    ("28px-48ch-grouped", {**_G48, "channels_last": False, "modconv_impl": "grouped"}, 64),
    ("32px-128ch", _G128, 64),
    ("32px-128ch-nchw", {**_G128, "channels_last": False}, 64),
    ("32px-128ch-grouped", {**_G128, "channels_last": False, "modconv_impl": "grouped"}, 64),
]


def run(threads: int, min_time: float, compile: bool) -> dict:
    torch.set_num_threads(threads)
    peak = matmul_peak(min_time)
    print(f"\n== device={_DEVICE} threads={threads}: fp32 matmul peak {peak / 1e9:.1f} GFLOP/s")
    rows = [bench_modconv(c, 32, 32, min_time) for c in (32, 64, 128)]
    print(
        f"{'channels':>8} {'grouped ms':>11} {'scaled ms':>10} {'scaled NHWC ms':>15} "
        f"{'speedup':>8} {'NHWC speedup':>13} {'max|diff|':>10}"
    )
    for r in rows:
        print(
            f"{r['channels']:>8} {r['grouped_ms']:>11.2f} {r['scaled_ms']:>10.2f} "
            f"{r['scaled_nhwc_ms']:>15.2f} {r['speedup_scaled_over_grouped']:>8.2f} "
            f"{r['speedup_scaled_nhwc_over_grouped']:>13.2f} {r['max_abs_diff']:>10.2e}"
        )
    grows = bench_generators(GENERATORS, min_time, peak, compile)
    print(
        f"{'generator (fwd+bwd)':>20} {'batch':>6} {'GFLOP/img':>10} {'img/s':>8} "
        f"{'GFLOP/s':>8} {'% peak':>7} {'% peak (median)':>16}"
    )
    for r in grows:
        print(
            f"{r['config']:>20} {r['batch']:>6} {r['forward_gflop_per_image']:>10.4f} "
            f"{r['images_per_s']:>8.1f} {r['achieved_gflops']:>8.1f} "
            f"{100 * r['fraction_of_matmul_peak']:>6.1f}% "
            f"{100 * r['fraction_of_matmul_peak_median']:>15.1f}%"
        )
    return {
        "threads": threads,
        "matmul_peak_gflops": peak / 1e9,
        "modconv": rows,
        "generator": grows,
    }


def main() -> None:
    global _DEVICE
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    parser.add_argument("--quick", action="store_true", help="shorter timing windows")
    parser.add_argument(
        "--compile", action="store_true", help="add a torch.compile'd generator (minutes)"
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "modconv.json"))
    args = parser.parse_args()
    _DEVICE = torch.device(args.device)
    min_time = 0.5 if args.quick else 2.0
    load_before = os.getloadavg()
    runs = [run(int(t), min_time, args.compile) for t in args.threads.split(",")]
    result = {
        "command": "python benchmarks/bench_modconv.py " + " ".join(sys.argv[1:]),
        "device": str(_DEVICE),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "note": "best-of timings estimate uncontended speed; medians show the shared machine; "
        "generator FLOPs = 3 x forward (forward + backward), counted by flops_per_image()",
        "runs": runs,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nload average before/after: {load_before} / {os.getloadavg()}\nwrote {out}")


_DEVICE = torch.device("cpu")

if __name__ == "__main__":
    main()
