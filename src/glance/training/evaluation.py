"""Faithfulness and quality of a fitted surrogate (DESIGN §2.5): the numbers users check.

All figures are measured on the images given (held-out ones for honest numbers), with the *real*
classifier judging every generated image.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glance._io import atomic_open

__all__ = ["evaluate", "save_grid", "MEASURABLE_CONTEXTS"]

logger = logging.getLogger(__name__)

#: Contexts that can be measured on a generated single-channel image (glance morphometrics).
MEASURABLE_CONTEXTS = ("area", "length", "thickness", "slant", "width", "height", "intensity")


def _clean(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _subset(dataset: Any, n_images: int, random_state: int) -> np.ndarray:
    n = len(dataset)
    if n <= n_images:
        return np.arange(n)
    rng = np.random.default_rng(random_state)
    return np.sort(rng.choice(n, n_images, replace=False))


@torch.no_grad()
def _classify_all(est: Any, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits, feats = [], []
    for i in range(0, len(images), 256):
        lo, fe = est.adapter_.forward_features(images[i : i + 256].to(est._device))
        logits.append(lo.float().cpu())
        feats.append(fe.float().cpu())
    return torch.cat(logits), torch.cat(feats)


def _generated_alignment(est: Any, z: torch.Tensor, images: torch.Tensor) -> dict[str, Any]:
    """Spearman between each aligned dim and the context measured on the generated image."""
    from glance.metrics.fidelity import spearman_alignment

    out: dict[str, Any] = {name: None for name in est.context_names_}
    names = [n for n in est.context_names_ if n in MEASURABLE_CONTEXTS]
    if not names or images.shape[1] != 1:
        return out
    from glance.data.morphometrics import measure

    uint8 = (images[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    measured = measure(uint8)
    for name in names:
        j = est.context_names_.index(name)
        out[name] = _clean(spearman_alignment(z[:, j].numpy(), measured[name]))
    return out


#: Images the counterfactual soundness figures are measured on (the first of the evaluation set).
SOUNDNESS_IMAGES = 64


def _soundness(est: Any, images: torch.Tensor) -> dict[str, Any]:
    """Counterfactual soundness (Monteiro et al. 2023): composition, reversibility, and
    effectiveness of every aligned context that can be measured on a generated image.

    Effectiveness needs a measurement of the context on images that does not come from the twin
    itself (else it would be circular): glance's morphometrics for the Morpho-MNIST contexts on
    single-channel images; other contexts get ``None`` with the reason.
    """
    from glance.explain import Twin, soundness

    twin = Twin.from_glance(est)
    res: dict[str, Any] = {
        "composition": soundness.composition(twin, images),
        "reversibility": soundness.reversibility(
            twin, images, nodes=list(est.context_names_) or None
        ),
        "effectiveness": {},
    }
    for k, name in enumerate(est.context_names_):
        if name not in MEASURABLE_CONTEXTS or images.shape[1] != 1:
            res["effectiveness"][name] = None
            res.setdefault("effectiveness_unmeasured", {})[name] = (
                "no measurement of this context on generated images (glance measures the "
                "Morpho-MNIST morphometrics on single-channel images)"
            )
            continue

        def measure_one(imgs: torch.Tensor, name: str = name) -> np.ndarray:
            from glance.data.morphometrics import measure

            u8 = (imgs[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
            return np.asarray(measure(u8)[name], dtype=np.float64)

        res["effectiveness"][name] = soundness.effectiveness(
            twin, images, name, measure_one, unit=float(est.context_std_[k])
        )
    return res


@torch.no_grad()
def evaluate(
    est: Any,
    dataset: Any,
    *,
    out: str | os.PathLike[str] | None = None,
    n_images: int | None = None,
    random_state: int = 0,
) -> dict[str, Any]:
    """See :meth:`glance.Glance.evaluate`."""
    from glance.metrics.fidelity import alignment_r2, top1_agreement
    from glance.metrics.realism import fid, kid

    n = n_images or est.config_.train.eval_images
    idx = _subset(dataset, n, random_state)
    x = dataset.load_images(idx)
    f_logits, f_feats = _classify_all(est, x)
    z = torch.cat(
        [
            est.encoder_(f_feats[i : i + 512].to(est._device))[0].cpu()
            for i in range(0, len(f_feats), 512)
        ]
    )
    x_rec = est.generate(z)
    rec_logits, _ = _classify_all(est, x_rec)
    z_s = est.sample_concepts(len(idx), random_state=random_state)
    x_s = est.generate(z_s)
    s_logits, s_feats = _classify_all(est, x_s)
    m = len(est.context_names_)
    raw = (
        np.stack([dataset.attribute(c)[idx] for c in est.context_names_], axis=1)
        if m
        else np.zeros((len(idx), 0))
    )
    std = (raw - est.context_mean_) / est.context_std_
    r2 = alignment_r2(z[:, :m].numpy(), std) if m else np.zeros(0)
    result: dict[str, Any] = {
        "n_images": len(idx),
        "fidelity": top1_agreement(f_logits, est.surrogate_logits(z)),
        "reconstruction_fidelity": top1_agreement(f_logits, rec_logits),
        "sampled_fidelity": top1_agreement(est.surrogate_logits(z_s), s_logits),
        "alignment_r2": {c: _clean(r2[j]) for j, c in enumerate(est.context_names_)},
        "generated_alignment": _generated_alignment(est, z_s, x_s),
        "reconstruction_l1": float((x_rec - x).abs().mean()),
        "fid": _clean(fid(f_feats.numpy(), s_feats.numpy())),
        "kid": _clean(
            kid(f_feats.numpy(), s_feats.numpy(), n_subsets=20, random_state=random_state)
        ),
        "fit_seconds": _clean(getattr(est, "fit_seconds_", float("nan"))),
    }
    result.update(_disentanglement(raw, z.numpy(), random_state))
    result["counterfactual_soundness"] = _soundness(est, x[:SOUNDNESS_IMAGES])
    if out is not None:
        result["grids"] = _save_grids(Path(out), x, x_rec, x_s)
    return result


def _disentanglement(raw: np.ndarray, codes: np.ndarray, random_state: int) -> dict[str, Any]:
    from glance.metrics.disentanglement import dci, mig

    if raw.shape[1] == 0 or codes.shape[1] < 2:
        return {
            "mig": None,
            "dci": {"disentanglement": None, "completeness": None, "informativeness": None},
        }
    d = dci(raw, codes, random_state=random_state)
    return {"mig": _clean(mig(raw, codes)), "dci": {k: _clean(v) for k, v in d.items()}}


def _save_grids(out: Path, x: torch.Tensor, x_rec: torch.Tensor, x_s: torch.Tensor) -> dict:
    k = min(32, len(x))
    pairs = torch.stack([x[:k], x_rec[:k]], dim=1).reshape(-1, *x.shape[1:])  # real, recon
    rec_path, smp_path = out / "reconstructions.png", out / "samples.png"
    save_grid(pairs, rec_path, ncol=16)
    save_grid(x_s[:64], smp_path, ncol=8)
    return {"reconstructions": str(rec_path), "samples": str(smp_path)}


def save_grid(
    images: torch.Tensor, path: str | os.PathLike[str], ncol: int = 8, pad: int = 2
) -> Path:
    """Save images (N, C, H, W) in [0, 1] as one PNG grid (atomically)."""
    from PIL import Image

    n, c, h, w = images.shape
    nrow = max(1, math.ceil(n / ncol))
    grid = torch.ones(c, nrow * (h + pad) + pad, ncol * (w + pad) + pad)
    for i in range(n):
        r, q = divmod(i, ncol)
        y, x0 = pad + r * (h + pad), pad + q * (w + pad)
        grid[:, y : y + h, x0 : x0 + w] = images[i].clamp(0, 1)
    arr = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    img = Image.fromarray(arr[:, :, 0] if c == 1 else arr, mode="L" if c == 1 else "RGB")
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        img.save(fh, format="PNG")
    return path
