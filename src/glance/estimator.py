"""The :class:`Glance` estimator: fit the twin surrogate of a classifier, then explain with it.

scikit-learn contract: ``__init__`` stores keyword-only hyper-parameters unchanged (no logic, no
validation); :meth:`Glance.fit` validates them, trains, sets the fitted ``*_`` attributes and
returns ``self``; every other method raises :class:`~glance.exceptions.NotFittedError` before a
fit. A fitted estimator is saved as a self-contained run directory (docs/architecture.md) and
loaded back with :func:`load`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from glance._io import FORMAT_VERSION
from glance._version import __version__
from glance.data.base import recorded
from glance.exceptions import (
    CheckpointError,
    CheckpointIncompatibleError,
    ConfigError,
    DataValidationError,
    GlanceError,
    NotFittedError,
    ResourceError,
    ShapeError,
)
from glance.run import MODEL_PARTS, Run
from glance.threads import compute
from glance.training.checkpoint import dataset_fingerprint, load_module_state
from glance.training.config import GlanceConfig, config_hash, resolve_config
from glance.training.tasks import ConceptMixture

if TYPE_CHECKING:
    from glance.classifiers.features import Features

__all__ = ["Glance", "load"]

logger = logging.getLogger(__name__)

_FITTED = "encoder_"


def _batches(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


#: Images :meth:`Glance.calibrate_interventions` reads around (its cost: 4 shifts x contexts
#: generator + reader passes over them) and the fewest a dataset needs for a reader to be fitted.
CALIBRATION_IMAGES = 256
MIN_CALIBRATION_IMAGES = 500


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
        ``"cpu"``, ``"cuda"`` or ``"cuda:1"``. Mixed precision follows the config's
        ``train.mixed_precision``: ``"auto"`` trains in bf16 (or fp16) on CUDA, in bf16 on a CPU
        with bf16 matrix units (Intel AMX) for images of 128 px or more, and in fp32 otherwise;
        ``"bf16"`` trains in bf16 on either. ``precision_`` says what a fit used.
    quiet : bool
        No progress bars.
    n_threads : int, optional
        CPU threads to compute with. ``None`` (default): the cores other processes leave free,
        re-checked every few seconds during a fit (``GLANCE_THREADS`` or ``OMP_NUM_THREADS``
        fix it instead); see :mod:`glance.threads`.

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
    context_scale_ : ndarray of shape (n_contexts,)
        How far one standard deviation of each context moves its aligned dim, measured on the
        encoded training images (:func:`glance.metrics.fidelity.alignment_slope`, at least
        ``MIN_CONTEXT_SCALE``): about 1 for a context the encoder reads, near 0 for one it
        cannot read. The twin intervenes on a context in these units.
    context_readback_ : ndarray of shape (n_contexts, n_contexts) or None
        What the generator draws: the change of context ``k`` read on the generated image (in
        its stds) per std of context ``j`` asked, when only ``j``'s aligned dim moves (NaN where
        not measured; :meth:`calibrate_interventions`). ``evaluate`` reports it, and a
        calibrated twin (``twin(calibrated=True)``, opt-in) intervenes with it. ``None``: not
        measured (too few images, no contexts, or an older run).
    context_tied_ : ndarray of shape (n_contexts, n_contexts) or None
        Contexts whose training values are tied (correlated beyond
        :data:`glance.training.tasks.TIED_CORRELATION`): not held still for each other.
    concept_names_ : list of str
        Context names, then ``concept_0`` ... for the free dims (length ``d``).
    classes_ : list of str
    history_ : list of dict
        Logged training losses (every 10 steps).
    fit_seconds_ : float
        Wall time of :meth:`fit`.
    precision_ : str or None
        What the training steps computed in: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (the
        config's ``train.mixed_precision`` as resolved on the fitting machine; ``None`` for a
        run saved before it was recorded).
    thread_history_ : list of (float, float, int)
        ``(time, other processes' load in cores, threads chosen)`` at every thread change of the
        fit (see :class:`glance.threads.ThreadPolicy`).
    identity_ : dict
        What makes a run of this fit this run (data fingerprint, contexts in order, classifier
        weights hash, layer, seed, config hash, glance version); ``fit(resume=True)`` continues
        only a run with the same identity.
    train_data_ : dict or None
        Where the training data lives (path, splits, fingerprints) when it was loaded with
        :func:`glance.data.load_dataset`; commands on the run use it by default.
    run_ : Run or None
        The run directory this estimator was fitted into or loaded from.
    graph_, scm_, scm_units_, global_importance_
        After :meth:`global_explanation` (or loading a run that has a graph): the causal graph,
        its structural causal model, the units the SCM works in, and the global importances.

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
        n_threads: int | None = None,
    ) -> None:
        self.classifier = classifier
        self.layer = layer
        self.contexts = contexts
        self.preset = preset
        self.config = config
        self.random_state = random_state
        self.device = device
        self.quiet = quiet
        self.n_threads = n_threads

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
            "n_threads",
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
        if self.n_threads is not None and (
            isinstance(self.n_threads, bool)
            or not isinstance(self.n_threads, (int, np.integer))
            or self.n_threads < 1
        ):
            raise ConfigError(
                f"'n_threads' of Glance must be None or an integer >= 1; got {self.n_threads!r}"
            )
        check_device(self.device)
        for name in self.contexts:
            dataset.attribute(name)  # raises DataValidationError listing the columns
        if len(dataset) < 2:
            raise DataValidationError(f"{dataset.source}: {len(dataset)} images; need at least 2")
        return resolve_config(self.preset, self.config, resolution=dataset.image_shape[-1])

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
        from glance.classifiers.features import close_features, discard_feature_cache
        from glance.training.distributed import DistContext
        from glance.training.loop import Trainer, fit_loop

        t0 = time.perf_counter()
        config = self._validate_params(dataset)
        if out is None and resume:
            raise ConfigError("'resume' of Glance.fit needs 'out' (the run directory to resume)")
        dist = DistContext.from_env(self.device)
        self._reset()
        self.config_ = config
        self.adapter_ = _make_adapter(self.classifier, self.layer, dataset, dist.device)
        fingerprint = dataset_fingerprint(dataset)
        self.identity_ = self._identity(fingerprint, config)
        with contextlib.ExitStack() as stack:
            policy = stack.enter_context(compute(self.n_threads))
            text = _yaml(config, self, dataset.source)
            run = _open_run_collective(
                out, dist, lambda: _open_run(out, resume, self.identity_, config, text, stack)
            )
            tmp = None
            if run is None:
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="glance-fit-")))
            cache_dir = _feature_cache_dir(run, tmp, dist)
            data = self._prepare_data(dataset, config, dist.device, cache_dir)
            stack.callback(close_features, data.features)  # before the temporary dir goes
            parts = self._build_parts(config, dataset, data.features, dist.device)
            if config.loss.readback > 0 and self.contexts:
                parts.readback = self._readback_spec(dataset, data.contexts, dist.device)
            trainer = Trainer(
                parts,
                data,
                config,
                checkpoint_dir=run.checkpoint_dir if run else tmp / "checkpoints",
                metrics_path=run.live_training_log if run else tmp / "metrics.jsonl",
                seed=int(self.random_state),
                fingerprint=fingerprint,
                dist=dist,
                quiet=self.quiet,
                hooks=self._hooks,
                threads=policy,
            )
            self.history_ = fit_loop(trainer, resume=resume)
            self.thread_history_ = list(policy.history_)
            self._set_fitted(parts, trainer, dataset)
            try:
                self.calibrate_interventions(dataset)
            except (GlanceError, ValueError, np.linalg.LinAlgError) as exc:
                # a fitted twin is not lost for want of a calibration: it intervenes as before
                logger.warning("interventions not calibrated (%s): %s", type(exc).__name__, exc)
                self.context_readback_, self.context_tied_ = None, None
            discard_feature_cache(data.features, cache_dir)  # spent: kept only for a resume
            self.train_data_ = _data_record(dataset, fingerprint)
            self.fit_seconds_ = time.perf_counter() - t0
            self.run_ = run
            if run is not None and dist.is_main:
                self._save_to(run)
            dist.barrier()
        return self

    def _identity(self, fingerprint: str, config: GlanceConfig) -> dict[str, Any]:
        from glance.classifiers.serialization import classifier_fingerprint

        return {
            "data_fingerprint": fingerprint,
            "contexts": list(self.contexts),
            "classifier": classifier_fingerprint(self.adapter_.model),
            "layer": self.adapter_.layer_name,
            "seed": int(self.random_state),
            "config_hash": config_hash(config),
            "glance_version": __version__,
        }

    def _reset(self) -> None:
        for key in [k for k in vars(self) if k.endswith("_") and not k.startswith("_")]:
            delattr(self, key)

    def _prepare_data(
        self, dataset: Any, config: GlanceConfig, device: torch.device, cache_dir: Path
    ) -> Any:
        from glance.classifiers.features import classifier_outputs
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
        logits, feats = classifier_outputs(
            self.adapter_,
            dataset,
            device,
            cache_dir=cache_dir,
            identity={k: self.identity_[k] for k in ("data_fingerprint", "classifier", "layer")},
            quiet=self.quiet,
        )
        _warn_if_one_class(logits, _classes(self.adapter_, dataset))
        ctx = torch.from_numpy(((raw - mean) / std).astype(np.float32))
        return TrainData(dataset=dataset, features=feats, logits=logits, contexts=ctx)

    def _build_parts(
        self, config: GlanceConfig, dataset: Any, features: Features, device: torch.device
    ) -> Any:
        from glance.classifiers.features import feature_stats
        from glance.training.loop import Parts, make_ema

        torch.manual_seed(int(self.random_state))  # the networks' initial weights
        nets = build_networks(
            config,
            len(self.contexts),
            self.adapter_.feature_shape,
            self.adapter_.n_classes,
            dataset.image_shape,
        )
        nets["encoder"].set_feature_stats(*feature_stats(features))
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

    def _own_reader(self, dataset: Any, *, morphometrics: bool) -> Any:
        """A context reader of the fit's own, fitted on the training images.

        Its seed differs from the one ``evaluate``'s readers use, so that the evaluation's
        effectiveness and specificity are read by a network the generator was not trained or
        calibrated against. Fitting is deterministic for a seed and thread count, so a resumed
        fit on the same threads trains against the same reader. ``morphometrics=False`` reads
        every context with the CNN (a training loss needs a gradient through the reader).
        """
        from glance.metrics.readers import ReaderConfig, fit_reader

        return fit_reader(
            dataset,
            list(self.contexts),
            random_state=int(self.random_state) + 1,
            config=ReaderConfig(morphometrics=morphometrics),
        )

    def _readback_spec(self, dataset: Any, contexts: torch.Tensor, device: torch.device) -> Any:
        """The frozen context reader of the read-back loss (:meth:`_own_reader`, CNN only)."""
        import dataclasses

        from glance.training.tasks import ReadbackSpec

        reader = self._own_reader(dataset, morphometrics=False)
        spec = ReadbackSpec.from_reader(reader, list(self.contexts), contexts)
        return dataclasses.replace(spec, reader=spec.reader.to(device))

    def _set_fitted(self, parts: Any, trainer: Any, dataset: Any) -> None:
        for m in (parts.encoder, parts.head, parts.generator_ema, parts.discriminator):
            m.requires_grad_(False).eval()
        self.encoder_, self.head_ = parts.encoder, parts.head
        self.generator_, self.discriminator_ = parts.generator_ema, parts.discriminator
        trainer.ensure_mixture()
        self.mixture_ = parts.mixture
        self.context_scale_ = _context_scale(trainer.latents(), trainer.data.contexts)
        u = self.config_.encoder.free_dims
        self.concept_names_ = [*self.context_names_, *(f"concept_{i}" for i in range(u))]
        self.classes_ = _classes(self.adapter_, dataset)
        self.history_ = trainer.history
        self.precision_ = trainer.precision.name
        self.train_source_ = str(dataset.source)
        self.run_ = None

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
        truth: Any = None,
    ) -> dict[str, Any]:
        """Faithfulness and quality figures of DESIGN §2.5 on ``dataset`` (held-out images).

        Returns a dict with ``fidelity``, ``reconstruction_fidelity``, ``sampled_fidelity``,
        ``alignment_r2`` and ``generated_alignment`` (context → value, None where it cannot be
        measured), ``mig``, ``mig_reference`` (the MIG of ideal codes exactly as aligned:
        low by construction where the contexts are correlated in the data), ``dci``, ``fid``,
        ``kid``, ``fit_seconds``,
        ``reconstruction_ssim``, ``reconstruction_edges`` (correlation of the edges of what
        varies in x and in ``G(E(x))``), ``readback_r2`` (context → R² of the context read back from
        ``G(E(x))``, None with the reason in ``readback_r2_unmeasured`` where it cannot be
        read), ``readers`` (each context reader's held-out R² and source) and
        ``readers_training``, ``counterfactual_soundness`` (composition, reversibility,
        effectiveness and specificity) and ``data`` (what was measured). The context readers
        (:mod:`glance.metrics.readers`) are fitted on the run's training data and cached in
        the run (refitted when the data or contexts change).

        ``out`` records them: given a run directory (e.g. this estimator's), the figures and
        the reconstruction/sample grids are sealed into it — as the run's own evaluation when
        ``dataset`` is its recorded held-out split, else under ``evaluations/<data>/`` beside
        it; given any other folder, only the grids are written there as PNG. ``truth`` (the
        ``truth.json`` of a dataset with a known causal graph, as a mapping) adds the scores of
        ``graph_`` against it under ``graph``.
        """
        from glance.evaluation import evaluate

        self._check_fitted()
        with compute(self.n_threads):
            return evaluate(
                self, dataset, out=out, n_images=n_images, random_state=random_state, truth=truth
            )

    def global_explanation(
        self, dataset: Any, *, out: str | os.PathLike[str] | None = None, **options: Any
    ) -> Any:
        """Discover the causal graph over contexts, concepts and outputs; fit its SCM.

        Bootstrap PC with background knowledge contexts → concepts → outputs by default (see
        :func:`glance.causal.discover_from_glance`). Sets ``graph_``, ``scm_``, ``scm_units_``
        and ``global_importance_`` and returns the :class:`~glance.causal.CausalGraph`.

        Parameters
        ----------
        dataset : ImageDataset
            Images (with their contexts where known) to discover the graph from.
        out : path, optional
            Where to write the graph's artefacts (``RUN/graph`` seals them into the run).
        **options
            Passed on to :func:`~glance.causal.discover_from_glance` (``n_resamples``,
            ``knowledge``, ``alpha``, ``random_state``, ...).
        """
        from glance.causal.from_glance import discover_from_glance

        self._check_fitted()
        with compute(self.n_threads):
            result = discover_from_glance(self, dataset, **options)
        self._set_global(result)
        if out is not None:
            result.save(out)
        return result.graph

    def describe_concepts(
        self,
        dataset: Any,
        *,
        n_images: int = 64,
        n_strip: int = 6,
        out: str | os.PathLike[str] | None = None,
    ) -> Any:
        """The concept atlas: what every node is, measured on held-out images and described.

        For every node: a traversal strip on the first ``n_strip`` images (the same for every
        node), its correlation with each context and class, its effect on the real classifier
        and a generated description; nodes ordered by global importance (the SCM's after
        :meth:`global_explanation`, else the measured effect). See
        :class:`glance.explain.ConceptAtlas` (``describe(node)``, ``class_attributes(cls)``).

        Parameters
        ----------
        dataset : ImageDataset
            Held-out images; the first ``n_images`` are used (their observed contexts too).
        out : path, optional
            Where to save it (``RUN/atlas`` seals it into the run).
        """
        from glance.explain.atlas import concept_atlas

        self._check_fitted()
        n = min(int(n_images), len(dataset))
        idx = np.arange(n)
        columns = {c: recorded(dataset, c) for c in self.context_names_}
        contexts = {c: col[idx] for c, col in columns.items() if col is not None}
        importance = None
        if getattr(self, "global_importance_", None):
            importance = {}
            for effects in self.global_importance_.values():
                for node, v in effects.items():
                    importance[node] = importance.get(node, 0.0) + abs(float(v))
        with compute(self.n_threads):
            atlas = concept_atlas(
                self.twin(),
                dataset.load_images(idx).float(),
                contexts=contexts,
                importance=importance,
                n_strip=n_strip,
            )
        if out is not None:
            atlas.save(out)
        return atlas

    def refit_scm(self, dataset: Any, *, max_images: int = 2000) -> None:
        """Fit the SCM of ``graph_`` again on ``dataset`` (for a run whose SCM was not saved,
        e.g. a gradient-boosted one); sets ``scm_``, ``scm_units_`` and ``global_importance_``."""
        from glance.causal.from_glance import refit_scm

        self._check_fitted()
        if getattr(self, "graph_", None) is None:
            raise NotFittedError("refit_scm needs graph_; call global_explanation first")
        self._set_global(refit_scm(self, self.graph_, dataset, max_images=max_images))

    def _set_global(self, result: Any) -> None:
        """Assign a :class:`~glance.causal.GlobalExplanation` (``None``: nothing to assign)."""
        if result is None:
            return
        self.graph_ = result.graph
        self.scm_units_ = result.units
        if result.scm is not None:
            self.scm_ = result.scm
        elif hasattr(self, "scm_"):
            del self.scm_
        if result.importance is not None:
            self.global_importance_ = result.importance

    def explain(
        self, images: torch.Tensor, target: Any = None, *, explainer: str = "local", **options: Any
    ) -> Any:
        """Local explanations of ``images`` (float in [0, 1], shape (N, C, H, W)).

        ``explainer`` names the method in :data:`glance.explain.EXPLAINERS`: ``"local"`` (the
        default) gives interventional importance (total and direct effects), interactions, the
        verified counterfactual and traversals, judged by the real classifier on generated
        images; ``"importance"`` and ``"counterfactual"`` give those parts alone; see
        :func:`glance.explain.explain`. Uses the SCM of :meth:`global_explanation` (or of a
        loaded run's ``graph/``) when present, so interventions propagate to descendants.
        Interventions are clipped to each node's support, and discrete contexts move level by
        level. Useful ``options`` of ``"local"``: ``deltas`` (shifts in node stds, default
        ``(-2, -1, 1, 2)``), ``top_k`` (nodes whose interactions are computed), ``n_random``
        (test every importance against that many random concepts, e.g. 49; 0 = off),
        ``alpha``. Returns a :class:`~glance.explain.LocalExplanation`; an unknown
        ``explainer`` raises :class:`~glance.exceptions.UnknownNameError` listing the names.

        Examples
        --------
        >>> exp = est.explain(images, n_random=49)  # doctest: +SKIP
        >>> exp.ranking(0)[:3], exp.significance_summary()["thickness"]["p_value"]  # doctest: +SKIP
        >>> est.explain(images, explainer="counterfactual", max_nodes=2)  # doctest: +SKIP
        """
        from glance.explain import explain

        self._check_fitted()
        with compute(self.n_threads):
            return explain(self, images, target, explainer=explainer, **options)

    def save(self, run_dir: str | os.PathLike[str]) -> Path:
        """Write the fitted estimator as a self-contained, sealed run directory; return its path.

        ``run_dir`` is absent, an empty folder, or this estimator's own run (re-sealed). The
        layout is :mod:`glance.run`'s; a copy of the classifier is included when it is one of
        glance's reference architectures.

        Raises
        ------
        CheckpointError
            ``run_dir`` is a non-empty folder that is not a run.
        CheckpointIncompatibleError
            ``run_dir`` is another run (a different identity).
        """
        self._check_fitted()
        target = Path(run_dir)
        if Run.is_run(target):
            run = Run.open(target)
            with run.writing():
                run.check_identity(self.identity_ or {})
                self._save_to(run)
        else:
            target.mkdir(parents=True, exist_ok=True)
            with Run(target).writing():
                run = Run.create(target, self.identity_ or {})
                self._save_to(run)
        return target

    def _save_to(self, run: Run) -> None:
        """Seal the fitted model into ``run`` (one transaction)."""
        from glance.classifiers.architectures import ReferenceClassifier
        from glance.classifiers.serialization import save_classifier

        model = self.adapter_.model
        writer = None
        if isinstance(model, ReferenceClassifier):
            writer = lambda path: save_classifier(model, path)  # noqa: E731
        else:
            logger.warning(
                "the classifier (%s) is not a glance ReferenceClassifier; its weights are not "
                "copied into the run, so commands on it need --model/--weights (glance.load(run, "
                "classifier=model) in Python)",
                type(model).__name__,
            )
        state = _state_json(self)
        state["classifier_included"] = writer is not None
        run.save_fitted(
            state=state,
            modules={n: getattr(self, f"{n}_").state_dict() for n in MODEL_PARTS},
            config_text=_yaml(self.config_, self, getattr(self, "train_source_", None)),
            data_record=getattr(self, "train_data_", None),
            save_classifier=writer,
            training_log=run.live_training_log,
        )
        self.run_ = run

    def twin(self, *, calibrated: bool = False) -> Any:
        """This fitted model as a :class:`glance.explain.Twin`: what the explainers, the
        soundness checks and the explorer run on (encode, generate, the real classifier, node
        scales and support, the SCM when there is one). ``calibrated=True``: interventions
        drawn with what :meth:`calibrate_interventions` measured (opt-in)."""
        from glance.explain import Twin

        self._check_fitted()
        return Twin.from_glance(self, calibrated=calibrated)

    def calibrate_interventions(
        self, dataset: Any, *, n_images: int = CALIBRATION_IMAGES, reader: Any = None
    ) -> Glance:
        """Measure what the generator draws when one context's aligned dim moves, so that a
        calibrated twin (``twin(calibrated=True)``) changes that context by what is asked and
        nothing else; ``evaluate`` reports it either way.

        :meth:`fit` calls it at its end; call it on a run fitted before it existed (the result
        lives on this object; :meth:`save` writes it into the run). A context reader is fitted
        on ``dataset``'s real images (seed ``random_state + 1``: not the reader
        :func:`glance.evaluate` reports with) and reads every context on ``G(z')`` around
        ``n_images`` of them; see :mod:`glance.explain.calibration`. Morpho-MNIST morphometric
        contexts of single-channel images are read by glance's morphometrics, which calibrate
        their own step but hold no other context still (``cross`` of
        :func:`~glance.explain.calibration.measure_readback`).
        With fewer than ``MIN_CALIBRATION_IMAGES`` images, or no contexts, nothing is measured
        (``context_readback_ = None``: a calibrated twin is then the uncalibrated one).

        ``reader`` (a :class:`glance.metrics.readers.ContextReader` of the contexts) skips
        fitting one.

        Sets ``context_readback_`` ((m, m), NaN where not measured) and ``context_tied_`` ((m, m)
        bool: contexts whose training values correlate beyond
        :data:`glance.training.tasks.TIED_CORRELATION`).
        """
        from glance.explain.calibration import measure_readback
        from glance.training.tasks import tied_pairs

        self._check_fitted()
        names = list(self.context_names_)
        if reader is not None and list(reader.contexts) != names:
            raise ConfigError(
                f"'reader' of calibrate_interventions must read the contexts {names} in order; "
                f"it reads {list(reader.contexts)}"
            )
        self.context_readback_, self.context_tied_ = None, None
        if not names or len(dataset) < MIN_CALIBRATION_IMAGES:
            return self
        raw = np.stack([np.asarray(dataset.attribute(c), dtype=np.float64) for c in names], 1)
        if reader is None:
            reader = self._own_reader(dataset, morphometrics=True)
        rng = np.random.default_rng(int(self.random_state))
        idx = np.sort(rng.permutation(len(dataset))[: int(n_images)])
        levels = list(getattr(self, "context_levels_", None) or [None] * len(names))
        self.context_readback_ = measure_readback(
            self.encode,
            self.generate,
            dataset.load_images(idx).float(),
            reader.read,
            self.context_scale_,  # each context's uncalibrated step (see Twin.from_glance)
            readable=[reader.readable(c) for c in names],
            discrete=[lv is not None for lv in levels],
            read_std=reader.std,
            cross=[reader.sources.get(c) == "cnn" for c in names],
        )
        self.context_tied_ = tied_pairs(raw)
        return self

    def __repr__(self) -> str:
        return (
            f"Glance(contexts={list(self.contexts)!r}, preset={self.preset!r}, "
            f"random_state={self.random_state!r})"
        )


# -- helpers ---------------------------------------------------------------------------------

#: A classifier that gives one class to at least this share of the training images is warned
#: about at fit: every fidelity figure passes whatever the twin draws, and no counterfactual can
#: change its decision (a MobileNetV3 trained for too few epochs did exactly that: fidelity 1.00,
#: counterfactual validity 0.00).
ONE_CLASS_SHARE = 0.99


def _warn_if_one_class(logits: torch.Tensor, classes: Sequence[str]) -> None:
    if len(logits) == 0:
        return
    counts = torch.bincount(logits.argmax(1), minlength=logits.shape[1])
    top = int(counts.argmax())
    share = float(counts[top]) / len(logits)
    if share >= ONE_CLASS_SHARE:
        name = classes[top] if top < len(classes) else str(top)
        message = (
            f"the classifier predicts class {name!r} for {share:.1%} of the {len(logits)} "
            "training images: there is hardly a decision to explain (fidelity passes whatever "
            "the twin draws, and no counterfactual can change the class); check how the "
            "classifier was trained"
        )
        logger.warning(message)
        warnings.warn(message, stacklevel=3)


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
        "encoder": ConceptEncoder(
            tuple(feature_shape),
            z_dim,
            hidden=e.hidden,
            feature_decoder=config.loss.feature_reconstruction > 0,
        ),
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
            mapping_lr_multiplier=g.mapping_lr_multiplier,
            styled_input=g.styled_input,
        ),
        "discriminator": Discriminator(
            h,
            c,
            channel_base=g.d_channel_base,
            channel_max=g.d_channel_max,
            mbstd_group=g.mbstd_group,
        ),
    }


def check_device(device: str) -> torch.device:
    """``device`` as a torch device that exists on this machine (before any work starts).

    Raises
    ------
    ConfigError
        Not a device name.
    ResourceError
        A CUDA device on a machine without (that many) GPUs.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"'device' of Glance is not a torch device: {device!r}") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0 or (dev.index is not None and dev.index >= n):
            raise ResourceError(
                f"device {device!r}: this machine has {n} CUDA device(s); use --device cpu"
                + (f" or cuda:0..cuda:{n - 1}" if n else "")
            )
    elif dev.type not in ("cpu", "mps", "xpu", "meta"):
        raise ConfigError(f"'device' of Glance must be cpu or cuda[:N]; got {device!r}")
    return dev


def _open_run(
    out: Any, resume: bool, identity: dict, config: GlanceConfig, config_text: str, stack: Any
) -> Run:
    """The run a fit writes: a new one (``out`` absent or empty) or, with ``resume``, the same
    run continued. Its lock is held (on ``stack``) until the fit ends."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"run directory {path} exists and is not a directory")
    if path.is_dir():
        Run(path).recover()  # a creation or write that was killed is finished or discarded
    if resume:
        if not path.is_dir():
            raise CheckpointError(f"cannot resume: run directory {path} does not exist")
        if not Run.is_run(path):
            raise CheckpointError(
                f"cannot resume {path}: not a run directory glance made (no run marker in its "
                "MANIFEST.json or run.json); nothing was changed"
            )
        run = Run.open(path)
        stack.enter_context(run.writing())
        run.check_identity(identity, config.to_dict())
        return run
    path.mkdir(parents=True, exist_ok=True)
    stack.enter_context(Run(path).writing())
    return Run.create(path, identity, config_text=config_text)


def _open_run_collective(out: Any, dist: Any, open_run: Callable[[], Run]) -> Run | None:
    """Rank 0 opens (or creates) the run with ``open_run``; every rank learns the verdict (no
    hang)."""
    if out is None:
        if dist.enabled:
            raise ConfigError("a distributed fit needs 'out' (a run directory shared by all ranks)")
        return None
    if not dist.enabled:
        return open_run()
    error: Exception | None = None
    run: Run | None = None
    if dist.is_main:
        try:
            run = open_run()
        except Exception as exc:  # re-raised below, after the other ranks have been told
            error = exc
    failed = dist.any(torch.tensor([error is not None]))
    if error is not None:
        raise error
    if bool(failed[0]):
        raise CheckpointError(f"rank 0 could not open the run directory {out}; see its error")
    return run if run is not None else Run(out)


def _data_record(dataset: Any, fingerprint: str) -> dict[str, Any] | None:
    """Where the training data lives, its splits and fingerprints (``None`` for data in memory).

    Commands on the run use this data by default and refuse it if it changed since the fit.
    """
    origin = getattr(dataset, "origin", None)
    if origin is None:
        return None
    from glance.data import load_dataset, test_split

    path, split = str(origin[0]), origin[1]
    held = test_split(path)
    fingerprints = {str(split): fingerprint}
    if held is not None and held != split:
        fingerprints[held] = dataset_fingerprint(load_dataset(path, held))
    return {"data": path, "train_split": split, "test_split": held, "fingerprints": fingerprints}


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


#: Floor of ``context_scale_``: a context its dim cannot read still moves the dim a little, so
#: the twin's node scale stays positive (and the intervention honestly near nothing).
MIN_CONTEXT_SCALE = 0.01


def _context_scale(latents: torch.Tensor, contexts: torch.Tensor) -> np.ndarray:
    """``context_scale_``: each aligned dim's slope on its standardised context (the first
    ``m`` columns of the training ``latents``), floored at ``MIN_CONTEXT_SCALE``."""
    from glance.metrics.fidelity import alignment_slope

    m = contexts.shape[1]
    if m == 0:
        return np.zeros(0)
    slope = alignment_slope(latents[:, :m].detach().cpu().numpy(), contexts.cpu().numpy())
    return np.maximum(np.nan_to_num(slope, nan=1.0), MIN_CONTEXT_SCALE)


def _feature_cache_dir(run: Run | None, tmp: Path | None, dist: Any) -> Path:
    """Where a fit caches features too large for memory: the run's working area, else the
    fit's temporary directory; one per rank when distributed (each rank computes its own)."""
    path = run.feature_cache_dir if run is not None else Path(tmp) / "features"
    return path.with_name(f"{path.name}-rank{dist.rank}") if dist.enabled else path


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


def _nan_to_none(a: Any) -> Any:
    """A float matrix as JSON (NaN as null), or None."""
    if a is None:
        return None
    return [[None if not np.isfinite(v) else float(v) for v in row] for row in np.asarray(a)]


def _bool_list(a: Any) -> Any:
    return None if a is None else np.asarray(a, dtype=bool).tolist()


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
        "context_scale": est.context_scale_.tolist(),
        "context_readback": _nan_to_none(getattr(est, "context_readback_", None)),
        "context_tied": _bool_list(getattr(est, "context_tied_", None)),
        "concept_names": est.concept_names_,
        "classes": est.classes_,
        "feature_shape": list(est.adapter_.feature_shape),
        "image_shape": list(est.image_shape_),
        "n_classes": int(est.adapter_.n_classes),
        "fit_seconds": float(getattr(est, "fit_seconds_", float("nan"))),
        "precision": getattr(est, "precision_", None),
        "train_source": getattr(est, "train_source_", None),
    }


