"""Faithfulness and quality of a fitted surrogate (DESIGN §2.5): the numbers users check.

The one home of evaluation: it composes the plain metric functions of :mod:`glance.metrics` and
the counterfactual soundness checks of :mod:`glance.explain.soundness` into the figures of
``glance evaluate``. All figures are measured on the images given (held-out ones for honest
numbers), with the *real* classifier judging every generated image.
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

__all__ = ["evaluate", "measure", "save_grid", "MEASURABLE_CONTEXTS"]

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


def evaluate(
    est: Any,
    dataset: Any,
    *,
    out: str | os.PathLike[str] | None = None,
    n_images: int | None = None,
    random_state: int = 0,
    truth: Any = None,
) -> dict[str, Any]:
    """See :meth:`glance.Glance.evaluate`."""
    result, pictures = measure(est, dataset, n_images=n_images, random_state=random_state)
    result["data"] = str(getattr(dataset, "source", ""))
    if truth is not None:
        result["graph"] = _graph_scores(est, truth)
    if out is not None:
        result["grids"] = _record(est, dataset, result, pictures, Path(out))
    return result


def _record(
    est: Any, dataset: Any, metrics: dict[str, Any], pictures: tuple, out: Path
) -> dict[str, str]:
    """Write the figures and grids to ``out``; return where the grids are.

    In a run they are sealed into it (the run's own held-out data at the top, other data under
    ``evaluations/<data>/``; ``metrics`` gains ``own_data`` and run-relative grid paths, as
    sealed); elsewhere the grids are written there as PNG (absolute paths).
    """
    from glance.run import GRIDS, Run

    def write(paths: dict[str, Path]) -> None:
        _save_grids(paths, *pictures)

    if not Run.is_run(out):
        paths = {k: out / v for k, v in GRIDS.items()}
        write(paths)
        return {k: str(v) for k, v in paths.items()}
    mine = getattr(est, "run_", None)
    run = mine if mine is not None and mine.path.resolve() == out.resolve() else Run.open(out)
    own = run.is_own_data(dataset)
    origin = getattr(dataset, "origin", None) or (str(getattr(dataset, "source", "data")), None)
    name = f"{Path(origin[0]).name}-{origin[1] or 'all'}-{_fingerprint(dataset)[:8]}"
    folder = run.evaluation_folder(own, name)
    metrics["own_data"] = own
    metrics["grids"] = {k: f"{folder}{v}" for k, v in GRIDS.items()}
    run.save_evaluation(metrics, folder=folder, write_grids=write)
    if not own:
        logger.info("evaluation on other data sealed in %s", run.path / folder)
    return metrics["grids"]


def _graph_scores(est: Any, truth: Any) -> dict[str, Any]:
    """SHD / precision / recall / F1 / orientation of ``est.graph_`` against a known graph."""
    from glance.exceptions import DataValidationError
    from glance.metrics.graph import truth_scores

    if getattr(est, "graph_", None) is None:
        raise DataValidationError(
            "scoring against a true graph needs the run's causal graph; run 'glance graph RUN' "
            "(Glance.global_explanation) first"
        )
    return truth_scores(est.graph_, truth)


def _fingerprint(dataset: Any) -> str:
    from glance.training.checkpoint import dataset_fingerprint

    return dataset_fingerprint(dataset)


@torch.no_grad()
def measure(
    est: Any, dataset: Any, *, n_images: int | None = None, random_state: int = 0
) -> tuple[dict[str, Any], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The figures of :func:`evaluate` and the pictures behind them: (inputs, reconstructions,
    samples)."""
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
    return result, (x, x_rec, x_s)


def _disentanglement(raw: np.ndarray, codes: np.ndarray, random_state: int) -> dict[str, Any]:
    from glance.metrics.disentanglement import dci, mig

    if raw.shape[1] == 0 or codes.shape[1] < 2:
        return {
            "mig": None,
            "dci": {"disentanglement": None, "completeness": None, "informativeness": None},
        }
    d = dci(raw, codes, random_state=random_state)
    return {"mig": _clean(mig(raw, codes)), "dci": {k: _clean(v) for k, v in d.items()}}


def _save_grids(
    paths: dict[str, Path], x: torch.Tensor, x_rec: torch.Tensor, x_s: torch.Tensor
) -> None:
    k = min(32, len(x))
    pairs = torch.stack([x[:k], x_rec[:k]], dim=1).reshape(-1, *x.shape[1:])  # real, recon
    save_grid(pairs, paths["reconstructions"], ncol=16)
    save_grid(x_s[:64], paths["samples"], ncol=8)


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
