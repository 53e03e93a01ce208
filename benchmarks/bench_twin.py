"""How sharp is the demo's twin? (issue "Explanations a person can read", part 4)

Fits the twin on the demo's data (the embedded Morpho-MNIST digits and the small-cnn classifier
that ``glance demo`` makes, cached under ``--work``), once per ``--setting``, on the same seed,
and measures on held-out digits what a person sees: FID and KID on the classifier's features,
reconstruction fidelity and SSIM, the contexts read back from the reconstructions, sampled
fidelity, generated alignment and the fit's wall time. ``before`` is the fast preset as it was
(StyleGAN's mapping learning rate, per-pixel noise, a constant input, adversarial weight 0.1, a
fixed EMA decay) written as overrides of today's preset, so both run the same code.

Also draws, per setting, held-out digits, their reconstructions and two counterfactuals
(thickness moved by -2 and +2 training standard deviations in the concept space) into
``benchmarks/results/twin-<preset>-<setting>.png`` (and both, before above now, into
``twin-<preset>-before-after.png``). Prints a table and merges its rows into
``benchmarks/results/twin.json``.

Usage::

    .venv/bin/python benchmarks/bench_twin.py [--preset fast] [--settings before,now] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "twin.json"
FID_TARGET = 1.5  # the must-reach for the fast demo twin
RECON_TARGET = 0.96

# The generator's quick-learning settings (the fast preset's) and StyleGAN's, named once.
_QUICK_G = {"use_noise": False, "mapping_lr_multiplier": 1.0, "styled_input": True}
_STYLEGAN_G = {"use_noise": True, "mapping_lr_multiplier": 0.01, "styled_input": False}

SETTINGS: dict[str, dict[str, Any] | None] = {
    "now": None,
    # the fast preset's quick-learning generator and losses, on another preset (e.g. default)
    "fast-generator": {
        "generator": _QUICK_G,
        "loss": {"adversarial": 0.3},
        "train": {"ema_rampup": 0.05},
    },
    # every band of a Laplacian pyramid weighted alike instead of a pixel L1 (issue 12)
    "laplacian": {"loss": {"reconstruction_loss": "laplacian"}},
    # generator warm-up steps on the reconstruction loss alone before the full objective
    "warmup-1500": {"train": {"generator_warmup_steps": 1500}},
    # the warm-up paid for by fewer full steps on the default preset (2000 full steps)
    "warmup-1500-g1800": {"train": {"generator_warmup_steps": 1500, "generator_steps": 1800}},
    # ... with the pixels' cross-entropy in the reconstruction term, which keeps the default
    # generator's warm-up from saturating its output sigmoid (black digits)
    "warmup-1500-g1800-bce": {
        "train": {"generator_warmup_steps": 1500, "generator_steps": 1800},
        "loss": {"reconstruction_bce": 0.1},
    },
    # both: the fast preset's generator, the warm-up and the cross-entropy (default preset)
    "fast-generator-warmup-bce": {
        "generator": _QUICK_G,
        "loss": {"adversarial": 0.3, "reconstruction_bce": 0.1},
        "train": {"ema_rampup": 0.05, "generator_warmup_steps": 1500, "generator_steps": 1800},
    },
    # the default preset as it was before it took the three above (StyleGAN's generator)
    "default-before": {
        "generator": _STYLEGAN_G,
        "loss": {"adversarial": 0.1, "reconstruction_bce": 0.0},
        "train": {"ema_rampup": None, "generator_warmup_steps": 0, "generator_steps": 2000},
    },
    # the fast preset before its warm-up (600 full steps, no warm-up)
    "before-warmup": {"train": {"generator_warmup_steps": 0, "generator_steps": 600}},
    "before": {
        "generator": _STYLEGAN_G,
        "loss": {"adversarial": 0.1},
        "train": {"ema_rampup": None},
    },
}


def _picture(est: Any, test: Any, path: Path, n: int = 12) -> None:
    import torch

    from glance.evaluation import save_grid

    x = test.load_images(list(range(n)))
    with torch.no_grad():
        _, feats = est.adapter_.forward_features(x)
        z = est.encoder_(feats)[0]
        j = est.context_names_.index("thickness")
        rows = [x, est.generate(z)]
        for delta in (-2.0, 2.0):
            zc = z.clone()
            zc[:, j] += delta
            rows.append(est.generate(zc))
    save_grid(torch.cat(rows), path, ncol=n)


def side_by_side(preset: str) -> Path | None:
    """``twin-<preset>-before-after.png``: the two settings' pictures, one above the other."""
    from PIL import Image

    paths = [ROOT / "results" / f"twin-{preset}-{name}.png" for name in ("before", "now")]
    if not all(p.is_file() for p in paths):
        return None
    a, b = (Image.open(p) for p in paths)
    out = Image.new(a.mode, (max(a.width, b.width), a.height + b.height + 6), 255)
    out.paste(a, (0, 0))
    out.paste(b, (0, a.height + 6))
    path = ROOT / "results" / f"twin-{preset}-before-after.png"
    out.resize((out.width * 2, out.height * 2), Image.NEAREST).save(path)
    return path


