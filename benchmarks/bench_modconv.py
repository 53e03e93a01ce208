"""Benchmark: modulated convolution forms, and generator FLOP/s against the fp32 matmul peak.

Measures, on the current device (CPU unless ``--device cuda``):

1. the fp32 matmul peak (best of a few large square matmuls);
2. ``modulated_conv2d`` forward + backward in the "grouped" form (one grouped convolution of N
   per-sample weights) and the "scaled" form (scale the input, one convolution with the shared
   weight, demodulate the output) at 32, 64 and 128 channels;
3. the generator's training-style throughput (forward + backward, images/s) for a CPU-sized and a
   larger configuration, and the achieved FLOP/s (3 x the forward multiply-adds x 2, the usual
   forward + backward estimate) as a fraction of the matmul peak.

Prints a table and writes ``benchmarks/results/modconv.json``.

Run: ``.venv/bin/python benchmarks/bench_modconv.py [--device cpu] [--quick]``
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from glance.surrogate import Generator, modulated_conv2d


def _time(fn, min_time: float, warmup: int = 2) -> float:
    """Median seconds per call of ``fn`` over at least ``min_time`` seconds."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < min_time or len(times) < 3:
        t0 = time.perf_counter()
        fn()
        if _DEVICE.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def matmul_peak(n: int, min_time: float) -> float:
    """fp32 FLOP/s of an n x n matmul (2 n^3 flops)."""
    a = torch.randn(n, n, device=_DEVICE)
    b = torch.randn(n, n, device=_DEVICE)
    sec = _time(lambda: torch.mm(a, b), min_time)
    return 2 * n**3 / sec


def bench_modconv(channels: int, batch: int, res: int, min_time: float) -> dict:
    x = torch.randn(batch, channels, res, res, device=_DEVICE, requires_grad=True)
    w = torch.randn(channels, channels, 3, 3, device=_DEVICE, requires_grad=True)
    s = torch.randn(batch, channels, device=_DEVICE, requires_grad=True)
    row = {"channels": channels, "batch": batch, "resolution": res}
    outs = {}
    for impl in ("grouped", "scaled"):

        def step(impl=impl):
            y = modulated_conv2d(x, w, s, impl=impl)
            y.square().mean().backward()
            return y

        outs[impl] = modulated_conv2d(x, w, s, impl=impl).detach()
        sec = _time(step, min_time)
        row[f"{impl}_ms"] = sec * 1e3
    row["speedup_scaled_over_grouped"] = row["grouped_ms"] / row["scaled_ms"]
    row["max_abs_diff"] = float((outs["grouped"] - outs["scaled"]).abs().max())
    return row


def bench_generator(name: str, kwargs: dict, batch: int, min_time: float, peak: float) -> dict:
    g = Generator(**kwargs).to(_DEVICE)
    z = torch.randn(batch, kwargs["z_dim"], device=_DEVICE)

    def step():
        g.zero_grad(set_to_none=True)
        g(z, noise_mode="const").mean().backward()

    sec = _time(step, min_time)
    flops = 3 * g.flops_per_image() * batch  # forward + backward ~ 3x forward
    return {
        "config": name,
        **kwargs,
        "batch": batch,
        "forward_gflop_per_image": g.flops_per_image() / 1e9,
        "step_ms": sec * 1e3,
        "images_per_s": batch / sec,
        "achieved_gflops": flops / sec / 1e9,
        "fraction_of_matmul_peak": flops / sec / peak,
    }


def main() -> None:
    global _DEVICE
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="shorter timing windows")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "modconv.json"))
    args = parser.parse_args()
    _DEVICE = torch.device(args.device)
    min_time = 0.5 if args.quick else 2.0

    peak = max(matmul_peak(n, min_time) for n in (1024, 2048))
    print(
        f"device={_DEVICE} threads={torch.get_num_threads()} fp32 matmul peak "
        f"{peak / 1e9:.1f} GFLOP/s"
    )

    rows = [bench_modconv(c, 32, 32, min_time) for c in (32, 64, 128)]
    print(
        f"\n{'channels':>8} {'grouped ms':>11} {'scaled ms':>10} {'speedup':>8} {'max|diff|':>10}"
    )
    for r in rows:
        print(
            f"{r['channels']:>8} {r['grouped_ms']:>11.2f} {r['scaled_ms']:>10.2f} "
            f"{r['speedup_scaled_over_grouped']:>8.2f} {r['max_abs_diff']:>10.2e}"
        )

    gens = [
        (
            "cpu-32px-48ch",
            dict(
                z_dim=18,
                img_resolution=32,
                img_channels=1,
                channel_base=1536,
                channel_max=48,
                w_dim=128,
                mapping_layers=2,
            ),
            64,
        ),
        (
            "cpu-32px-128ch",
            dict(
                z_dim=18,
                img_resolution=32,
                img_channels=1,
                channel_base=4096,
                channel_max=128,
                w_dim=128,
                mapping_layers=2,
            ),
            64,
        ),
    ]
    grows = [bench_generator(n, kw, b, min_time, peak) for n, kw, b in gens]
    print(
        f"\n{'generator':>16} {'batch':>6} {'GFLOP/img':>10} {'img/s':>8} {'GFLOP/s':>8} "
        f"{'% peak':>7}"
    )
    for r in grows:
        print(
            f"{r['config']:>16} {r['batch']:>6} {r['forward_gflop_per_image']:>10.4f} "
            f"{r['images_per_s']:>8.1f} {r['achieved_gflops']:>8.1f} "
            f"{100 * r['fraction_of_matmul_peak']:>6.1f}%"
        )

    result = {
        "device": str(_DEVICE),
        "platform": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "matmul_peak_gflops": peak / 1e9,
        "modconv": rows,
        "generator": grows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")


_DEVICE = torch.device("cpu")

if __name__ == "__main__":
    main()
