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
from glance.metrics.readers import MORPHOMETRIC_CONTEXTS

__all__ = ["evaluate", "measure", "save_grid", "MEASURABLE_CONTEXTS"]

logger = logging.getLogger(__name__)

#: Contexts that can be measured on a generated single-channel image (glance morphometrics).
MEASURABLE_CONTEXTS = MORPHOMETRIC_CONTEXTS
#: Fewer other images than this in the evaluation data: the context readers (fitted there when
#: the training data is unknown) are fitted on the evaluation images themselves.
MIN_READER_IMAGES = 200
#: Reconstruction SSIM is the mean over at most this many evaluation images (bounded cost).
SSIM_IMAGES = 2000


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

_NO_GRAPH = (
    "no causal graph in the run: every other context counts as a non-descendant (run 'glance "
    "graph RUN' so that effects through the graph are not counted as cross-talk)"
)


def _soundness(
    est: Any, images: torch.Tensor, reader: Any, *, calibrated: bool = False
) -> dict[str, Any]:
    """Counterfactual soundness (Monteiro et al. 2023): composition, reversibility, and the
    effectiveness and specificity of an intervention on every aligned context that can be read.

    Both need a measurement of the contexts on images that does not come from the twin itself
    (else they would be circular): the context reader (:mod:`glance.metrics.readers`), i.e.
    glance's morphometrics for Morpho-MNIST contexts on single-channel images and a CNN trained
    on real images for the others. A context the reader cannot read gets ``None`` with the
    reason. Specificity of ``do(k)``: the mean absolute read change of each other readable
    context that is not a descendant of ``k`` in the twin's causal graph, as a fraction of the
    read change of ``k`` (both in context std units). A context whose reader may read ``k``'s
    change as its own (tied to ``k`` in the reader's training data,
    :meth:`~glance.metrics.readers.ContextReader.read_through`) is not compared either: it is
    listed under ``tied``.
    """
    from glance.explain import Twin, soundness

    twin = Twin.from_glance(est, calibrated=calibrated)
    names = list(est.context_names_)
    res: dict[str, Any] = {
        "composition": soundness.composition(twin, images),
        "reversibility": soundness.reversibility(twin, images, nodes=names or None),
        "effectiveness": {},
        "specificity": {},
    }
    if not names:
        return res
    res["calibration"] = _calibration(est)
    if twin.scm is None:
        res["specificity_note"] = _NO_GRAPH
    unreadable = [c for c in names if not reader.readable(c)]
    for k, name in enumerate(names):
        if name in unreadable:
            for key in ("effectiveness", "specificity"):
                res[key][name] = None
                res.setdefault(f"{key}_unmeasured", {})[name] = reader.reason(name)
            continue
        readout = soundness.read_interventions(twin, images, k, reader.read)
        res["effectiveness"][name] = soundness.effectiveness_from(
            readout, column=k, unit=float(est.context_std_[k])
        ) | {"read_through": reader.read_through(name)}
        descendants = [names[d] for d in twin.descendants(k) if d < len(names)]
        # A reader that may read this context's change as theirs cannot tell cross-talk from
        # its own shortcut (ContextReader.read_through): not compared, and said so.
        tied = [
            c
            for c in names
            if c not in descendants and c not in unreadable and name in reader.read_through(c)
        ]
        spec = soundness.specificity_from(
            readout, names, scale=reader.std, exclude=[*descendants, *tied, *unreadable]
        )
        spec["excluded"] = sorted(set(descendants) & set(names))
        spec["tied"] = tied
        spec["unreadable"] = [c for c in unreadable if c != name]
        res["specificity"][name] = spec
    return res


def _calibration(est: Any) -> dict[str, Any] | None:
    """What the fit measured its generator to draw per context (``drawn``: the read change per
    std asked) and the step a calibrated twin makes (``step``: in uncalibrated steps; the
    checks here use the uncalibrated twin); ``None`` where nothing was measured."""
    from glance.explain import Twin

    readback = getattr(est, "context_readback_", None)
    if readback is None:
        return None
    names = list(est.context_names_)
    render = Twin.from_glance(est, calibrated=True).node_render  # set: there is a readback
    return {
        "drawn": {c: _opt(readback[j, j]) for j, c in enumerate(names)},
        "step": {c: float(render[j, j]) for j, c in enumerate(names)},
    }


