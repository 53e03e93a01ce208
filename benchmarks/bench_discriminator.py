"""Benchmark: the discriminator's forward + backward, its downsampling form and input layout.

A discriminator block halves the size after a convolution. Done as written (convolve at full
size, then a 2x2 average pool), the convolution computes four outputs for each one kept. glance
applies the same function as one stride-2 convolution with the pooled kernel
(``glance.surrogate.layers.pooled_kernel``), and convolves channels-last whatever the layout of
its input (``Discriminator(channels_last=True)``; the generator's output already is NHWC, real
images come NCHW).

For each image size (32, 64, 128 px; the ``fast`` preset's discriminator widths at that size,
batch 48: the ``fast`` generator step's 32 real + 16 sampled images) this times forward +
backward (to the input and the weights) of four forms, on NCHW images (as real images come),
interleaved in rounds so that each sees the same load:

- ``pool``: convolution then average pool, in the input's layout (glance before the change, on
  real images);
- ``pool-nhwc``: the same, convolving channels-last (before the change, on generated images);
- ``strided``: the pooled kernel, in the input's layout;
- ``strided-nhwc``: the pooled kernel, channels-last (glance now).

It prints a table (median ms, speed-up over ``pool`` and ``pool-nhwc``, the largest difference of
the logits from ``pool``) and writes ``benchmarks/results/discriminator.json``.

Run: ``.venv/bin/python benchmarks/bench_discriminator.py [--threads 2] [--sizes 32,64,128]``
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from glance._io import atomic_write_json
from glance.surrogate import Discriminator
from glance.surrogate.layers import EqualizedConv2d
from glance.training.config import resolve_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "discriminator.json"


def _pool_forward(self: EqualizedConv2d, x: torch.Tensor) -> torch.Tensor:
    """The reference: full-size convolution, then the 2x2 average pool."""
    x = F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.padding)
    if self.down == 2:
        x = F.avg_pool2d(x, 2)
    if self.activation == "lrelu":
        x = F.leaky_relu(x, 0.2) * math.sqrt(2.0)
    return x


@contextlib.contextmanager
def _form(strided: bool) -> Iterator[None]:
    """``strided``: glance's own forward (the pooled kernel); otherwise the conv + pool one."""
    original = EqualizedConv2d.forward
    EqualizedConv2d.forward = original if strided else _pool_forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        EqualizedConv2d.forward = original  # type: ignore[method-assign]


def bench_size(size: int, batch: int, rounds: int) -> dict:
    g = resolve_config("fast", resolution=size).generator
    forms = {  # name: (strided with the pooled kernel, channels-last)
        "pool": (False, False),
        "pool-nhwc": (False, True),
        "strided": (True, False),
        "strided-nhwc": (True, True),
    }
    nets = {}
    for name, (_, nhwc) in forms.items():
        torch.manual_seed(0)  # the same weights for every form
        nets[name] = Discriminator(
            size,
            3,
            channel_base=g.d_channel_base,
            channel_max=g.d_channel_max,
            mbstd_group=g.mbstd_group,
            channels_last=nhwc,
        )
    images = torch.rand(batch, 3, size, size)

    def step(name: str) -> torch.Tensor:
        x = images.clone().requires_grad_()
        with _form(forms[name][0]):
            logits = nets[name](x)
        logits.sum().backward()
        nets[name].zero_grad(set_to_none=True)
        return logits.detach()

    times: dict[str, list[float]] = {k: [] for k in forms}
    logits: dict[str, torch.Tensor] = {}
    for r in range(rounds + 2):
        for name in forms:
            t0 = time.perf_counter()
            logits[name] = step(name)
            if r >= 2:  # two warm-up rounds
                times[name].append(time.perf_counter() - t0)
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    return {
        "size": size,
        "batch": batch,
        "d_channel_base": g.d_channel_base,
        "d_channel_max": g.d_channel_max,
        "median_ms": ms,
        "speedup_over_pool": ms["pool"] / ms["strided-nhwc"],
        "speedup_over_pool_nhwc": ms["pool-nhwc"] / ms["strided-nhwc"],
        "max_abs_logit_diff": max(float((v - logits["pool"]).abs().max()) for v in logits.values()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="32,64,128")
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [bench_size(int(s), args.batch, args.rounds) for s in args.sizes.split(",")]
    print(
        f"{'size':>5} {'pool ms':>8} {'pool-nhwc':>10} {'strided':>8} {'strided-nhwc':>13} "
        f"{'x pool':>7} {'x pool-nhwc':>12} {'max|diff|':>10}"
    )
    for r in rows:
        m = r["median_ms"]
        print(
            f"{r['size']:>5} {m['pool']:>8.1f} {m['pool-nhwc']:>10.1f} {m['strided']:>8.1f} "
            f"{m['strided-nhwc']:>13.1f} {r['speedup_over_pool']:>7.2f} "
            f"{r['speedup_over_pool_nhwc']:>12.2f} {r['max_abs_logit_diff']:>10.1e}"
        )
    atomic_write_json(
        args.out,
        {
            "command": "python benchmarks/bench_discriminator.py " + " ".join(sys.argv[1:]),
            "machine": machine_info(),
            "note": "forward + backward of the fast preset's discriminator, median of "
            f"{args.rounds} interleaved rounds; 'strided-nhwc' is what glance runs",
            "rows": rows,
        },
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
