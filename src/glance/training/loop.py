"""The staged training loop of GLANCE (DESIGN §2.1–2.2): encoder, then (optionally) a generator
warm-up on the reconstruction loss alone, then generator, then joint.

:func:`fit_loop` is the whole schedule in a few lines; each section is a method of
:class:`Trainer`. Every random draw comes from one ``torch.Generator`` whose state is
checkpointed, and the data order of each epoch is a permutation derived from (seed, stage,
epoch), so a run resumed from a checkpoint continues exactly as if it had never stopped.

Numerics: every loss term is checked for NaN/inf *before* any optimiser step. A bad step rolls
back to the last good checkpoint with the learning rates scaled down, at most
``train.max_rollbacks`` times, then raises :class:`~glance.exceptions.TrainingDivergedError`
naming the term, the step and the checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from glance._io import atomic_write_text
from glance.exceptions import CheckpointIncompatibleError, GlanceError, TrainingDivergedError
from glance.training.checkpoint import CheckpointData, CheckpointManager
from glance.training.config import GlanceConfig, config_hash
from glance.training.distributed import DistContext
from glance.training.tasks import (
    ConceptMixture,
    DiscriminatorTask,
    EncoderTask,
    GeneratorTask,
    ParallelSlice,
    ReadbackSpec,
)

__all__ = [
    "Parts",
    "TrainData",
    "Hooks",
    "Trainer",
    "TrainingInterrupted",
    "fit_loop",
    "request_stop",
    "training_precision",
]

logger = logging.getLogger(__name__)

_STAGE_IDS = {"encoder": 1, "generator": 2, "joint": 3, "warmup": 4}

# Set from a signal handler (SIGTERM/SIGINT): the loop checkpoints at the next step boundary and
# stops. Only a flag is set in the handler; the I/O happens in the loop (Lightning PR #21407).
_STOP = threading.Event()


def request_stop() -> None:
    """Ask every running :func:`fit_loop` to checkpoint and stop at the next step boundary."""
    _STOP.set()


@dataclass
class Parts:
    """The networks being trained (and the frozen classifier's forward)."""

    encoder: nn.Module
    head: nn.Module
    generator: nn.Module
    generator_ema: nn.Module
    discriminator: nn.Module
    classify: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    mixture: ConceptMixture | None = None
    #: The read-back loss's frozen reader and columns (``LossConfig.readback``); None = off.
    readback: ReadbackSpec | None = None

    def modules(self) -> dict[str, nn.Module]:
        return {
            "encoder": self.encoder,
            "head": self.head,
            "generator": self.generator,
            "generator_ema": self.generator_ema,
            "discriminator": self.discriminator,
        }


@dataclass
class TrainData:
    """Training images plus the classifier outputs computed once (features, logits).

    ``features`` is a tensor, or a :class:`~glance.classifiers.FeatureRows` reading them from
    the fit's feature cache when they exceed the memory budget (``FEATURE_MEMORY_BUDGET`` of
    :mod:`glance.classifiers.features`); either is indexed like a tensor's first dimension
    (``features[idx]``, ``features[a:b]``) and returns a tensor, so the loop reads only the
    rows a step needs.
    """

    dataset: Any  # glance.data.ImageDataset
    features: Any  # [N, C, h, w]: torch.Tensor or glance.classifiers.FeatureRows
    logits: torch.Tensor  # [N, K]
    contexts: torch.Tensor  # [N, m] standardised, NaN = missing


@dataclass
class Hooks:
    """Test seams (fault injection); all optional."""

    on_loss: Callable[[str, torch.Tensor], torch.Tensor] | None = None
    on_before_commit: Callable[[Path], None] | None = None
    on_step: Callable[[int], None] | None = None


@dataclass(frozen=True)
class Stage:
    name: str
    start: int
    steps: int

    @property
    def end(self) -> int:
        return self.start + self.steps


class TrainingInterrupted(GlanceError):
    """Training stopped on request (SIGTERM/SIGINT) after saving a checkpoint."""

    exit_code = 143


class _NonFinite(Exception):
    def __init__(self, term: str, step: int, value: float):
        super().__init__(f"non-finite loss term {term!r} ({value}) at step {step}")
        self.term, self.step, self.value = term, step, value


#: On a CPU with bf16 matrix units (:func:`cpu_has_bf16_units`), ``mixed_precision="auto"``
#: trains images of at least ``AUTO_CPU_BF16_MIN_SIDE`` px in bf16, and says that ``"bf16"`` is
#: there for images of at least ``CPU_BF16_HINT_MIN_SIDE`` px. Measured on a 2-core Xeon with AMX
#: (torch 2.14, oneDNN), the ``fast`` preset, the same data, ResNet-18 and seed, one seed each
#: (docs/own-model.md): at 128 px the pendulum's fit took 1,372 s in bf16 against 2,234 s in
#: fp32 the same day, every figure of bench_resolution.py as before but FID 3.2 -> 4.3; at 64 px
#: a full generator step 0.69-0.70 s against 0.80-0.91 s, the pendulum's fit 1,059 s against
#: 1,265 s with every figure as good, but causal shapes' brightness read back from the
#: reconstructions 0.83 -> 0.79, under the 0.80 a reconstruction must reach. Hence bf16 by
#: default from 128 px, a setting away at 64 px, and fp32 below (not measured in bf16).
AUTO_CPU_BF16_MIN_SIDE = 128
CPU_BF16_HINT_MIN_SIDE = 64


def cpu_has_bf16_units() -> bool:
    """Whether this CPU has bf16 matrix units (Intel AMX-BF16), which oneDNN uses for bf16
    convolutions and matmuls; without them CPU bf16 is emulated and slower than fp32."""
    probe = torch.cpu
    try:
        return bool(probe._is_amx_tile_supported() and probe._is_avx512_bf16_supported())
    except AttributeError:  # a torch build without the probes: assume none
        return False


@dataclass
class _Precision:
    """Autocast + GradScaler on CUDA (bf16 or fp16); bf16 autocast on CPU where it pays.

    On CPU, ``"bf16"`` always autocasts (``torch.autocast("cpu", torch.bfloat16)``); ``"auto"``
    does so only on a CPU with bf16 matrix units and for images of at least
    :data:`AUTO_CPU_BF16_MIN_SIDE` px a side (``image_side``), stays fp32 otherwise, and logs
    that ``"bf16"`` is there from :data:`CPU_BF16_HINT_MIN_SIDE` px; ``"fp16"`` (which would
    need a gradient scaler) runs in fp32 there with a warning.
    """

    device: torch.device
    mode: str
    image_side: int | None = None
    scalers: dict[str, Any] = field(default_factory=dict)
    skipped: int = 0

    def __post_init__(self) -> None:
        cuda = self.device.type == "cuda"
        cpu_bf16 = self.device.type == "cpu" and (
            self.mode == "bf16" or self._cpu_units_pay(AUTO_CPU_BF16_MIN_SIDE)
        )
        self.enabled = (cuda and self.mode != "off") or cpu_bf16
        use_bf16 = (
            self.mode == "bf16"
            or cpu_bf16
            or (self.mode == "auto" and self.enabled and torch.cuda.is_bf16_supported())
        )
        self.dtype = torch.bfloat16 if use_bf16 else torch.float16
        self.use_scaler = self.enabled and self.dtype == torch.float16
        if self.mode == "fp16" and not cuda:
            logger.warning(
                "mixed_precision='fp16' runs only on CUDA; training on %s in fp32 "
                "(use 'bf16' for mixed precision on CPU)",
                self.device,
            )
        elif cpu_bf16 and self.mode == "auto":
            logger.info(
                "mixed_precision='auto': training %d px images in bf16 on this CPU's bf16 "
                "matrix units ('off' trains in fp32)",
                self.image_side,
            )
        elif self.hint_bf16:
            logger.info(
                "training %d px images in fp32 on a CPU with bf16 matrix units: "
                "mixed_precision='bf16' made a fit about 15%% faster at 64 px "
                "(docs/own-model.md says what it changed in the benchmarks)",
                self.image_side,
            )

    def _cpu_units_pay(self, min_side: int) -> bool:
        return (
            self.device.type == "cpu"
            and self.mode == "auto"
            and self.image_side is not None
            and self.image_side >= min_side
            and cpu_has_bf16_units()
        )

    @property
    def hint_bf16(self) -> bool:
        """Whether ``"auto"`` leaves a CPU's bf16 matrix units unused on images large enough
        for them to pay."""
        return not self.enabled and self._cpu_units_pay(CPU_BF16_HINT_MIN_SIDE)

    @property
    def name(self) -> str:
        """What the steps compute in: ``"bf16"``, ``"fp16"`` or ``"fp32"``."""
        if not self.enabled:
            return "fp32"
        return "bf16" if self.dtype == torch.bfloat16 else "fp16"

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def step(self, name: str, opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """Backward and step; with fp16 the scaler may skip a step (counted)."""
        if not self.use_scaler:
            loss.backward()
            opt.step()
            return
        scaler = self.scalers.setdefault(name, torch.amp.GradScaler(self.device.type))
        before = scaler.get_scale()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if scaler.get_scale() < before:
            self.skipped += 1


def training_precision(device: str | torch.device, mode: str, image_side: int | None = None) -> str:
    """What a fit's steps would compute in on ``device`` (``"fp32"``, ``"bf16"`` or ``"fp16"``)
    for the config's ``train.mixed_precision`` ``mode`` and images of ``image_side`` pixels;
    logs what a fit logs about it (the bf16 hint, fp16 on a CPU)."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():  # planning on another machine
        return {"off": "fp32", "bf16": "bf16", "fp16": "fp16"}.get(mode, "bf16 or fp16 (the GPU's)")
    return _Precision(device, mode, image_side).name


def _mix_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (stable across runs and platforms)."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return h


class Trainer:
    """State and sections of one staged fit; driven by :func:`fit_loop`.

    Parameters
    ----------
    parts, data, config
        Networks, cached training data and the resolved configuration.
    checkpoint_dir
        Where checkpoints go (``RUN/checkpoints``); also the rollback source.
    metrics_path
        ``RUN/metrics.jsonl`` (``None``: keep the history in memory only).
    seed
        Seeds the sampling generator and the data order.
    dist
        Rank / world size (see :class:`~glance.training.distributed.DistContext`).
    """

    log_every = 10

    def __init__(
        self,
        parts: Parts,
        data: TrainData,
        config: GlanceConfig,
        *,
        checkpoint_dir: Path,
        metrics_path: Path | None,
        seed: int,
        fingerprint: str,
        dist: DistContext | None = None,
        quiet: bool = False,
        hooks: Hooks | None = None,
        threads: Any = None,
    ) -> None:
        self.parts, self.data, self.config, self.seed = parts, data, config, int(seed)
        self.threads = threads  # a glance.threads.ThreadPolicy re-checked between steps
        self.dist = dist or DistContext()
        self.device = self.dist.device
        self.hooks = hooks or Hooks()
        self.quiet, self.fingerprint = quiet, fingerprint
        self.metrics_path = metrics_path if self.dist.is_main else None
        self.ckpt = CheckpointManager(
            checkpoint_dir,
            keep=config.train.keep_checkpoints,
            on_before_commit=self.hooks.on_before_commit,
        )
        self.n_aligned = data.contexts.shape[1]
        self.rng = torch.Generator().manual_seed(_mix_seed(self.seed, 7))
        shape = getattr(data.dataset, "image_shape", None)
        self.precision = _Precision(
            self.device, config.train.mixed_precision, int(shape[-1]) if shape else None
        )
        self.stages = self._plan()
        self.total_steps = self.stages[-1].end if self.stages else 0
        self.lr_scale, self.rollbacks = 1.0, 0
        self.last_checkpoint: Path | None = None
        self.history: list[dict[str, Any]] = []
        self._latents: torch.Tensor | None = None
        self._perm_cache: dict[tuple[int, int], torch.Tensor] = {}
        self._stop_requested = False
        self._log_stage: str | None = None
        self._log_latest: dict[str, float] = {}
        self._tb = _tensorboard(self.metrics_path)
        self._build_tasks()
        self._build_optimizers()

    # -- set-up ------------------------------------------------------------------------------

    def _plan(self) -> list[Stage]:
        t, stages, start = self.config.train, [], 0
        for name, steps in (
            ("encoder", t.encoder_steps),
            ("warmup", t.generator_warmup_steps),
            ("generator", t.generator_steps),
            ("joint", t.joint_steps),
        ):
            if steps > 0:
                stages.append(Stage(name, start, steps))
                start += steps
        for name in ("encoder_batch", "generator_batch"):
            self.dist.check_divisible(getattr(t, name), name)
        return stages

    def _build_tasks(self) -> None:
        p, cfg = self.parts, self.config.loss
        self.enc_task = EncoderTask(p.encoder, p.head, self.n_aligned, cfg)
        self.gen_task = GeneratorTask(
            p.generator, p.discriminator, p.encoder, p.head, p.classify, cfg, p.readback
        )
        self.disc_task = DiscriminatorTask(p.discriminator, cfg)
        self.enc_ddp = self.dist.wrap(self.enc_task)
        self.gen_ddp = self.dist.wrap(self.gen_task)
        self.disc_ddp = self.dist.wrap(self.disc_task)

    def _build_optimizers(self) -> None:
        t, p = self.config.train, self.parts
        enc_params = [*p.encoder.parameters(), *p.head.parameters()]
        self.optimizers = {
            "encoder": torch.optim.Adam(enc_params, lr=t.encoder_lr),
            "generator": torch.optim.Adam(
                p.generator.parameters(), lr=t.generator_lr, betas=tuple(t.betas)
            ),
            "discriminator": torch.optim.Adam(
                p.discriminator.parameters(), lr=t.discriminator_lr, betas=tuple(t.betas)
            ),
            "joint": torch.optim.Adam(enc_params, lr=t.joint_lr),
        }
        warmup = t.warmup_adam()
        if warmup is not None:
            lr, betas = warmup
            self.optimizers["warmup"] = torch.optim.Adam(
                p.generator.parameters(), lr=lr, betas=betas
            )
        self._base_lr = {n: o.param_groups[0]["lr"] for n, o in self.optimizers.items()}

    def _set_lr_scale(self, scale: float) -> None:
        self.lr_scale = scale
        for name, opt in self.optimizers.items():
            for group in opt.param_groups:
                group["lr"] = self._base_lr[name] * scale

    # -- checkpoints ---------------------------------------------------------------------------

    def _state(self, step: int) -> dict[str, Any]:
        return {
            "stage": self.stage_at(step).name if step < self.total_steps else "done",
            "seed": self.seed,
            "config": self.config.to_dict(),
            "config_hash": config_hash(self.config),
            "dataset_fingerprint": self.fingerprint,
            "world_size": self.dist.world_size,
            "lr_scale": self.lr_scale,
            "rollbacks": self.rollbacks,
            "amp_skipped_steps": self.precision.skipped,
            "precision": self.precision.name,
            "torch_version": torch.__version__,
        }

    def checkpoint(self, step: int) -> None:
        """Save a checkpoint of ``step`` (rank 0 writes; every rank waits for the commit)."""
        if self.dist.is_main:
            extra = {}
            if self.parts.mixture is not None:
                extra = {f"mixture.{k}": v for k, v in self.parts.mixture.state_dict().items()}
            path = self.ckpt.save(
                step,
                modules=self.parts.modules(),
                optimizers=self.optimizers,
                generators={"sampling": self.rng},
                extra=extra,
                state=self._state(step),
            )
            logger.debug("checkpoint %s", path)
        self.dist.barrier()
        self.last_checkpoint = self.ckpt.path_for(step)

    def _check_compatible(self, data: CheckpointData) -> None:
        state = data.state
        if state.get("config_hash") != config_hash(self.config):
            old, new = state.get("config", {}), self.config.to_dict()
            diffs = [
                f"{sec}.{k}: {old.get(sec, {}).get(k)!r} -> {v!r}"
                for sec, vals in new.items()
                for k, v in vals.items()
                if old.get(sec, {}).get(k) != v
            ]
            raise CheckpointIncompatibleError(
                f"{data.path} was written with a different configuration ("
                + "; ".join(diffs[:8])
                + "); resume with the same config or start a new run"
            )
        if state.get("dataset_fingerprint") != self.fingerprint:
            raise CheckpointIncompatibleError(
                f"{data.path} was trained on different data (fingerprint "
                f"{state.get('dataset_fingerprint')} vs {self.fingerprint} now)"
            )
        if int(state.get("world_size", 1)) != self.dist.world_size:
            raise CheckpointIncompatibleError(
                f"{data.path} was written by {state.get('world_size')} processes; resuming with "
                f"{self.dist.world_size} would not be exact. Resume with the same number."
            )

    def restore(self, path: Path) -> int:
        """Load the checkpoint at ``path`` into the live objects; return its step."""
        data = self.ckpt.load(path)
        self._check_compatible(data)
        self.ckpt.restore(
            data,
            modules=self.parts.modules(),
            optimizers=self.optimizers,
            generators={"sampling": self.rng},
        )
        mix = {k.split(".", 1)[1]: v for k, v in data.extra.items() if k.startswith("mixture.")}
        self.parts.mixture = None
        if mix:
            self.parts.mixture = ConceptMixture(mix["weights"].shape[0], mix["means"].shape[1])
            self.parts.mixture.load_state_dict(mix)
        self.rollbacks = int(data.state.get("rollbacks", 0))
        self._set_lr_scale(float(data.state.get("lr_scale", 1.0)))
        self.precision.skipped = int(data.state.get("amp_skipped_steps", 0))
        self._latents = None
        self.last_checkpoint = path
        return data.step

    def start(self, resume: bool) -> int:
        """Resume from the newest complete checkpoint, or checkpoint the initial state."""
        step = -1
        if resume:
            if self.dist.is_main:
                found = self.ckpt.latest_valid()
                step = -1 if found is None else int(found.name.split("-")[1])
            step = self.dist.broadcast_int(step)
            if step < 0:
                logger.warning(
                    "no complete checkpoint in %s; starting from step 0", self.ckpt.directory
                )
        if step >= 0:
            self.restore(self.ckpt.path_for(step))
            self._load_history(step)
            if step >= self.total_steps:
                logger.info("already complete: step %d/%d", step, self.total_steps)
            else:
                logger.info(
                    "resumed from %s (step %d/%d)", self.last_checkpoint, step, self.total_steps
                )
            return step
        self._reset_history()
        self.checkpoint(0)
        return 0

    # -- data --------------------------------------------------------------------------------

    def stage_at(self, step: int) -> Stage:
        for stage in self.stages:
            if stage.start <= step < stage.end:
                return stage
        raise IndexError(step)

    def batch_indices(self, stage: Stage, step: int, batch: int) -> np.ndarray:
        """Global batch of ``step``: slice of a (seed, stage, epoch)-derived permutation."""
        n = len(self.data.dataset)
        per_epoch = max(1, n // batch)
        epoch, pos = divmod(step - stage.start, per_epoch)
        key = (_STAGE_IDS[stage.name], epoch)
        if key not in self._perm_cache:
            g = torch.Generator().manual_seed(_mix_seed(self.seed, *key))
            perm = torch.randperm(n, generator=g)
            if n < batch:  # tiny datasets: cycle through the permutation
                perm = perm.repeat(math.ceil(batch / n))
            self._perm_cache = {key: perm}
        return self._perm_cache[key][pos * batch : (pos + 1) * batch].numpy()

    def _share(self, batch: int) -> ParallelSlice:
        return ParallelSlice.of(batch, self.dist.rank, self.dist.world_size)

    def latents(self) -> torch.Tensor:
        """Posterior means of all training images under the current (frozen) encoder."""
        if self._latents is None:
            self._latents = encode_features(self.parts.encoder, self.data.features, self.device)
        return self._latents

    def ensure_mixture(self) -> None:
        """Fit the concept mixture to the encoded training images (once, after stage 1)."""
        if self.parts.mixture is None:
            t = self.config.train
            self.parts.mixture = ConceptMixture.fit(
                self.latents(), t.mixture_components, random_state=self.seed
            )

    # -- steps -------------------------------------------------------------------------------

    def _check_finite(self, out: dict[str, torch.Tensor], step: int) -> None:
        names = [k for k in out if not k.startswith("_") and k != "loss"]
        values = [out[k].detach() for k in names]
        bad = torch.stack([~torch.isfinite(v).all() for v in values])
        bad = self.dist.any(bad)
        if bad.any():
            i = int(bad.nonzero()[0])
            raise _NonFinite(names[i], step, float(values[i].float().mean()))

    def _encoder_step(self, stage: Stage, step: int, opt: str) -> dict[str, torch.Tensor]:
        t = self.config.train
        share = self._share(t.encoder_batch)
        idx = self.batch_indices(stage, step, t.encoder_batch)[share.start : share.stop]
        d = self.data
        eps = share.randn(self.parts.encoder.z_dim, generator=self.rng, device=self.device)
        with self.precision.autocast():
            out = self.enc_ddp(
                d.features[idx].to(self.device),
                d.logits[idx].to(self.device),
                d.contexts[idx].to(self.device),
                eps,
                on_loss=self.hooks.on_loss,
            )
        self._check_finite(out, step)
        self.optimizers[opt].zero_grad(set_to_none=True)
        self.precision.step(opt, self.optimizers[opt], out["loss"])
        return out

    def _generator_step(self, stage: Stage, step: int) -> dict[str, torch.Tensor]:
        t, cfg, p = self.config.train, self.config.loss, self.parts
        idx, real, noise_rng = self._generator_batch(stage, step)
        n_sampled = int(round(t.generator_batch * t.sample_fraction))
        n_sampled -= n_sampled % self.dist.world_size
        z_sampled = p.mixture.sample(n_sampled, self.rng, self._share(n_sampled)).to(self.device)
        feats = self.data.features[idx]  # read once (from the feature cache, if any)
        if stage.name == "joint":
            self._latents = None  # the encoder moves: encode afresh
            z_real = encode_features(p.encoder, feats, self.device)
        else:
            z_real = self.latents()[idx].to(self.device)
        local = step - stage.start
        with self.precision.autocast():
            p.discriminator.requires_grad_(False)
            g_out = self.gen_ddp(
                real,
                feats.to(self.device),
                z_real,
                z_sampled,
                noise_rng,
                disentangle=local % self.config.loss.disentangle_interval == 0,
                readback=local % cfg.readback_interval == 0,
                on_loss=self.hooks.on_loss,
            )
            p.discriminator.requires_grad_(True)
            d_out = self.disc_ddp(
                real,
                g_out["_images"],
                r1=local % cfg.r1_interval == 0,
                on_loss=self.hooks.on_loss,
            )
        self._check_finite(g_out, step)
        self._check_finite(d_out, step)
        self._optimise(step, generator=g_out, discriminator=d_out)
        return {**g_out, **{k: v for k, v in d_out.items() if k != "loss"}, "d_loss": d_out["loss"]}

    def _warmup_step(self, stage: Stage, step: int) -> dict[str, torch.Tensor]:
        """A generator step on the reconstruction loss alone: every image of the batch is real,
        no classifier, discriminator or sampled concepts (a fraction of a full step's cost)."""
        idx, real, noise_rng = self._generator_batch(stage, step)
        z_real = self.latents()[idx].to(self.device)
        with self.precision.autocast():
            out = self.gen_ddp(
                real, None, z_real, z_real[:0], noise_rng, warmup=True, on_loss=self.hooks.on_loss
            )
        self._check_finite(out, step)
        self._optimise(step, **{"warmup" if "warmup" in self.optimizers else "generator": out})
        return out

    def _generator_batch(
        self, stage: Stage, step: int
    ) -> tuple[np.ndarray, torch.Tensor, torch.Generator]:
        """This rank's real images of a generator step (indices, images) and its noise seed."""
        t = self.config.train
        share = self._share(t.generator_batch)
        idx = self.batch_indices(stage, step, t.generator_batch)[share.start : share.stop]
        real = self.data.dataset.load_images(idx).to(self.device)
        noise_rng = torch.Generator().manual_seed(_mix_seed(self.seed, step, self.dist.rank))
        return idx, real, noise_rng

    def _optimise(self, step: int, **outs: dict[str, torch.Tensor]) -> None:
        """One optimiser step per named output's loss, then the generator's EMA follows."""
        for name, out in outs.items():
            self.optimizers[name].zero_grad(set_to_none=True)
            self.precision.step(name, self.optimizers[name], out["loss"])
        p, t = self.parts, self.config.train
        update_ema(p.generator_ema, p.generator, ema_beta_at(t, self._generator_steps_done(step)))

    def _generator_steps_done(self, step: int) -> int:
        """Generator steps done once ``step`` ends, counted from the first generator stage."""
        first = next(s.start for s in self.stages if s.name != "encoder")
        return step - first + 1

    def train_step(self, step: int) -> dict[str, float]:
        """One optimisation step of the stage that ``step`` belongs to."""
        stage = self.stage_at(step)
        p = self.parts
        if stage.name == "encoder":
            p.encoder.requires_grad_(True)  # also after a rollback from a later stage
            p.head.requires_grad_(True)
            out = self._encoder_step(stage, step, "encoder")
        else:
            self.ensure_mixture()
            enc = {}
            if stage.name == "joint":
                p.encoder.requires_grad_(True)
                p.head.requires_grad_(True)
                enc = self._encoder_step(stage, step, "joint")
            # E and S are frozen while G trains: the generator's losses must not reach them.
            p.encoder.requires_grad_(False)
            p.head.requires_grad_(False)
            if stage.name == "warmup":
                out = self._warmup_step(stage, step)
            else:
                out = {**enc, **self._generator_step(stage, step)}
        return {k: float(v.detach().float().mean()) for k, v in out.items() if k[0] != "_"}

    # -- numerics ------------------------------------------------------------------------------

    @torch.no_grad()
    def check_generator_draws(self, step: int, n: int = 64) -> None:
        """Refuse a generator that draws one image whatever the concepts: its output sigmoid
        saturated (a sparse data set's pixel L1 is lowest at black) and no gradient brings it
        back, so every figure measured on it would be about nothing.

        A generator that is merely slow to use the concepts (a few steps into a fit, mid-grey)
        is let through: only a saturated one cannot learn any more.

        Raises
        ------
        TrainingDivergedError
            Every pixel of the EMA generator's images of ``n`` training concepts varies by less
            than ``GENERATOR_MIN_SPREAD`` across them and sits at 0 or 1.
        """
        z = self.latents()[:n].to(self.device)
        images = self.parts.generator_ema(z, noise_mode="const").float()
        spread = float(images.std(0).max()) if len(images) > 1 else float("inf")
        edge = float(((images < SATURATED) | (images > 1 - SATURATED)).float().mean())
        if not spread >= GENERATOR_MIN_SPREAD and edge >= 0.99:
            raise TrainingDivergedError(
                f"the generator draws the same image for every concept after step {step} "
                f"(largest per-pixel spread over {len(images)} training concepts {spread:.2g}, "
                f"mean pixel {float(images.mean()):.2g}): its output saturated, and the run is "
                "not saved as a model. Add the pixels' cross-entropy to the reconstruction loss "
                '(config={"loss": {"reconstruction_bce": 0.1}}), whose gradient a saturated '
                'output keeps, or fit without the warm-up (config={"train": '
                '{"generator_warmup_steps": 0}})'
            )

    def rollback(self, bad: _NonFinite) -> int:
        """Return to the last good checkpoint with lower learning rates, or give up."""
        t = self.config.train
        last = self.last_checkpoint
        if self.rollbacks >= t.max_rollbacks or last is None:
            raise TrainingDivergedError(
                f"training diverged: loss term {bad.term!r} was non-finite ({bad.value}) at "
                f"step {bad.step} after {self.rollbacks} rollback(s) with lower learning rates; "
                f"last good checkpoint: {last}"
            )
        rollbacks = self.rollbacks + 1
        scale = self.lr_scale * t.rollback_lr_factor
        logger.warning(
            "%s; rolling back to %s with learning rates x%.3g (rollback %d of %d)",
            bad,
            last,
            scale,
            rollbacks,
            t.max_rollbacks,
        )
        step = self.restore(last)
        self.rollbacks = rollbacks
        self._set_lr_scale(scale)
        self._load_history(step)
        return step

    # -- logging -----------------------------------------------------------------------------

    def _reset_history(self) -> None:
        self.history = []
        if self.metrics_path is not None:
            atomic_write_text(self.metrics_path, "")

    def _load_history(self, step: int) -> None:
        """Keep the logged records up to ``step`` (a resumed run rewrites what follows)."""
        records = []
        if self.metrics_path is not None and self.metrics_path.is_file():
            for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(ValueError):
                    rec = json.loads(line)
                    if rec.get("step", 1 << 62) <= step:
                        records.append(rec)
            atomic_write_text(
                self.metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
            )
        self.history = records

    def log(self, step: int, values: dict[str, float], bar: Any) -> None:
        stage = self.stage_at(step - 1).name
        if bar is not None:
            bar.set_description(f"glance fit [{stage}]")
            bar.set_postfix({k: f"{v:.3g}" for k, v in list(values.items())[:5]}, refresh=False)
            bar.update(1)
        # Lazy terms (R1, the disentangle and read-back penalties) run every few steps, rarely
        # on a logged one: each record carries the latest value of every term of its stage.
        if stage != self._log_stage:
            self._log_stage, self._log_latest = stage, {}
        self._log_latest.update(values)
        if step % self.log_every and step != self.total_steps:
            return
        rec = {"step": step, "stage": stage, "time": round(time.time(), 3), **self._log_latest}
        self.history.append(rec)
        if self.metrics_path is not None:
            with open(self.metrics_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec, sort_keys=True) + "\n")
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(f"{stage}/{key}", value, step)

    def should_checkpoint(self, step: int) -> bool:
        every = self.config.train.checkpoint_every
        return step % every == 0 or any(step == s.end for s in self.stages)

    def request_stop(self) -> None:
        """Ask the loop to checkpoint and stop at the next step boundary (signal-safe)."""
        self._stop_requested = True

    @contextlib.contextmanager
    def progress(self, initial: int) -> Iterator[Any]:
        from tqdm.auto import tqdm

        disable = self.quiet or not self.dist.is_main
        bar = tqdm(
            total=self.total_steps,
            initial=initial,
            disable=disable,
            unit="step",
            dynamic_ncols=True,
            leave=False,
        )
        try:
            yield bar
        finally:
            bar.close()


def _tensorboard(metrics_path: Path | None) -> Any:
    """A TensorBoard writer next to ``metrics.jsonl`` when tensorboard is installed, else None."""
    if metrics_path is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional: metrics.jsonl is always written
        return None
    return SummaryWriter(log_dir=str(metrics_path.parent / "tensorboard"))


#: Bytes of features per batch of :func:`encode_features`, at most (the encoder's activations
#: grow with them: 512 rows of 96 x 32 x 32 take ~1 GB through the encoder).
ENCODE_BATCH_BYTES = 64 << 20


@torch.no_grad()
def encode_features(
    encoder: nn.Module, features: Any, device: torch.device, batch: int = 512
) -> torch.Tensor:
    """Posterior means ``mu`` of ``features`` in batches (no gradients), on CPU.

    Batches hold at most ``batch`` rows and :data:`ENCODE_BATCH_BYTES` bytes. ``features`` may
    be cached rows (:class:`~glance.classifiers.FeatureRows`): one batch is read at a time.
    """
    row_bytes = 4 * math.prod(features.shape[1:])
    batch = max(1, min(batch, ENCODE_BATCH_BYTES // max(row_bytes, 1)))
    out = [
        encoder(features[i : i + batch].to(device))[0].float().cpu()
        for i in range(0, len(features), batch)
    ]
    return torch.cat(out) if out else torch.zeros(0, encoder.z_dim)


def ema_beta_at(train: Any, steps_done: int) -> float:
    """The EMA decay after ``steps_done`` generator steps: ``train.ema_beta``, or less while the
    half-life ``ln 0.5 / ln beta`` (in steps) would exceed ``train.ema_rampup × steps_done``."""
    beta, rampup = float(train.ema_beta), train.ema_rampup
    if rampup is None or beta == 0.0:
        return beta
    return min(beta, 0.5 ** (1.0 / max(rampup * steps_done, 1e-8)))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """``ema ← beta·ema + (1 − beta)·model`` for parameters; buffers are copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
        p_ema.lerp_(p.detach(), 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)


def make_ema(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` for the exponential moving average."""
    return copy.deepcopy(model).requires_grad_(False).eval()


#: Smallest largest-per-pixel spread of a generator's images across concepts
#: (:meth:`Trainer.check_generator_draws`): a saturated sigmoid gives 1e-10, a generator that
#: draws anything at all gives more than 1e-2.
GENERATOR_MIN_SPREAD = 1e-3
#: A pixel this close to 0 or 1 sits where the output sigmoid has (almost) no gradient.
SATURATED = 1e-3


def fit_loop(trainer: Trainer, *, resume: bool = False) -> list[dict[str, Any]]:
    """Run (or resume) the staged schedule of ``trainer``; return the logged history.

    Raises
    ------
    TrainingDivergedError
        Non-finite loss terms persisted through ``train.max_rollbacks`` rollbacks, or the
        generator draws one image whatever the concepts (checked after the warm-up and at the
        end).
    TrainingInterrupted
        A stop was requested (SIGTERM/SIGINT); a checkpoint of the last step was saved.
    """
    _STOP.clear()
    step = trainer.start(resume)
    with trainer.progress(step) as bar:
        while step < trainer.total_steps:
            try:
                values = trainer.train_step(step)
            except _NonFinite as bad:
                step = trainer.rollback(bad)
                bar.reset(total=trainer.total_steps)
                bar.update(step)
                continue
            step += 1
            trainer.log(step, values, bar)
            if step == trainer.stages[0].end and trainer.stages[0].name == "encoder":
                trainer.ensure_mixture()  # so the stage-end checkpoint holds the mixture
            if any(s.name == "warmup" and s.end == step for s in trainer.stages):
                trainer.check_generator_draws(step)  # fail before the costly full steps
            if trainer.should_checkpoint(step):
                trainer.checkpoint(step)
            if trainer.hooks.on_step is not None:
                trainer.hooks.on_step(step)
            if trainer.threads is not None:
                trainer.threads.tick()  # follow the machine's load as it changes
            if trainer._stop_requested or _STOP.is_set():
                if trainer.last_checkpoint != trainer.ckpt.path_for(step):
                    trainer.checkpoint(step)
                raise TrainingInterrupted(
                    f"training stopped at step {step}/{trainer.total_steps}; checkpoint "
                    f"{trainer.last_checkpoint} saved. Continue with --resume."
                )
    if trainer._tb is not None:
        trainer._tb.close()
    if any(s.name in ("warmup", "generator", "joint") for s in trainer.stages):
        trainer.check_generator_draws(step)
    if trainer.precision.skipped:
        logger.warning(
            "mixed precision skipped %d optimiser steps (inf/NaN gradients)",
            trainer.precision.skipped,
        )
    return trainer.history
