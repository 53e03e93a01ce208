"""Anti-causal context readers: read every context back from an image, independently of the twin.

A figure about a generated image ("does the counterfactual have the thickness asked for?",
"does ``G(E(x))`` keep the hue of ``x``?") needs a measurement of the context on images that does
not come from the twin itself, else it would be circular. The counterfactual benchmark of
Melistas et al. (NeurIPS 2024) trains, for every context, an *anti-causal predictor* on real
images and reads generated ones with it. :class:`ContextReader` does the same:

- for a single-channel image and a Morpho-MNIST morphometric context
  (:data:`MORPHOMETRIC_CONTEXTS`), glance's own morphometrics
  (:func:`glance.data.morphometrics.measure`), calibrated by a least-squares line on the real
  training images;
- for every other context, one small CNN (:class:`ContextReaderNet`) trained on the real training
  images to predict all of them at once, standardised with the training mean and std.

Each context's reader is scored on real images it was not fitted on (``heldout_fraction`` of
them). A context whose held-out R² is below :data:`READABLE_R2` is *unreadable*: the reader says
so (:meth:`ContextReader.reason`) and the figures that would need it are not given. A trained
reader can be cached in a run (:func:`load_or_fit_reader`): weights as safetensors, the rest as
JSON, reused while the training data's fingerprint, the contexts and the settings match.

References
----------
Melistas, Spyrou, Gkouti, Sanchez, Vlontzos, Papanastasiou, Tsaftaris (2024), "Benchmarking
counterfactual image generation", NeurIPS Datasets and Benchmarks.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glance._io import atomic_write_json, load_safetensors, save_safetensors, to_jsonable
from glance.exceptions import CheckpointCorruptError, ShapeError
from glance.metrics._reader_net import ContextReaderNet, ReaderConfig, shrink, train_reader_net

__all__ = [
    "ContextReader",
    "ContextReaderNet",
    "ReaderConfig",
    "fit_reader",
    "load_or_fit_reader",
    "r2_score",
    "MORPHOMETRIC_CONTEXTS",
    "READABLE_R2",
]

logger = logging.getLogger(__name__)

#: Contexts read with glance's morphometrics on single-channel images (Morpho-MNIST).
MORPHOMETRIC_CONTEXTS = ("area", "length", "thickness", "slant", "width", "height", "intensity")
#: Below this held-out R² a context cannot be read from images: its figures are not given.
READABLE_R2 = 0.80
#: Held-out values below this count give no R² worth reporting (the context is unreadable).
MIN_HELDOUT = 10
#: 2: the record names the contexts tied in the training data (``tied``); older cached readers
#: are refitted.
FORMAT_VERSION = 2
KIND = "glance-context-reader"
_JSON = "reader.json"
_WEIGHTS = "reader.safetensors"


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> float | None:
    """R² of ``y_pred`` against ``y_true`` over the rows where both are finite (``None`` when
    fewer than 2 rows or ``y_true`` is constant there)."""
    t, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    ok = np.isfinite(t) & np.isfinite(p)
    if ok.sum() < 2:
        return None
    t, p = t[ok], p[ok]
    total = float(((t - t.mean()) ** 2).sum())
    if total <= 1e-12 * max(1.0, float((t**2).sum())):
        return None
    return 1.0 - float(((t - p) ** 2).sum()) / total


@dataclasses.dataclass
class ContextReader:
    """Reads contexts from images: a CNN and/or calibrated morphometrics, with held-out scores.

    Obtain one from :func:`fit_reader` or :func:`load_or_fit_reader`.

    Attributes
    ----------
    contexts
        The context names, in the order of :meth:`read`'s columns.
    sources
        Per context, ``"cnn"`` or ``"morphometrics"``.
    mean, std
        Per context, training mean and std (raw units); the CNN predicts ``(c - mean) / std``.
    calibration
        Per morphometric context, ``(slope, intercept)`` from the measured value to the context.
    heldout_r2
        Per context, R² on real images the reader was not fitted on (``None``: not measurable).
    reasons
        Per unreadable context, why (``None`` for a readable one).
    net
        The CNN (outputs in the order of the ``"cnn"`` contexts), or ``None`` if every context
        is read with morphometrics.
    record
        Provenance: training data fingerprint, image shape, settings, counts, seconds.
    """

    contexts: tuple[str, ...]
    sources: dict[str, str]
    mean: np.ndarray
    std: np.ndarray
    calibration: dict[str, tuple[float, float]]
    heldout_r2: dict[str, float | None]
    reasons: dict[str, str | None]
    net: ContextReaderNet | None
    record: dict[str, Any]

    @property
    def cnn_contexts(self) -> list[str]:
        """Contexts the CNN predicts, in its output order."""
        return [c for c in self.contexts if self.sources[c] == "cnn"]

    def readable(self, name: str) -> bool:
        """Whether ``name`` can be read from images (held-out R² at least :data:`READABLE_R2`)."""
        return self.reasons.get(name) is None

    def reason(self, name: str) -> str | None:
        """Why ``name`` cannot be read (``None`` if it can)."""
        return self.reasons.get(name)

    def read_through(self, name: str) -> list[str]:
        """Contexts whose change this reader may read as a change of ``name``.

        A CNN fitted on observational images learns whatever evidence predicts a context there,
        and where two contexts are tied in its training data (``record["tied"]``, training values
        correlated beyond :data:`glance.training.tasks.TIED_CORRELATION`) that can be the other
        context's evidence: fitted on causal shapes, where the hue is the shape's own colour, the
        reader of ``shape`` reads a circle painted in the square's colour as a square. So a
        change read in ``name`` when one of these moves alone is no evidence that ``name``
        changed. Empty for a context measured by morphometrics (it measures the image itself).
        """
        if self.sources.get(name) != "cnn":
            return []
        pairs = self.record.get("tied") or []
        return sorted({b if a == name else a for a, b in pairs if name in (a, b)})

    @torch.no_grad()
    def read(self, images: torch.Tensor, *, batch_size: int = 512) -> np.ndarray:
        """Contexts read from ``images`` (N, C, H, W) in [0, 1], raw units, shape (N, m).

        Every column is filled, unreadable contexts included (their values mean little: check
        :meth:`readable`); NaN where morphometrics find no digit (a blank image).
        """
        shape = tuple(self.record.get("image_shape") or ())
        if (
            not isinstance(images, torch.Tensor)
            or images.ndim != 4
            or (shape and images.shape[1] != shape[0])
        ):
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
            raise ShapeError(
                f"'images' of ContextReader.read must be a tensor (N, {shape[0] if shape else 'C'}"
                f", H, W); got {got}"
            )
        x = images.detach()
        out = np.full((len(x), len(self.contexts)), np.nan)
        cnn = self.cnn_contexts
        if cnn and self.net is not None and len(x):
            cols = [self.contexts.index(c) for c in cnn]
            out[:, cols] = _predict(self.net, x, batch_size) * self.std[cols] + self.mean[cols]
        morph = [c for c in self.contexts if self.sources[c] == "morphometrics"]
        if morph and len(x):
            measured = _measure(x)
            for c in morph:
                a, b = self.calibration[c]
                out[:, self.contexts.index(c)] = a * measured[c] + b
        return out

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per context: ``heldout_r2``, ``source``, ``readable``, ``reason`` and
        ``read_through`` (:meth:`read_through`), JSON-ready."""
        return {
            c: {
                "heldout_r2": _finite(self.heldout_r2.get(c)),
                "source": self.sources[c],
                "readable": self.readable(c),
                "reason": self.reason(c),
                "read_through": self.read_through(c),
            }
            for c in self.contexts
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything but the weights, JSON-ready."""
        return to_jsonable(
            {
                "format_version": FORMAT_VERSION,
                "kind": KIND,
                "contexts": list(self.contexts),
                "cnn_contexts": self.cnn_contexts,
                "has_net": self.net is not None,
                "readers": {
                    c: {
                        **self.summary()[c],
                        "mean": float(self.mean[k]),
                        "std": float(self.std[k]),
                        "calibration": list(self.calibration[c]) if c in self.calibration else None,
                    }
                    for k, c in enumerate(self.contexts)
                },
                **self.record,
            }
        )

    def save(self, directory: str | Path) -> None:
        """Write ``reader.json`` (and ``reader.safetensors`` when there is a CNN) to a folder."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.net is not None:
            save_safetensors(directory / _WEIGHTS, self.net.state_dict())
        atomic_write_json(directory / _JSON, self.to_dict())

    @classmethod
    def from_dict(
        cls, d: Mapping[str, Any], weights: Mapping[str, torch.Tensor] | None
    ) -> ContextReader:
        """Rebuild a reader from :meth:`to_dict` and the CNN's weights (safetensors only)."""
        contexts = tuple(d["contexts"])
        per = d["readers"]
        arch = d["architecture"]
        net = None
        if d.get("has_net"):
            if weights is None:
                raise CheckpointCorruptError("context reader: the CNN's weights are missing")
            net = ContextReaderNet(
                arch["in_channels"],
                arch["n_outputs"],
                width=arch["width"],
                resolution=arch["resolution"],
            )
            net.load_state_dict(dict(weights))
            net.eval()
        record = {
            k: v
            for k, v in d.items()
            if k not in ("format_version", "kind", "contexts", "cnn_contexts", "has_net", "readers")
        }
        return cls(
            contexts=contexts,
            sources={c: per[c]["source"] for c in contexts},
            mean=np.array([per[c]["mean"] for c in contexts], dtype=np.float64),
            std=np.array([per[c]["std"] for c in contexts], dtype=np.float64),
            calibration={
                c: tuple(per[c]["calibration"]) for c in contexts if per[c]["calibration"]
            },
            heldout_r2={c: per[c]["heldout_r2"] for c in contexts},
            reasons={c: per[c]["reason"] for c in contexts},
            net=net,
            record=record,
        )


def _finite(v: Any) -> float | None:
    return None if v is None or not math.isfinite(float(v)) else float(v)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _measure(images: torch.Tensor) -> dict[str, np.ndarray]:
    from glance.data.morphometrics import measure

    u8 = (images[:, 0].float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return measure(u8)


def fit_reader(
    dataset: Any,
    contexts: Sequence[str],
    *,
    random_state: int = 0,
    config: ReaderConfig | None = None,
    exclude: np.ndarray | Sequence[int] | None = None,
    fingerprint: str | None = None,
) -> ContextReader:
    """Fit a :class:`ContextReader` of ``contexts`` on the real images of ``dataset``.

    Parameters
    ----------
    dataset
        An :class:`~glance.data.ImageDataset` with the context columns (NaN = unknown).
    contexts
        Context names to read.
    random_state
        Seed of the subset, the held-out split, the CNN's initialisation and batch order (same
        seed, data and thread count: the same reader).
    config
        Architecture and training settings; default :class:`ReaderConfig()`.
    exclude
        Indices of ``dataset`` not to fit on (e.g. the images a figure is measured on).
    fingerprint
        The dataset's fingerprint, recorded (computed when not given).

    Returns
    -------
    ContextReader
    """
    cfg = config or ReaderConfig()
    t0 = time.perf_counter()
    names = [str(c) for c in contexts]
    idx = _training_indices(len(dataset), cfg.max_images, random_state, exclude)
    if len(idx) == 0:
        raise ShapeError("a context reader needs training images; got none")
    values = np.stack([np.asarray(dataset.attribute(c), dtype=np.float64)[idx] for c in names], 1)
    x, native = _load(dataset, idx, cfg.resolution)
    perm = np.random.default_rng(random_state).permutation(len(idx))
    n_hold = max(1, int(round(cfg.heldout_fraction * len(idx))))
    hold, train = np.sort(perm[:n_hold]), np.sort(perm[n_hold:])
    one = native is not None and cfg.morphometrics
    sources = {c: "morphometrics" if one and c in MORPHOMETRIC_CONTEXTS else "cnn" for c in names}
    mean, std, reasons = _standardisation(values[train], names)
    predicted = np.full_like(values, np.nan)
    morph = [k for k, c in enumerate(names) if sources[c] == "morphometrics"]
    calibration, predicted[:, morph] = _fit_morphometrics(native, values, names, morph, train)
    cnn = [k for k, c in enumerate(names) if sources[c] == "cnn"]
    net, steps = None, 0
    if cnn and len(train) >= 2:  # else the CNN contexts are unreadable (too few held out)
        target = (values[:, cnn] - mean[cnn]) / std[cnn]
        net, steps = train_reader_net(x[train], target[train], cfg, random_state)
        predicted[hold[:, None], cnn] = _predict(net, x[hold]) * std[cnn] + mean[cnn]
    heldout = {c: _heldout_r2(values[hold, k], predicted[hold, k]) for k, c in enumerate(names)}
    for k, c in enumerate(names):
        reasons.setdefault(c, _unreadable(c, sources[c], heldout[c], values[hold, k]))
    record = {
        "fingerprint": fingerprint or _fingerprint(dataset),
        "tied": _tied(values[train], names),
        "image_shape": list(dataset.image_shape),
        "settings": cfg.to_dict(),
        "random_state": int(random_state),
        "excluded": _excluded_key(exclude),
        "architecture": {"in_channels": int(x.shape[1]), "n_outputs": len(cnn)}
        | {"width": cfg.width, "resolution": cfg.resolution},
        "n_images": len(idx),
        "n_train": len(train),
        "n_heldout": len(hold),
        "steps": steps,
        "seconds": time.perf_counter() - t0,
    }
    logger.info(
        "context reader fitted on %d images in %.1f s: %s",
        len(idx),
        record["seconds"],
        ", ".join(f"{c} R² {_fmt(heldout[c])}" for c in names),
    )
    return ContextReader(
        contexts=tuple(names),
        sources=sources,
        mean=mean,
        std=std,
        calibration=calibration,
        heldout_r2=heldout,
        reasons=reasons,
        net=net,
        record=record,
    )


def _load(
    dataset: Any, idx: np.ndarray, resolution: int, chunk: int = 500
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images ``idx`` shrunk to ``resolution`` (what the CNN sees) and, for single-channel
    images, at full size (what the morphometrics measure); loaded chunk by chunk, so large
    images are never all in memory as floats at once."""
    small, native = [], []
    for i in range(0, len(idx), chunk):
        part = dataset.load_images(idx[i : i + chunk])
        small.append(shrink(part, resolution))
        if part.shape[1] == 1:
            native.append(part)
    return torch.cat(small), (torch.cat(native) if native else None)


def _tied(values: np.ndarray, names: Sequence[str]) -> list[list[str]]:
    """Pairs of contexts tied in the reader's training values (``[a, b]`` in context order)."""
    from glance.training.tasks import tied_pairs

    t = np.triu(tied_pairs(values))
    return [[names[j], names[k]] for j, k in zip(*np.nonzero(t), strict=True)]


def _fingerprint(dataset: Any) -> str:
    from glance.training.checkpoint import dataset_fingerprint

    return dataset_fingerprint(dataset)


def _standardisation(
    values: np.ndarray, names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, dict[str, str | None]]:
    """Per column mean and std over the known values (std 1 and a reason where constant)."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: "mean of empty"
        mean = np.nan_to_num(np.nanmean(values, axis=0)) if len(values) else np.zeros(len(names))
        std = np.nan_to_num(np.nanstd(values, axis=0)) if len(values) else np.zeros(len(names))
    reasons: dict[str, str | None] = {
        c: "constant (or unknown) in the real training images: nothing to read"
        for k, c in enumerate(names)
        if not std[k] > 1e-12
    }
    return mean, np.where(std > 1e-12, std, 1.0), reasons


def _fit_morphometrics(
    images: torch.Tensor | None,
    values: np.ndarray,
    names: Sequence[str],
    cols: list[int],
    train: Any,
) -> tuple[dict[str, tuple[float, float]], np.ndarray]:
    """Calibration lines of the morphometric columns (fitted on ``train``) and their reading of
    every image, shape (N, len(cols))."""
    if not cols or images is None:
        return {}, np.empty((len(values), 0))
    measured = _measure(images)
    calibration, out = {}, np.empty((len(values), len(cols)))
    for i, k in enumerate(cols):
        m = measured[names[k]]
        calibration[names[k]] = a, b = _calibrate(m[train], values[train, k])
        out[:, i] = a * m + b
    return calibration, out


@torch.no_grad()
def _predict(net: ContextReaderNet, x: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    net.eval()
    if len(x) == 0:
        return np.empty((0, net.n_outputs))
    # batch by batch: a float copy of every image at once could be larger than the images
    parts = [
        net(x[i : i + batch_size].float().cpu().clamp(0, 1)) for i in range(0, len(x), batch_size)
    ]
    return torch.cat(parts).numpy()


def _training_indices(
    n: int, max_images: int, random_state: int, exclude: np.ndarray | Sequence[int] | None
) -> np.ndarray:
    idx = np.arange(n)
    if exclude is not None and len(exclude):
        idx = np.setdiff1d(idx, np.asarray(exclude, dtype=np.int64))
    if len(idx) > max_images:
        idx = np.sort(np.random.default_rng(random_state).choice(idx, max_images, replace=False))
    return idx


def _excluded_key(exclude: np.ndarray | Sequence[int] | None) -> str | None:
    """A short digest of the excluded indices (part of the cache key)."""
    if exclude is None or not len(exclude):
        return None
    import hashlib

    arr = np.unique(np.asarray(exclude, dtype=np.int64))
    return f"{len(arr)}:{hashlib.sha256(arr.tobytes()).hexdigest()[:16]}"


def _calibrate(measured: np.ndarray, value: np.ndarray) -> tuple[float, float]:
    """Least-squares line ``value ≈ a · measured + b`` over the rows where both are finite."""
    ok = np.isfinite(measured) & np.isfinite(value)
    if ok.sum() < 2 or np.ptp(measured[ok]) <= 0:
        return 1.0, 0.0
    a, b = np.polyfit(measured[ok], value[ok], 1)
    return float(a), float(b)


def _heldout_r2(truth: np.ndarray, pred: np.ndarray) -> float | None:
    if int((np.isfinite(truth) & np.isfinite(pred)).sum()) < MIN_HELDOUT:
        return None
    return r2_score(truth, pred)


def _unreadable(name: str, source: str, r2: float | None, truth: np.ndarray) -> str | None:
    if r2 is None:
        n = int(np.isfinite(truth).sum())
        return (
            f"only {n} held-out real images with {name!r} known (at least {MIN_HELDOUT} needed to "
            "score the reader)"
        )
    if r2 < READABLE_R2:
        how = "glance's morphometrics" if source == "morphometrics" else "the reader CNN"
        return (
            f"{how} read {name!r} from held-out real images with R² {r2:.2f} < {READABLE_R2:.2f}:"
            " it cannot be read from an image, so no figure that needs it is given"
        )
    return None


def _cache_key(d: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("fingerprint", "image_shape", "settings", "random_state", "excluded")
    return {
        "format_version": d.get("format_version"),
        "contexts": list(d.get("contexts") or []),
        **{k: to_jsonable(d.get(k)) for k in keys},
    }


def load_or_fit_reader(
    dataset: Any,
    contexts: Sequence[str],
    *,
    run: Any = None,
    random_state: int = 0,
    config: ReaderConfig | None = None,
    exclude: np.ndarray | Sequence[int] | None = None,
) -> ContextReader:
    """The reader of ``contexts`` fitted on ``dataset``: cached in ``run`` when there is one.

    In a run (a :class:`glance.run.Run`), the reader sealed in its ``readers_dir`` is reused when
    its training data fingerprint, contexts, image shape, settings, seed and excluded images all
    match; otherwise it is fitted and sealed there (replacing the old one) in one transaction.
    A run that cannot be written (read-only, busy) keeps its old cache; the new reader is used
    in memory and a warning says so. Without a run the reader is fitted in memory.
    """
    cfg = config or ReaderConfig()
    fingerprint = _fingerprint(dataset)
    if run is not None:
        cached = _cached(run, fingerprint, contexts, dataset, cfg, random_state, exclude)
        if cached is not None:
            return cached
    reader = fit_reader(
        dataset,
        contexts,
        random_state=random_state,
        config=cfg,
        exclude=exclude,
        fingerprint=fingerprint,
    )
    if run is not None:
        from glance.exceptions import RunBusyError

        try:
            run.write_dir(run.readers_dir, reader.save)
        except (OSError, RunBusyError) as exc:
            logger.warning("context reader not cached in %s (%s); used in memory", run.path, exc)
    reader.record["cached"] = False
    return reader


def _cached(
    run: Any,
    fingerprint: str,
    contexts: Sequence[str],
    dataset: Any,
    cfg: ReaderConfig,
    random_state: int,
    exclude: Any,
) -> ContextReader | None:
    """The reader sealed in ``run`` if it was fitted the same way on the same data, else None."""
    d = run.read_json(f"{run.readers_dir}/{_JSON}")
    if not isinstance(d, Mapping) or d.get("kind") != KIND:
        return None
    want = {
        "format_version": FORMAT_VERSION,
        "contexts": [str(c) for c in contexts],
        "fingerprint": fingerprint,
        "image_shape": list(dataset.image_shape),
        "settings": cfg.to_dict(),
        "random_state": int(random_state),
        "excluded": _excluded_key(exclude),
    }
    if _cache_key(d) != want:
        logger.info("context reader in %s does not match the data or settings; refitting", run.path)
        return None
    weights = None
    if d.get("has_net"):
        path = run.file(f"{run.readers_dir}/{_WEIGHTS}")
        if path is None:
            return None
        weights = load_safetensors(path)
    try:
        reader = ContextReader.from_dict(d, weights)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        logger.warning("context reader in %s unreadable (%s); refitting", run.path, exc)
        return None
    reader.record["cached"] = True
    return reader