def run_setting(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from glance.cli._demo import CONTEXTS, _classifier, _data
    from glance.data import load_dataset
    from glance.estimator import Glance
    from glance.evaluation import measure

    data = _data(args.work, args.n_digits, 0, True)
    clf = _classifier(data, args.work, 3, 0, True)
    est = Glance(
        clf,
        contexts=CONTEXTS,
        preset=args.preset,
        config=SETTINGS[name],
        random_state=args.seed,
        quiet=True,
        n_threads=args.threads,
    )
    t0 = time.perf_counter()
    est.fit(load_dataset(data, split="train"))
    seconds = time.perf_counter() - t0
    test = load_dataset(data, split="t10k")
    res, _ = measure(est, test, n_images=args.eval_images)
    picture = ROOT / "results" / f"twin-{args.preset}-{name}.png"
    _picture(est, test, picture)
    keys = ("fid", "kid", "fidelity", "reconstruction_fidelity", "sampled_fidelity")
    row = {k: res[k] for k in keys}
    row.update(
        setting=name,
        preset=args.preset,
        seed=args.seed,
        threads=args.threads,
        overrides=SETTINGS[name],
        reconstruction_ssim=res.get("reconstruction_ssim"),
        reconstruction_l1=res["reconstruction_l1"],
        readback_r2=res.get("readback_r2"),
        generated_alignment=res["generated_alignment"],
        fit_seconds=seconds,
        picture=str(picture.relative_to(ROOT.parent)),
    )
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--settings", default="before,now")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="fixed CPU threads (default: auto)")
    ap.add_argument("--n-digits", type=int, default=10_000, help="the demo's digits")
    ap.add_argument("--eval-images", type=int, default=2000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/glance-bench-twin"))
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    from glance._io import atomic_write_json

    names = args.settings.split(",")
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        ap.error(f"unknown setting(s) {unknown}; choose from {sorted(SETTINGS)}")
    old = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"rows": []}
    redone = {(args.preset, n, args.seed) for n in names}
    rows = [r for r in old.get("rows", []) if (r["preset"], r["setting"], r["seed"]) not in redone]
    for name in names:
        print(f"{args.preset} {name} (seed {args.seed}) ...", flush=True)
        row = run_setting(name, args)
        if args.preset == "fast" and name == "now":
            row["checks"] = {
                f"FID <= {FID_TARGET}": row["fid"] is not None and row["fid"] <= FID_TARGET,
                f"reconstruction fidelity >= {RECON_TARGET}": row["reconstruction_fidelity"]
                >= RECON_TARGET,
            }
        rows.append(row)
        print(
            f"  FID {row['fid']:.2f}  KID {row['kid']:.3f}  recon fid "
            f"{row['reconstruction_fidelity']:.3f}  SSIM {row['reconstruction_ssim']}  "
            f"sampled {row['sampled_fidelity']:.3f}  fit {row['fit_seconds']:.0f} s",
            flush=True,
        )
    result = {
        "benchmark": "demo twin sharpness (bench_twin.py)",
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "rows": sorted(rows, key=lambda r: (r["preset"], r["seed"], r["setting"])),
    }
    atomic_write_json(RESULTS, result)
    print(f"wrote {RESULTS}")
    both = side_by_side(args.preset)
    if both is not None:
        print(f"wrote {both}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