def load(
    run_dir: str | os.PathLike[str],
    *,
    classifier: Any = None,
    device: str = "cpu",
    n_threads: int | None = None,
) -> Glance:
    """Load a fitted :class:`Glance` from a run directory (see :class:`glance.Run`).

    Parameters
    ----------
    run_dir : path
        The run directory; it is repaired (an interrupted write finished or discarded) and every
        sealed file's sha256 verified first.
    classifier : nn.Module or ClassifierAdapter, optional
        The classifier, when the run holds no copy of it (architectures other than glance's
        reference ones). It must be the one the run was fitted with (same weights).
    device : str
        Where to put the networks.
    n_threads : int, optional
        As for :class:`Glance` (``None``: the cores other processes leave free).

    Raises
    ------
    CheckpointCorruptError
        Missing/incomplete manifest, or a file whose sha256 differs (tampered or damaged).
    CheckpointIncompatibleError
        A newer format version, weights that do not fit the recorded configuration, or a
        ``classifier`` other than the run's.
    """
    run = Run.open(run_dir)
    with run.reading():
        fitted = run.load_fitted()
        state = fitted["state"]
        config = resolve_config(config=_read_yaml_text(fitted["config"], run.path))
        if classifier is None:
            if fitted["classifier"] is None:
                raise CheckpointError(
                    f"{run.path} holds no copy of its classifier; pass classifier= to "
                    "glance.load (--model/--weights on the command line)"
                )
            from glance.classifiers.serialization import load_classifier

            classifier = load_classifier(fitted["classifier"])
        est = Glance(
            classifier,
            layer=state["layer"],
            contexts=tuple(state["contexts"]),
            preset=state["preset"],
            config=config,
            random_state=state["random_state"],
            device=device,
            n_threads=n_threads,
        )
        check_device(device)
        _restore(est, fitted, config, torch.device(device))
        est.identity_ = run.identity
        est.train_data_ = run.data_record()
        est.run_ = run
        _check_classifier_identity(est, run)
        from glance.causal.from_glance import GlobalExplanation

        # A run that went through 'glance graph' carries its graph and SCM; restore them so
        # explanations propagate interventions without rediscovering the graph.
        est._set_global(GlobalExplanation.from_run(run))
    return est