def _context_reader(est: Any, dataset: Any, idx: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """The context reader of the run's contexts and where it was fitted (``None`` without
    contexts): cached in the estimator's run when it has one."""
    from glance.metrics.readers import load_or_fit_reader

    names = list(est.context_names_)
    if not names:
        return None, {}
    data, exclude, note = _reader_data(est, dataset, idx)
    reader = load_or_fit_reader(
        data,
        names,
        run=getattr(est, "run_", None),
        random_state=int(getattr(est, "random_state", 0) or 0),
        exclude=exclude,
    )
    rec = reader.record
    info = {
        "data": note,
        "fingerprint": rec.get("fingerprint"),
        "n_images": rec.get("n_images"),
        "n_heldout": rec.get("n_heldout"),
        "seconds": rec.get("seconds"),
        "cached": rec.get("cached"),
        "settings": rec.get("settings"),
    }
    return reader, info


def _reader_data(est: Any, dataset: Any, idx: np.ndarray) -> tuple[Any, Any, str]:
    """(dataset, indices to leave out, description) the context readers are fitted on: the
    run's training data when it is recorded and unchanged, else the evaluation data."""
    from glance.exceptions import CheckpointError, DataValidationError

    record = getattr(est, "train_data_", None)
    if isinstance(record, dict) and isinstance(record.get("data"), str):
        try:
            return (
                _training_dataset(est, record),
                None,
                f"training data of the run ({record['data']}, split {record.get('train_split')})",
            )
        except (DataValidationError, CheckpointError, OSError) as exc:
            logger.warning("context readers fitted on the evaluation data: %s", exc)
    if len(dataset) - len(idx) >= MIN_READER_IMAGES:
        return dataset, idx, "evaluation data without the images measured (no training data)"
    return dataset, None, "evaluation data, images measured included (no training data)"


def _training_dataset(est: Any, record: dict[str, Any]) -> Any:
    """The recorded training split, refused if it changed since the fit."""
    run = getattr(est, "run_", None)
    if run is not None:
        return run.dataset("train")
    from glance.data import load_dataset
    from glance.exceptions import DataValidationError

    split = record.get("train_split")
    ds = load_dataset(record["data"], split)
    expected = (record.get("fingerprints") or {}).get(str(split))
    if expected is not None and _fingerprint(ds) != expected:
        raise DataValidationError(f"{record['data']} (split {split}) changed since the fit")
    return ds


def _readback(reader: Any, x: torch.Tensor, x_rec: torch.Tensor, raw: np.ndarray) -> dict:
    """``readback_r2`` (the reader on ``G(E(x))`` against ``x``'s own contexts), the reasons
    where it is not given, and the reader's R² on the real evaluation images beside it."""
    from glance.metrics.readers import r2_score

    real, recon = reader.read(x), reader.read(x_rec)
    summary = reader.summary()
    out: dict[str, Any] = {"readback_r2": {}, "readers": {}}
    for j, c in enumerate(reader.contexts):
        out["readers"][c] = {**summary[c], "evaluation_r2": _opt(r2_score(raw[:, j], real[:, j]))}
        value = _opt(r2_score(raw[:, j], recon[:, j])) if reader.readable(c) else None
        out["readback_r2"][c] = value
        if value is None:
            out.setdefault("readback_r2_unmeasured", {})[c] = reader.reason(c) or (
                f"fewer than 2 evaluation images with {c!r} known, or {c!r} constant there"
            )
    return out


def _opt(value: float | None) -> float | None:
    return None if value is None else _clean(value)


def _ssim(x: torch.Tensor, x_rec: torch.Tensor) -> float | None:
    """Mean SSIM (Wang et al. 2004; scikit-image, 7x7 window, data range 1) of each image and
    its reconstruction, over the first :data:`SSIM_IMAGES`; ``None`` for images under 7 px."""
    from skimage.metrics import structural_similarity

    n = min(len(x), SSIM_IMAGES)
    if n == 0 or min(x.shape[-2:]) < 7:
        return None
    a = x[:n].clamp(0, 1).double().numpy()
    b = x_rec[:n].detach().cpu().clamp(0, 1).double().numpy()
    if a.shape[1] == 1:
        vals = [structural_similarity(a[i, 0], b[i, 0], data_range=1.0) for i in range(n)]
    else:
        vals = [structural_similarity(a[i], b[i], channel_axis=0, data_range=1.0) for i in range(n)]
    return _clean(float(np.mean(vals)))


def _edges(x: torch.Tensor, x_rec: torch.Tensor) -> float | None:
    """Mean over the first :data:`SSIM_IMAGES` of the correlation between the edges of what
    varies in each image and in its reconstruction
    (:func:`glance.metrics.structure.edge_correlation`); ``None`` for images under 3 px or
    when no image differs from the mean."""
    from glance.metrics.structure import edge_correlation

    n = min(len(x), SSIM_IMAGES)
    if n < 2 or min(x.shape[-2:]) < 3:
        return None
    r = edge_correlation(x[:n].clamp(0, 1), x_rec[:n].detach().cpu().clamp(0, 1))
    return _clean(float(np.nanmean(r))) if np.isfinite(r).any() else None


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
    r2_linear = alignment_r2(z[:, :m].numpy(), std, method="linear") if m else np.zeros(0)
    result.update(_disentanglement(raw, z.numpy(), random_state, r2_linear))
    result["reconstruction_ssim"] = _ssim(x, x_rec)
    result["reconstruction_edges"] = _edges(x, x_rec)
    reader, result["readers_training"] = _context_reader(est, dataset, idx)
    if reader is not None:
        result.update(_readback(reader, x, x_rec, raw))
    else:
        result.update({"readback_r2": {}, "readers": {}})
    result["counterfactual_soundness"] = _soundness(est, x[:SOUNDNESS_IMAGES], reader)
    return result, (x, x_rec, x_s)


def _disentanglement(
    raw: np.ndarray, codes: np.ndarray, random_state: int, r2: np.ndarray
) -> dict[str, Any]:
    from glance.metrics.disentanglement import dci, mig, mig_reference

    if raw.shape[1] == 0 or codes.shape[1] < 2:
        return {
            "mig": None,
            "mig_reference": None,
            "dci": {"disentanglement": None, "completeness": None, "informativeness": None},
        }
    d = dci(raw, codes, random_state=random_state)
    return {
        "mig": _clean(mig(raw, codes)),
        # What ideal codes exactly as aligned would score: MIG is low by construction where
        # the contexts are correlated in the data, whatever the twin does.
        "mig_reference": _clean(mig_reference(raw, r2, codes.shape[1], random_state=random_state)),
        "dci": {k: _clean(v) for k, v in d.items()},
    }


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
