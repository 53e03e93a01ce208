"""The :class:`Glance` estimator: fit the twin surrogate of a classifier, then explain with it.

scikit-learn contract: ``__init__`` stores keyword-only hyper-parameters unchanged (no logic, no
validation); :meth:`Glance.fit` validates them, trains, sets the fitted ``*_`` attributes and
returns ``self``; every other method raises :class:`~glance.exceptions.NotFittedError` before a
fit. A fitted estimator is saved as a self-contained run directory (docs/architecture.md) and
loaded back with :func:`load`.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from glance._io import (
    FORMAT_VERSION,
    atomic_directory,
    atomic_write_json,
    atomic_write_text,
    load_safetensors,
    save_safetensors,
    verify_manifest,
    write_manifest,
)
from glance._version import __version__
from glance.exceptions import (
    CheckpointCorruptError,
    CheckpointError,
    ConfigError,
    DataValidationError,
    NotFittedError,
    ShapeError,
)
from glance.training.checkpoint import dataset_fingerprint, load_module_state
from glance.training.config import GlanceConfig, resolve_config
from glance.training.tasks import ConceptMixture

__all__ = ["Glance", "load"]

logger = logging.getLogger(__name__)

_FITTED = "encoder_"


def _batches(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


class Glance:
    """Global-to-local, architecture-neutral concept explanations of an image classifier.

    Parameters
    ----------
    classifier : nn.Module or ClassifierAdapter
        The classifier to explain (takes ``[0, 1]`` images); never modified.
    layer : str, optional
        Feature layer ``h`` (dotted module name); default: the last convolutional stage.
    contexts : sequence of str
        Dataset attribute columns to align concept dims with, in order (e.g.
        ``("thickness", "intensity")``); values may be missing (NaN).
    preset : str
        Registered preset (``tiny``, ``fast``, ``default``, ``paper``); see ``glance.presets``.
    config : GlanceConfig, mapping or path, optional
        Overrides of the preset (a complete config, a nested mapping or a YAML/TOML file).
    random_state : int
        Seed of everything random in the fit (same seed, data and machine: same result).
    device : str
        ``"cpu"``, ``"cuda"`` or ``"cuda:1"`` (mixed precision on CUDA per the config).
    quiet : bool
        No progress bars.

    Attributes
    ----------
    adapter_ : ClassifierAdapter
        The classifier split into features ``h`` and logits.
    encoder_, head_, generator_, discriminator_ : nn.Module
        Concept encoder E, surrogate head S, generator G (exponential moving average) and D.
    mixture_ : ConceptMixture
        Gaussian mixture over the encoded training concepts (for sampling).
    config_ : GlanceConfig
        The resolved configuration.
    context_names_ : list of str
    context_levels_ : list of (list of float or None)
        Observed levels of each discrete context (at most ``MAX_LEVELS`` distinct values, e.g.
        a 0/1 flag), ``None`` for a continuous one; interventions move between levels.
    context_mean_, context_std_ : ndarray of shape (n_contexts,)
        Training statistics standardising each context (aligned dim j ≈ standardised c_j).
    concept_names_ : list of str
        Context names, then ``concept_0`` ... for the free dims (length ``d``).
    classes_ : list of str
    history_ : list of dict
        Logged training losses (every 10 steps).
    fit_seconds_ : float
        Wall time of :meth:`fit`.

    Examples
    --------
    >>> est = Glance(model, contexts=["thickness", "intensity"], preset="fast")  # doctest: +SKIP
    >>> est.fit(train_set, out="run")  # doctest: +SKIP
    >>> est.evaluate(test_set)["fidelity"]  # doctest: +SKIP
    """

    #: Test seam: a :class:`glance.training.loop.Hooks` used by the next fit (fault injection).
    _hooks: Any = None

    def __init__(
        self,
        classifier: Any,
        *,
        layer: str | None = None,
        contexts: Sequence[str] = (),
        preset: str = "fast",
        config: Any = None,
        random_state: int = 0,
        device: str = "cpu",
        quiet: bool = False,
    ) -> None:
        self.classifier = classifier
        self.layer = layer
        self.contexts = contexts
        self.preset = preset
        self.config = config
        self.random_state = random_state
        self.device = device
        self.quiet = quiet

    # -- parameters ----------------------------------------------------------------------------

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor parameters (scikit-learn convention)."""
        names = (
            "classifier",
            "layer",
            "contexts",
            "preset",
            "config",
            "random_state",
            "device",
            "quiet",
        )
        return {n: getattr(self, n) for n in names}

    def _validate_params(self, dataset: Any) -> GlanceConfig:
        if isinstance(self.contexts, str) or not all(isinstance(c, str) for c in self.contexts):
            raise ConfigError(
                f"'contexts' of Glance must be a sequence of column names; got {self.contexts!r}"
            )
        if len(set(self.contexts)) != len(self.contexts):
            raise ConfigError(f"'contexts' of Glance has duplicates: {list(self.contexts)}")
        if not isinstance(self.random_state, (int, np.integer)) or isinstance(
            self.random_state, bool
        ):
            raise ConfigError(
                f"'random_state' of Glance must be an integer; got {self.random_state!r}"
            )
        if not isinstance(self.preset, str):
            raise ConfigError(f"'preset' of Glance must be a preset name; got {self.preset!r}")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ConfigError(
                f"'device' of Glance is not a torch device: {self.device!r}"
            ) from None
        for name in self.contexts:
            dataset.attribute(name)  # raises DataValidationError listing the columns
        if len(dataset) < 2:
            raise DataValidationError(f"{dataset.source}: {len(dataset)} images; need at least 2")
        return resolve_config(self.preset, self.config)

    def _check_fitted(self) -> None:
        if not hasattr(self, _FITTED):
            raise NotFittedError(
                "This Glance instance is not fitted yet. Call 'fit' with appropriate arguments "
                "before using this estimator."
            )

    # -- fit ------------------------------------------------------------------------------------

    def fit(
        self, dataset: Any, *, out: str | os.PathLike[str] | None = None, resume: bool = False
    ) -> Glance:
        """Fit the concept encoder, surrogate head and generator to ``dataset``.

        Parameters
        ----------
        dataset : ImageDataset
            Training images with the context attribute columns.
        out : path, optional
            Run directory for checkpoints, ``metrics.jsonl`` and the saved model. It must be
            absent or empty unless ``resume``. Without it, checkpoints live in a temporary
            directory (still used for rollbacks) and nothing is kept.
        resume : bool
            Continue ``out`` from its last complete checkpoint (same config, data and seed give
            the same result as an uninterrupted fit).

        Returns
        -------
        Glance
            ``self``, fitted.

        Raises
        ------
        ConfigError, DataValidationError, IncompatibleClassifierError
            Invalid parameters or data (before any training).
        CheckpointError
            ``out`` is a non-empty directory and ``resume`` is false, or resume is impossible.
        TrainingDivergedError
            Non-finite losses persisted through the rollback budget.
        """
        from glance.training.distributed import DistContext
        from glance.training.loop import Trainer, fit_loop

        t0 = time.perf_counter()
        config = self._validate_params(dataset)
        dist = DistContext.from_env(self.device)
        run = _prepare_run_dir_collective(out, resume, dist)
        self._reset()
        self.config_ = config
        self.adapter_ = _make_adapter(self.classifier, self.layer, dataset, dist.device)
        data = self._prepare_data(dataset, config, dist.device)
        parts = self._build_parts(config, dataset, data.features, dist.device)
        tmp = None if run is not None else tempfile.TemporaryDirectory(prefix="glance-fit-")
        root = run if run is not None else Path(tmp.name)
        try:
            if run is not None and dist.is_main and not resume:
                atomic_write_text(run / "config.yaml", _yaml(config, self, dataset.source))
            trainer = Trainer(
                parts,
                data,
                config,
                checkpoint_dir=root / "checkpoints",
                metrics_path=root / "metrics.jsonl",
                seed=int(self.random_state),
                fingerprint=dataset_fingerprint(dataset),
                dist=dist,
                quiet=self.quiet,
                hooks=self._hooks,
            )
            self.history_ = fit_loop(trainer, resume=resume)
        finally:
            if tmp is not None:
                tmp.cleanup()
        self._set_fitted(parts, trainer, dataset)
        self.fit_seconds_ = time.perf_counter() - t0
        if run is not None and dist.is_main:
            self.save(run)
        dist.barrier()
        return self

    def _reset(self) -> None:
        for key in [k for k in vars(self) if k.endswith("_") and not k.startswith("_")]:
            delattr(self, key)

    def _prepare_data(self, dataset: Any, config: GlanceConfig, device: torch.device) -> Any:
        from glance.training.loop import TrainData

        raw = (
            np.stack([dataset.attribute(c) for c in self.contexts], axis=1)
            if self.contexts
            else np.zeros((len(dataset), 0))
        )
        mean, std = _context_stats(raw, list(self.contexts), dataset.source)
        self.context_names_ = list(self.contexts)
        self.context_mean_, self.context_std_ = mean, std
        self.context_levels_ = context_levels(raw)
        logits, feats = _classifier_outputs(self.adapter_, dataset, device, quiet=self.quiet)
        ctx = torch.from_numpy(((raw - mean) / std).astype(np.float32))
        return TrainData(dataset=dataset, features=feats, logits=logits, contexts=ctx)

    def _build_parts(
        self, config: GlanceConfig, dataset: Any, features: torch.Tensor, device: torch.device
    ) -> Any:
        from glance.training.loop import Parts, make_ema

        torch.manual_seed(int(self.random_state))  # the networks' initial weights
        nets = build_networks(
            config,
            len(self.contexts),
            self.adapter_.feature_shape,
            self.adapter_.n_classes,
            dataset.image_shape,
        )
        flat = features.transpose(0, 1).reshape(features.shape[1], -1)
        nets["encoder"].set_feature_stats(flat.mean(1), flat.std(1))
        nets = {k: v.to(device) for k, v in nets.items()}
        adapter = self.adapter_
        return Parts(
            encoder=nets["encoder"],
            head=nets["head"],
            generator=nets["generator"],
            generator_ema=make_ema(nets["generator"]),
            discriminator=nets["discriminator"],
            classify=adapter.forward_features,
        )

    def _set_fitted(self, parts: Any, trainer: Any, dataset: Any) -> None:
        for m in (parts.encoder, parts.head, parts.generator_ema, parts.discriminator):
            m.requires_grad_(False).eval()
        self.encoder_, self.head_ = parts.encoder, parts.head
        self.generator_, self.discriminator_ = parts.generator_ema, parts.discriminator
        trainer.ensure_mixture()
        self.mixture_ = parts.mixture
        u = self.config_.encoder.free_dims
        self.concept_names_ = [*self.context_names_, *(f"concept_{i}" for i in range(u))]
        self.classes_ = _classes(self.adapter_, dataset)
        self.history_ = trainer.history
        self.train_source_ = str(dataset.source)

    # -- inference ----------------------------------------------------------------------------

    @property
    def _device(self) -> torch.device:
        return next(self.encoder_.parameters()).device

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Concepts of ``images``: the encoder's posterior mean.

        Parameters
        ----------
        images : Tensor of shape (N, C, H, W)
            Float images in ``[0, 1]`` of the classifier's geometry.

        Returns
        -------
        Tensor of shape (N, d)
            Aligned dims (standardised contexts) first, then the free dims.
        """
        self._check_fitted()
        out = [
            self.encoder_(self.adapter_.features(images[s]))[0].cpu()
            for s in _batches(len(images), batch_size)
        ]
        return torch.cat(out) if out else torch.zeros(0, len(self.concept_names_))

    def _check_z(self, z: Any) -> torch.Tensor:
        z = torch.as_tensor(z, dtype=torch.float32)
        d = len(self.concept_names_)
        if z.ndim != 2 or z.shape[1] != d:
            raise ShapeError(f"z must have shape (N, {d}); got {tuple(z.shape)}")
        return z.to(self._device)

    @torch.no_grad()
    def generate(
        self,
        z: Any,
        *,
        noise_mode: str = "const",
        batch_size: int = 256,
        random_state: int | None = None,
    ) -> torch.Tensor:
        """Images generated from concepts ``z`` of shape (N, d): float (N, C, H, W) in [0, 1].

        ``noise_mode="const"`` (default) makes the image a function of ``z`` alone.
        """
        self._check_fitted()
        z = self._check_z(z)
        gen = None if random_state is None else torch.Generator().manual_seed(random_state)
        out = [
            self.generator_(z[s], noise_mode=noise_mode, generator=gen).cpu()
            for s in _batches(len(z), batch_size)
        ]
        return torch.cat(out) if out else torch.zeros(0, *self.image_shape_)

    @torch.no_grad()
    def surrogate_logits(self, z: Any) -> torch.Tensor:
        """Surrogate head logits S(z), shape (N, n_classes)."""
        self._check_fitted()
        return self.head_(self._check_z(z)).cpu()

    @torch.no_grad()
    def classify(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """The real classifier's logits for ``images``, shape (N, n_classes)."""
        self._check_fitted()
        out = [self.adapter_.logits(images[s]).cpu() for s in _batches(len(images), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, len(self.classes_))

    def sample_concepts(self, n: int, random_state: int = 0) -> torch.Tensor:
        """``n`` concept vectors drawn from the fitted mixture, shape (n, d)."""
        self._check_fitted()
        return self.mixture_.sample(int(n), torch.Generator().manual_seed(int(random_state)))

    @property
    def image_shape_(self) -> tuple[int, int, int]:
        """(C, H, W) of generated images."""
        g = self.generator_
        return (g.img_channels, g.img_resolution, g.img_resolution)

    # -- evaluation / persistence --------------------------------------------------------------

    def evaluate(
        self,
        dataset: Any,
        *,
        out: str | os.PathLike[str] | None = None,
        n_images: int | None = None,
        random_state: int = 0,
    ) -> dict[str, Any]:
        """Faithfulness and quality figures of DESIGN §2.5 on ``dataset`` (held-out images).

        Returns a dict with ``fidelity``, ``reconstruction_fidelity``, ``sampled_fidelity``,
        ``alignment_r2`` and ``generated_alignment`` (context → value, None where it cannot be
        measured), ``mig``, ``dci``, ``fid``, ``kid``, ``fit_seconds``. With ``out`` the
        reconstruction and sample grids are saved there as PNG.
        """
        from glance.training.evaluation import evaluate

        self._check_fitted()
        return evaluate(self, dataset, out=out, n_images=n_images, random_state=random_state)

    def global_explanation(self, dataset: Any, **options: Any) -> Any:
        """Discover the causal graph over contexts, concepts and outputs; fit its SCM.

        Thin wrapper over :func:`glance.causal.discover_from_glance` (bootstrap PC with
        background knowledge contexts → concepts → outputs by default). Sets ``graph_``,
        ``scm_`` and ``global_importance_`` and returns the :class:`~glance.causal.CausalGraph`.

        Parameters
        ----------
        dataset : ImageDataset
            Images (with their contexts where known) to discover the graph from.
        **options
            Passed on to :func:`~glance.causal.discover_from_glance` (``n_resamples``,
            ``knowledge``, ``alpha``, ``random_state``, ``out``, ...).
        """
        from glance.causal.from_glance import discover_from_glance

        self._check_fitted()
        return discover_from_glance(self, dataset, **options)

    def explain(self, images: torch.Tensor, target: Any = None, **options: Any) -> Any:
        """Local explanations of ``images`` (float in [0, 1], shape (N, C, H, W)).

        Interventional importance (total and direct effects), interactions, the verified
        counterfactual and traversals, judged by the real classifier on generated images;
        see :func:`glance.explain.explain`. Uses the SCM of :meth:`global_explanation` (or of
        a loaded run's ``graph/``) when present, so interventions propagate to descendants.
        Interventions are clipped to each node's support, and discrete contexts move level by
        level. Useful ``options``: ``deltas`` (shifts in node stds, default ``(-2, -1, 1, 2)``),
        ``top_k`` (nodes whose interactions are computed), ``n_random`` (test every importance
        against that many random concepts, e.g. 49; 0 = off), ``alpha``. Returns a
        :class:`~glance.explain.LocalExplanation`.

        Examples
        --------
        >>> exp = est.explain(images, n_random=49)  # doctest: +SKIP
        >>> exp.ranking(0)[:3], exp.significance_summary()["thickness"]["p_value"]  # doctest: +SKIP
        """
        from glance.explain import explain

        self._check_fitted()
        return explain(self, images, target, **options)

    def save(self, run_dir: str | os.PathLike[str]) -> Path:
        """Write the fitted estimator as a self-contained run directory; return its path.

        Layout: ``config.yaml``, ``state.json``, ``classifier.safetensors`` + ``.json`` (a copy
        of the classifier), ``model/*.safetensors`` and ``MANIFEST.json`` written last.
        """
        self._check_fitted()
        return _save(self, Path(run_dir))

    def __repr__(self) -> str:
        return (
            f"Glance(contexts={list(self.contexts)!r}, preset={self.preset!r}, "
            f"random_state={self.random_state!r})"
        )


# -- helpers ---------------------------------------------------------------------------------


def build_networks(
    config: GlanceConfig,
    n_aligned: int,
    feature_shape: Sequence[int],
    n_classes: int,
    image_shape: Sequence[int],
) -> dict[str, nn.Module]:
    """Fresh E, S, G, D for a configuration and the data/classifier geometry."""
    from glance.surrogate import ConceptEncoder, Discriminator, Generator, SurrogateHead

    e, g = config.encoder, config.generator
    z_dim = n_aligned + e.free_dims
    if z_dim < 1:
        raise ConfigError("the concept space is empty: give contexts or encoder.free_dims >= 1")
    c, h, w = (int(s) for s in image_shape)
    if h != w:
        raise DataValidationError(f"images must be square for the generator; got {h}x{w}")
    return {
        "encoder": ConceptEncoder(tuple(feature_shape), z_dim, hidden=e.hidden),
        "head": SurrogateHead(z_dim, n_classes, e.head_hidden, n_layers=e.head_layers),
        "generator": Generator(
            z_dim,
            h,
            c,
            w_dim=g.w_dim,
            mapping_layers=g.mapping_layers,
            channel_base=g.channel_base,
            channel_max=g.channel_max,
            use_noise=g.use_noise,
        ),
        "discriminator": Discriminator(
            h,
            c,
            channel_base=g.d_channel_base,
            channel_max=g.d_channel_max,
            mbstd_group=g.mbstd_group,
        ),
    }


def _prepare_run_dir(out: Any, resume: bool) -> Path | None:
    if out is None:
        if resume:
            raise ConfigError("'resume' of Glance.fit needs 'out' (the run directory to resume)")
        return None
    run = Path(out)
    if run.exists() and not run.is_dir():
        raise CheckpointError(f"run directory {run} exists and is not a directory")
    if resume:
        if not run.is_dir():
            raise CheckpointError(f"cannot resume: run directory {run} does not exist")
    elif run.is_dir() and any(run.iterdir()):
        raise CheckpointError(
            f"run directory {run} is not empty; pass --resume (resume=True) to continue it or "
            "choose a new --out"
        )
    run.mkdir(parents=True, exist_ok=True)
    return run


def _prepare_run_dir_collective(out: Any, resume: bool, dist: Any) -> Path | None:
    """Rank 0 checks and creates the run directory; every rank learns the verdict (no hang)."""
    if not dist.enabled:
        return _prepare_run_dir(out, resume)
    if out is None:
        raise ConfigError("a distributed fit needs 'out' (a run directory shared by all ranks)")
    error: Exception | None = None
    if dist.is_main:
        try:
            _prepare_run_dir(out, resume)
        except Exception as exc:  # re-raised below, after the other ranks have been told
            error = exc
    failed = dist.any(torch.tensor([error is not None]))
    if error is not None:
        raise error
    if bool(failed[0]):
        raise CheckpointError(f"rank 0 could not prepare the run directory {out}; see its error")
    return Path(out)


def _make_adapter(classifier: Any, layer: str | None, dataset: Any, device: torch.device) -> Any:
    from glance.classifiers import ClassifierAdapter

    if isinstance(classifier, ClassifierAdapter):
        adapter = classifier
    else:
        if isinstance(classifier, nn.Module):
            classifier = classifier.to(device)
        adapter = ClassifierAdapter(classifier, layer=layer)
    adapter.check_dataset(dataset)
    return adapter


#: A context with at most this many distinct values is discrete (binary flags, categories).
MAX_LEVELS = 10


def context_levels(raw: np.ndarray, max_levels: int = MAX_LEVELS) -> list[list[float] | None]:
    """The sorted distinct values of each discrete context column (``None`` for continuous).

    A context taking at most ``max_levels`` distinct known values, each seen twice or more on
    average (e.g. a 0/1 flag or a category code), is discrete: intervening on it moves it from
    one observed level to another, since a value between two levels (half a pair of glasses)
    was never seen and cannot be rendered faithfully.
    """
    out: list[list[float] | None] = []
    for j in range(raw.shape[1]):
        known = raw[np.isfinite(raw[:, j]), j]
        levels = np.unique(known)
        # Values must also repeat (at least two rows per level on average): a handful of rows
        # of a continuous context has few distinct values too, but never repeats them.
        discrete = 2 <= levels.size <= max_levels and 2 * levels.size <= known.size
        out.append([float(v) for v in levels] if discrete else None)
    return out


def _context_stats(raw: np.ndarray, names: list[str], source: str) -> tuple[np.ndarray, ...]:
    mean, std = np.zeros(len(names)), np.ones(len(names))
    for j, name in enumerate(names):
        col = raw[:, j]
        known = col[np.isfinite(col)]
        if known.size < 2 or np.std(known) <= 0:
            raise DataValidationError(
                f"{source}: context {name!r} has {known.size} known value(s) with std "
                f"{np.std(known) if known.size else float('nan'):.3g}; it needs at least 2 "
                "different known values to align a concept with it"
            )
        mean[j], std[j] = float(np.mean(known)), float(np.std(known))
    return mean, std


@torch.no_grad()
def _classifier_outputs(
    adapter: Any, dataset: Any, device: torch.device, *, quiet: bool = True, batch: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, K) and features (N, C, h, w) of every image, on CPU (computed once)."""
    from tqdm.auto import tqdm

    logits, feats = [], []
    for s in tqdm(
        _batches(len(dataset), batch), desc="classifier features", disable=quiet, leave=False
    ):
        lo, fe = adapter.forward_features(
            dataset.load_images(np.arange(s.start, s.stop)).to(device)
        )
        logits.append(lo.float().cpu())
        feats.append(fe.float().cpu())
    return torch.cat(logits), torch.cat(feats)


def _classes(adapter: Any, dataset: Any) -> list[str]:
    names = list(getattr(adapter.model, "classes", []) or getattr(dataset, "classes", []) or [])
    if len(names) != adapter.n_classes:
        names = [str(k) for k in range(adapter.n_classes)]
    return [str(c) for c in names]


def _yaml(config: GlanceConfig, est: Glance, source: str | None) -> str:
    import yaml

    doc = {"preset": est.preset, **config.to_dict()}
    header = (
        f"# glance {__version__}: resolved configuration of this run (contexts "
        f"{list(est.contexts)}, random_state {est.random_state}, data {source})\n"
    )
    return header + yaml.safe_dump(doc, sort_keys=False)


def _state_json(est: Glance) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "glance_version": __version__,
        "torch_version": torch.__version__,
        "preset": est.preset,
        "random_state": int(est.random_state),
        "layer": est.adapter_.layer_name,
        "contexts": est.context_names_,
        "context_mean": est.context_mean_.tolist(),
        "context_std": est.context_std_.tolist(),
        "context_levels": getattr(est, "context_levels_", None),
        "concept_names": est.concept_names_,
        "classes": est.classes_,
        "feature_shape": list(est.adapter_.feature_shape),
        "image_shape": list(est.image_shape_),
        "n_classes": int(est.adapter_.n_classes),
        "fit_seconds": float(getattr(est, "fit_seconds_", float("nan"))),
        "train_source": getattr(est, "train_source_", None),
    }


def _save_classifier_copy(est: Glance, run: Path) -> bool:
    """Copy the classifier into the run (weights + description); False if impossible."""
    from glance.classifiers.architectures import ReferenceClassifier
    from glance.classifiers.serialization import save_classifier

    model = est.adapter_.model
    if isinstance(model, ReferenceClassifier):
        save_classifier(model, run / "classifier.safetensors")
        return True
    logger.warning(
        "the classifier (%s) is not a glance ReferenceClassifier; its weights are not copied "
        "into the run, so glance.load(run, classifier=model) will need it",
        type(model).__name__,
    )
    return False


def _save(est: Glance, run: Path) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    (run / "MANIFEST.json").unlink(missing_ok=True)  # incomplete until the manifest is rewritten
    state = _state_json(est)
    state["classifier_included"] = _save_classifier_copy(est, run)
    if not (run / "config.yaml").is_file():
        atomic_write_text(
            run / "config.yaml", _yaml(est.config_, est, getattr(est, "train_source_", None))
        )
    with atomic_directory(run / "model") as tmp:
        for name in ("encoder", "head", "generator", "discriminator", "mixture"):
            module = getattr(est, f"{name}_")
            save_safetensors(tmp / f"{name}.safetensors", module.state_dict())
    atomic_write_json(run / "state.json", state)
    write_manifest(run, {"kind": "glance-run"})
    return run


def load(run_dir: str | os.PathLike[str], *, classifier: Any = None, device: str = "cpu") -> Glance:
    """Load a fitted :class:`Glance` from a run directory written by :meth:`Glance.save`.

    Parameters
    ----------
    run_dir : path
        The run directory; its ``MANIFEST.json`` is verified first.
    classifier : nn.Module, optional
        The classifier, when the run holds no copy of it (non-reference architectures).
    device : str
        Where to put the networks.

    Raises
    ------
    CheckpointCorruptError
        Missing/incomplete manifest, or a file whose sha256 differs (tampered or damaged).
    CheckpointIncompatibleError
        A newer format version, or weights that do not fit the recorded configuration.
    """
    import json

    run = Path(run_dir)
    if not run.is_dir():
        raise CheckpointError(f"run directory not found: {run}")
    verify_manifest(run)
    try:
        state = json.loads((run / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointCorruptError(f"{run / 'state.json'}: unreadable ({exc})") from None
    if int(state.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{run} needs a newer glance (format {state['format_version']})")
    config = resolve_config(config=_read_yaml(run / "config.yaml"))
    if classifier is None:
        if not state.get("classifier_included"):
            raise CheckpointError(
                f"{run} holds no copy of its classifier; pass classifier= to glance.load"
            )
        from glance.classifiers.serialization import load_classifier

        classifier = load_classifier(run / "classifier.safetensors")
    est = Glance(
        classifier,
        layer=state["layer"],
        contexts=tuple(state["contexts"]),
        preset=state["preset"],
        config=config,
        random_state=state["random_state"],
        device=device,
    )
    _restore(est, run, state, config, torch.device(device))
    if (run / "graph" / "graph.json").is_file():
        # A run that went through 'glance graph' carries its graph and (linear) SCM; restore
        # them so explanations propagate interventions without rediscovering the graph.
        from glance.causal.from_glance import load_graph_state

        load_graph_state(est, run / "graph")
    return est


def _read_yaml(path: Path) -> dict[str, Any]:
    from glance.config import load_config_file

    data = load_config_file(path)
    data.pop("preset", None)
    return data


def _restore(
    est: Glance, run: Path, state: dict[str, Any], config: GlanceConfig, device: torch.device
) -> None:
    from glance.classifiers import ClassifierAdapter

    est.config_ = config
    clf = est.classifier
    if isinstance(clf, ClassifierAdapter):
        # Keep the user's adapter whole (input transform, output selector, geometry); only the
        # feature layer must be the run's, or the encoder would read other features.
        if clf.layer_name != state["layer"]:
            clf = ClassifierAdapter(
                clf.model.to(device),
                layer=state["layer"],
                output_key=clf.output_key,
                input_transform=clf.input_transform,
                in_channels=clf.in_channels,
                input_size=clf.input_size,
            )
        est.adapter_ = clf
    else:
        est.adapter_ = ClassifierAdapter(clf.to(device), layer=state["layer"])
    nets = build_networks(
        config,
        len(state["contexts"]),
        state["feature_shape"],
        state["n_classes"],
        state["image_shape"],
    )
    for name, module in nets.items():
        path = run / "model" / f"{name}.safetensors"
        load_module_state(module, load_safetensors(path), str(path))
        module.to(device).requires_grad_(False).eval()
    mix = load_safetensors(run / "model" / "mixture.safetensors")
    mixture = ConceptMixture(mix["weights"].shape[0], mix["means"].shape[1])
    load_module_state(mixture, mix, str(run / "model" / "mixture.safetensors"))
    est.encoder_, est.head_ = nets["encoder"], nets["head"]
    est.generator_, est.discriminator_ = nets["generator"], nets["discriminator"]
    est.mixture_ = mixture
    est.context_names_ = list(state["contexts"])
    est.context_mean_ = np.asarray(state["context_mean"], dtype=np.float64)
    est.context_std_ = np.asarray(state["context_std"], dtype=np.float64)
    # Runs saved before discrete contexts were recorded treat every context as continuous.
    est.context_levels_ = state.get("context_levels") or [None] * len(est.context_names_)
    est.concept_names_ = list(state["concept_names"])
    est.classes_ = list(state["classes"])
    est.fit_seconds_ = float(state["fit_seconds"]) if state.get("fit_seconds") else float("nan")
    est.train_source_ = state.get("train_source")
    est.history_ = _read_history(run / "metrics.jsonl")


def _read_history(path: Path) -> list[dict[str, Any]]:
    import json

    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out