def _check_classifier_identity(est: Glance, run: Run) -> None:
    from glance.classifiers.serialization import classifier_fingerprint

    recorded = (est.identity_ or {}).get("classifier")
    if recorded is None:
        return
    actual = classifier_fingerprint(est.adapter_.model)
    if actual != recorded:
        raise CheckpointIncompatibleError(
            f"the classifier given is not the one {run.path} explains (weights fingerprint "
            f"{actual}, the run recorded {recorded}); pass the classifier it was fitted with"
        )


def _read_yaml_text(text: str, where: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise CheckpointError(f"{where}: config.yaml is not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{where}: config.yaml must hold a mapping")
    data.pop("preset", None)
    return data


def _restore(
    est: Glance, fitted: dict[str, Any], config: GlanceConfig, device: torch.device
) -> None:
    from glance.classifiers import ClassifierAdapter

    state = fitted["state"]
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
    mix = fitted["modules"]["mixture"]
    nets["mixture"] = ConceptMixture(mix["weights"].shape[0], mix["means"].shape[1])
    for name, module in nets.items():
        load_module_state(module, fitted["modules"][name], f"model/{name}.safetensors")
        module.to(device).requires_grad_(False).eval()
    est.encoder_, est.head_ = nets["encoder"], nets["head"]
    est.generator_, est.discriminator_ = nets["generator"], nets["discriminator"]
    est.mixture_ = nets["mixture"]
    est.context_names_ = list(state["contexts"])
    est.context_mean_ = np.asarray(state["context_mean"], dtype=np.float64)
    est.context_std_ = np.asarray(state["context_std"], dtype=np.float64)
    # Runs saved before discrete contexts were recorded treat every context as continuous.
    est.context_levels_ = state.get("context_levels") or [None] * len(est.context_names_)
    # Runs saved before the scale was recorded intervene in standardised units, as they did.
    scale = state.get("context_scale")
    est.context_scale_ = (
        np.ones(len(est.context_names_)) if scale is None else np.asarray(scale, dtype=np.float64)
    )
    # Runs saved before interventions were calibrated intervene uncalibrated, as they did.
    readback, tied = state.get("context_readback"), state.get("context_tied")
    est.context_readback_ = (
        None
        if readback is None or tied is None
        else np.array([[np.nan if v is None else v for v in row] for row in readback], float)
    )
    est.context_tied_ = None if est.context_readback_ is None else np.asarray(tied, dtype=bool)
    est.concept_names_ = list(state["concept_names"])
    est.classes_ = list(state["classes"])
    est.fit_seconds_ = float(state["fit_seconds"]) if state.get("fit_seconds") else float("nan")
    est.train_source_ = state.get("train_source")
    est.precision_ = state.get("precision")
    est.history_ = fitted["history"]
