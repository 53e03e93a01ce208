"""Configuration of a GLANCE fit: encoder, generator, loss weights and training schedule.

Every dataclass here is the single source of truth for its keys; YAML/TOML files and presets are
validated through :meth:`glance.config.ConfigBase.from_dict`, so an unknown key or a wrong type
is a :class:`~glance.exceptions.ConfigError` naming it. Resolution and channel count are never
configured: they come from the data.

The presets (:data:`PRESETS`) are defined here, next to the dataclasses they are made of and to
:func:`resolve_config`, which reads them. Dependencies point one way: this module imports only
:mod:`glance.config`, :mod:`glance.exceptions` and :mod:`glance.registry`;
:mod:`glance.presets` (the presets' public name) imports this module, never the reverse.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from glance.config import ConfigBase, load_config_file
from glance.exceptions import ConfigError
from glance.registry import Registry

__all__ = [
    "EncoderConfig",
    "GeneratorConfig",
    "LossConfig",
    "TrainConfig",
    "GlanceConfig",
    "PRESETS",
    "AT_RESOLUTION",
    "resolve_config",
    "config_hash",
]


def _positive(obj: ConfigBase, *names: str, allow_zero: bool = False) -> None:
    for name in names:
        value = getattr(obj, name)
        if value < 0 or (value == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise ConfigError(f"{type(obj).__name__}.{name} must be {bound}; got {value!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EncoderConfig(ConfigBase):
    """Concept encoder E and surrogate head S (DESIGN §2.1).

    Attributes
    ----------
    free_dims
        Number ``u`` of free (unaligned) concept dimensions after the aligned ones.
    """

    free_dims: int = 8
    hidden: int = 128
    head_hidden: int = 128
    head_layers: int = 2

    def validate(self) -> None:
        _positive(self, "free_dims", allow_zero=True)
        _positive(self, "hidden", "head_hidden", "head_layers")


@dataclasses.dataclass(frozen=True, kw_only=True)
class GeneratorConfig(ConfigBase):
    """StyleGAN2-style generator G and discriminator D (DESIGN §2.2)."""

    w_dim: int = 64
    mapping_layers: int = 2
    channel_base: int = 2048
    channel_max: int = 64
    d_channel_base: int = 2048
    d_channel_max: int = 64
    mbstd_group: int = 4
    use_noise: bool = True
    # StyleGAN's 0.01 suits millions of images; a CPU schedule of 20k images barely moves the
    # mapping network at that rate.
    mapping_lr_multiplier: float = 0.01
    styled_input: bool = False

    def validate(self) -> None:
        _positive(
            self,
            "mapping_lr_multiplier",
            "w_dim",
            "mapping_layers",
            "channel_base",
            "channel_max",
            "d_channel_base",
            "d_channel_max",
            "mbstd_group",
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class LossConfig(ConfigBase):
    """Weights of every loss term (each term is logged under its key)."""

    # Stage 1: encoder E + surrogate head S.
    distill: float = 1.0
    temperature: float = 2.0
    align: float = 4.0
    kl: float = 0.02
    covariance: float = 1.0
    #: Normalised HSIC between the free dims and the contexts (nonlinear dependence, which the
    #: covariance penalty cannot see); 0 = off.
    independence: float = 0.0
    #: Decode the classifier's (standardised, pooled) features back from z; 0 = off. Without it
    #: the free dims keep only what the class logits need, and the generator cannot draw what
    #: the features hold but the decision ignores (a shape's rotation): it draws the average.
    feature_reconstruction: float = 0.0
    # Stage 2: generator G (+ discriminator D).
    adversarial: float = 0.1
    # Measured on Morpho-MNIST (fast preset, 600 generator steps): weight 10 instead of 1 raised
    # the generated-image alignment from 0.63/0.78 to 0.77/0.86 (thickness/intensity) at the
    # same fidelity; sharper digits are measurable digits.
    reconstruction: float = 10.0
    #: ``"l1"`` (pixels) or ``"laplacian"`` (every band of a Laplacian pyramid weighted alike).
    reconstruction_loss: Literal["l1", "laplacian"] = "l1"
    #: Weight, inside the reconstruction term, of a binary cross-entropy of the pixels
    #: (:func:`glance.training.losses.reconstruction_bce`); 0 = off. Its gradient on a pixel's
    #: logit is the pixel's error, however far the output sigmoid is saturated, where an L1's is
    #: the sigmoid's slope: it keeps a generator that draws black from staying black.
    reconstruction_bce: float = 0.0
    feature_matching: float = 1.0
    distill_generated: float = 1.0
    latent_cycle: float = 1.0
    r1_gamma: float = 1.0
    r1_interval: int = 16
    disentangle: float = 0.0
    disentangle_interval: int = 4
    #: Interventions read back as asked: moving one concept dim of G's input by a shift must
    #: change the context it is aligned to by that shift and leave every other context alone,
    #: read from the generated image by a frozen context reader fitted on the real training
    #: images (:func:`glance.training.losses.intervention_readback`). 0 = off.
    readback: float = 0.0
    readback_interval: int = 4

    def validate(self) -> None:
        _positive(
            self,
            "distill",
            "align",
            "kl",
            "covariance",
            "independence",
            "feature_reconstruction",
            "adversarial",
            "reconstruction",
            "reconstruction_bce",
            "feature_matching",
            "distill_generated",
            "latent_cycle",
            "r1_gamma",
            "disentangle",
            "readback",
            allow_zero=True,
        )
        _positive(self, "temperature", "r1_interval", "disentangle_interval", "readback_interval")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig(ConfigBase):
    """Schedule, optimisers, checkpoints and numerics of the staged training."""

    encoder_steps: int = 600
    encoder_batch: int = 128
    encoder_lr: float = 2e-3
    # Generator steps on the reconstruction loss alone, before the full objective: a step
    # without the classifier, discriminator and sampled concepts costs a fraction of a full one
    # and teaches the generator the images' layout first (see AT_RESOLUTION for the figures).
    generator_warmup_steps: int = 0
    # The warm-up is a regression, not an adversarial game: given either of these it gets its own
    # Adam (the full stage then starts a fresh one with ``generator_lr`` and ``betas``) with this
    # learning rate (None: ``generator_lr``) and these betas (None: ``betas``). None for both:
    # the warm-up steps the generator's own optimiser, whose state carries into the full stage.
    generator_warmup_lr: float | None = None
    generator_warmup_betas: tuple[float, ...] | None = None
    generator_steps: int = 2000
    generator_batch: int = 32
    generator_lr: float = 2e-3
    discriminator_lr: float = 2e-3
    betas: tuple[float, ...] = (0.0, 0.99)
    joint_steps: int = 0
    joint_lr: float = 2e-4
    ema_beta: float = 0.995
    # The EMA's half-life grows with training (StyleGAN2-ADA's ema_rampup): at most this fraction
    # of the generator steps done so far. With a fixed beta, 600 steps of the fast preset kept
    # 0.995**600 = 5% of the random initial weights and averaged in the blurry early generator:
    # measured on the embedded digits (fast, same seed) FID 3.67 -> 2.74 and reconstruction
    # fidelity 0.965 -> 0.974. ``None``: the fixed ``ema_beta`` from the first step.
    ema_rampup: float | None = 0.05
    mixture_components: int = 20
    sample_fraction: float = 0.5
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    max_rollbacks: int = 3
    rollback_lr_factor: float = 0.5
    mixed_precision: Literal["auto", "off", "bf16", "fp16"] = "auto"
    eval_images: int = 2000

    def warmup_adam(self) -> tuple[float, tuple[float, ...]] | None:
        """``(lr, betas)`` of the warm-up's own Adam, or ``None`` where the warm-up steps the
        generator's optimiser (no warm-up, or neither warm-up setting given)."""
        if not self.generator_warmup_steps or (
            self.generator_warmup_lr is None and self.generator_warmup_betas is None
        ):
            return None
        lr = self.generator_lr if self.generator_warmup_lr is None else self.generator_warmup_lr
        return lr, tuple(self.generator_warmup_betas or self.betas)

    def validate(self) -> None:
        _positive(
            self,
            "encoder_steps",
            "generator_warmup_steps",
            "generator_steps",
            "joint_steps",
            allow_zero=True,
        )
        _positive(
            self,
            "encoder_batch",
            "generator_batch",
            "encoder_lr",
            "generator_lr",
            "discriminator_lr",
            "joint_lr",
            "mixture_components",
            "checkpoint_every",
            "keep_checkpoints",
            "rollback_lr_factor",
            "eval_images",
        )
        _positive(self, "max_rollbacks", allow_zero=True)
        for name in ("betas", "generator_warmup_betas"):
            betas = getattr(self, name)
            if betas is not None and (len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas)):
                raise ConfigError(f"TrainConfig.{name} must be two numbers in [0, 1); got {betas}")
        if self.generator_warmup_lr is not None and not self.generator_warmup_lr > 0:
            raise ConfigError(
                "TrainConfig.generator_warmup_lr must be > 0 or None; "
                f"got {self.generator_warmup_lr}"
            )
        if self.ema_rampup is not None and not 0.0 < self.ema_rampup <= 1.0:
            raise ConfigError(
                f"TrainConfig.ema_rampup must be in (0, 1] or None; got {self.ema_rampup}"
            )
        if not 0.0 <= self.ema_beta < 1.0:
            raise ConfigError(f"TrainConfig.ema_beta must be in [0, 1); got {self.ema_beta}")
        if not 0.0 <= self.sample_fraction <= 1.0:
            raise ConfigError(
                f"TrainConfig.sample_fraction must be in [0, 1]; got {self.sample_fraction}"
            )
        if self.rollback_lr_factor > 1.0:
            raise ConfigError(
                f"TrainConfig.rollback_lr_factor must be in (0, 1]; got {self.rollback_lr_factor}"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class GlanceConfig(ConfigBase):
    """The complete, resolved configuration of a fit (written to ``RUN/config.yaml``)."""

    encoder: EncoderConfig = dataclasses.field(default_factory=EncoderConfig)
    generator: GeneratorConfig = dataclasses.field(default_factory=GeneratorConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


# -- presets: registered configurations (the table is in glance.presets' docstring) ------------

#: Preset name → :class:`GlanceConfig` (public name: :data:`glance.presets.PRESETS`).
PRESETS: Registry[GlanceConfig] = Registry("preset")

PRESETS.register(
    "tiny",
    GlanceConfig(
        encoder=EncoderConfig(free_dims=2),
        generator=GeneratorConfig(
            w_dim=16,
            mapping_layers=1,
            channel_base=128,
            channel_max=16,
            d_channel_base=128,
            d_channel_max=16,
        ),
        loss=LossConfig(r1_interval=4, disentangle=0.1, disentangle_interval=2),
        train=TrainConfig(
            encoder_steps=10,
            encoder_batch=16,
            generator_steps=10,
            generator_batch=8,
            mixture_components=2,
            checkpoint_every=5,
            eval_images=64,
        ),
    ),
)

# The CPU presets share one generator/discriminator width; they differ in training length.
_CPU_GENERATOR = GeneratorConfig(
    w_dim=64,
    mapping_layers=2,
    channel_base=1024,
    channel_max=48,
    d_channel_base=1024,
    d_channel_max=48,
)
# The fast preset's short schedule (600 generator steps when this was measured; 1500 warm-up + 450
# full steps now) needs a generator that learns quickly.
# Measured on the embedded digits (fast preset, same seed, with the ramped EMA): FID on the
# classifier's features 2.74 with StyleGAN's settings (two threads; the rest one thread); 2.48
# with the mapping network at the full learning rate (StyleGAN's 0.01 suits millions of images,
# not 20k); 2.36 without per-pixel noise (it only adds speckle to a twin whose reconstructions
# must be deterministic); 2.33 with a styled input; 1.87 with all three, at reconstruction
# fidelity 0.981 (0.974 before). The default preset keeps StyleGAN's settings until they are
# measured there.
_FAST_GENERATOR = dataclasses.replace(
    _CPU_GENERATOR, use_noise=False, mapping_lr_multiplier=1.0, styled_input=True
)

PRESETS.register(
    "fast",
    GlanceConfig(
        encoder=EncoderConfig(free_dims=8),
        generator=_FAST_GENERATOR,
        # A short schedule leaves the reconstruction loss in charge and the images blurred: the
        # adversarial weight 0.3 instead of 0.1 measured FID 1.87 -> 1.41 on the embedded digits
        # (same seed, 2000 held-out digits), reconstruction fidelity 0.981 -> 0.976, generated
        # alignment 0.83 / 0.87 -> 0.84 / 0.90.
        # The pixels' cross-entropy beside the L1 (as in `default`): without it the warm-up drew
        # every embedded digit black (seed 0, the demo's 9,000 training digits; the fit refused
        # the saturated generator after step 2100, whatever the thread count). With it, one fit
        # of the same data (2 threads, 1000 held-out digits): fidelity 0.993, reconstruction
        # fidelity 0.987, sampled fidelity 0.973, FID 0.67, alignment R2 0.93 / 0.97.
        loss=LossConfig(adversarial=0.3, reconstruction_bce=0.1),
        # Measured on the embedded Morpho-MNIST (1000 held-out digits, small-cnn), after 600
        # generator steps: fidelity 0.992, reconstruction fidelity 0.977, sampled fidelity
        # 0.976, alignment R2 0.93 / 0.97, generated alignment 0.77 / 0.86. A generator step
        # costs ~0.4 CPU-s on one core, a warm-up step (reconstruction loss alone) ~0.06.
        # 1500 warm-up steps first, paid for by 150 fewer full steps (fit time unchanged within
        # 10%): a generator that has learned the images before the adversarial game draws an
        # intervention on one concept more fully and with less cross-talk. Measured on causal
        # shapes at 32 px (same seed and classifier, benchmarks/bench_entanglement.py):
        # agreement with the oracle's per-image ranking (Spearman) 0.49 -> 0.64, brightness
        # slope 0.28 -> 0.69, worst cross-talk of pos_y 0.95 -> 0.46, fidelity 0.990 -> 0.990.
        train=TrainConfig(
            encoder_steps=600,
            encoder_batch=128,
            generator_warmup_steps=1500,
            generator_steps=450,
            generator_batch=32,
            mixture_components=20,
            checkpoint_every=300,
            eval_images=2000,
        ),
    ),
)

PRESETS.register(
    "default",
    GlanceConfig(
        encoder=EncoderConfig(free_dims=8),
        # The fast preset's widths: 64 channels (w_dim 128) measured 0.79 vs 0.40 CPU-s per
        # generator step, and the 20-minute budget buys more steps at 48. Measured end to end
        # with StyleGAN's mapping (1000 held-out digits): fidelity 0.995, reconstruction 0.990,
        # sampled 0.979, R2 0.945 / 0.968, generated alignment 0.929 / 0.965, fit 891 s.
        # Then the fast preset's quick-learning generator (mapping at the full learning rate, no
        # per-pixel noise, styled input) and its adversarial weight, 1500 warm-up steps paid for
        # by 200 fewer full steps, and the pixels' cross-entropy in the reconstruction term, so
        # that the warm-up cannot draw black (StyleGAN's slow mapping did, on 4,000 Morpho-MNIST
        # digits: reconstruction fidelity 0.44). Measured in one invocation on the embedded
        # digits (bench_twin.py --preset default, seed 0, 2000 held-out digits): FID 0.71 ->
        # 0.46, SSIM 0.53 -> 0.61, read-back R2 of thickness 0.36 -> 0.63 and intensity 0.81 ->
        # 0.88, reconstruction fidelity 0.989 -> 0.988, sampled 0.982 -> 0.983, fit 750 -> 750 s;
        # on those Morpho-MNIST digits (bench_explain.py --tasks morpho) thickness effectiveness
        # 0.88 -> 0.91 (its slope 1.10 -> 0.70), the ranking's agreement with the oracle as
        # before (0.969, cosine 0.984). docs/faithfulness.md has the steps between.
        generator=_FAST_GENERATOR,
        loss=LossConfig(adversarial=0.3, reconstruction_bce=0.1),
        train=TrainConfig(
            encoder_steps=1500,
            encoder_batch=128,
            generator_warmup_steps=1500,
            generator_steps=1800,
            generator_batch=32,
            mixture_components=20,
            checkpoint_every=500,
            eval_images=5000,
        ),
    ),
)

PRESETS.register(
    "paper",
    GlanceConfig(
        encoder=EncoderConfig(free_dims=16),
        generator=GeneratorConfig(
            w_dim=512,
            mapping_layers=8,
            channel_base=16384,
            channel_max=512,
            d_channel_base=16384,
            d_channel_max=512,
        ),
        loss=LossConfig(disentangle=0.1),
        train=TrainConfig(
            encoder_steps=5000,
            encoder_batch=256,
            generator_steps=100_000,
            generator_batch=32,
            joint_steps=5000,
            mixture_components=20,
            checkpoint_every=2000,
            eval_images=10_000,
        ),
    ),
)


#: Per preset, overrides for images of at least a given side (applied in increasing order, before
#: the user's own overrides). A schedule that suits 28 px digits leaves a 64 px twin drawing
#: blobs: measured on the pendulum at 64 px with a user's ResNet-18 (fast, seed 0, 1000 held-out
#: scenes; benchmarks/bench_resolution.py), 600 -> 1200 generator steps raised the weakest
#: context's read-back R² from G(E(x)) 0.63 -> 0.87, SSIM 0.75 -> 0.83, FID 4.6 -> 2.0; the
#: Laplacian loss alone (600 steps) 0.63 -> 0.71, SSIM 0.79, FID 3.9. The discriminator is half
#: a generator step's cost at 64 px; half its width pays for the longer schedule within the
#: 20-minute budget on 2 CPU cores. All three: weakest read-back 0.97, SSIM 0.87, FID 3.2 (the
#: narrower discriminator costs FID against 1200 L1 steps alone), fit 1016 s. The Laplacian loss
#: does not help at 28 px (digits: FID 1.48 -> 1.78), so it is an override, not the preset's.
#: Then the preset's 1500 warm-up steps on the reconstruction loss alone (0.12 s each against
#: 0.67 s for a full step at 64 px; kept at 64 px with 1200 full steps), measured on causal
#: shapes at 64 px (same seed, classifier and 1200 full steps,
#: 1000 held-out images): read-back R² brightness 0.55 -> 0.74, hue 0.80 -> 0.84, size 0.82 ->
#: 0.95, shape 0.83 -> 0.86, SSIM 0.69 -> 0.84, edges 0.42 -> 0.54, FID 9.9 -> 6.9, sampled
#: fidelity 0.985 -> 0.992, rule factor first 0.94 -> 0.98, fit 806 -> 998 s; on the pendulum
#: edges 0.74 -> 0.91, SSIM 0.85 -> 0.95, fit 832 -> 975 s, FID 3.5 -> 4.3 (docs/own-model.md).
#: Then the warm-up got its own Adam (learning rate 5e-3, betas (0.9, 0.99): a regression wants
#: momentum, the adversarial game's beta1 = 0 does not) and the read-back loss joined the full
#: steps at weight 2 (``LossConfig.readback``: a one-dim move of G's input changes the context it
#: is aligned to, read from the image, and no other). Same seed, data and classifiers, 1000
#: held-out images, alone on 2 cores: shapes brightness read-back 0.74 -> 0.81 (own Adam) ->
#: 0.83 (both), SSIM 0.84 -> 0.85, edges 0.54 -> 0.57 -> 0.56, FID 6.9 -> 6.3, the worst
#: cross-talk of pos_y 0.47 -> 0.30, size 0.37 -> 0.25, agreement with the renderer's oracle
#: 0.49 -> 0.56, fit 999 -> 1050 s; on the pendulum (the read-back loss alone) the shadow first by
#: direct importance 0.84 -> 0.97, the angles' direct / total 0.30 / 0.16 -> 0.08 / 0.05, FID
#: 4.3 -> 2.1, fit 975 -> 982 s (benchmarks/bench_resolution.py, docs/own-model.md).
#: The names of ``LossConfig.reconstruction_loss`` are those of
#: :data:`glance.training.losses.RECONSTRUCTION_LOSSES` (a test keeps them equal).
AT_RESOLUTION: dict[str, list[tuple[int, dict[str, Any]]]] = {
    "fast": [
        (
            64,
            {
                # The 64 px figures were measured with the L1 pyramid alone (no cross-entropy).
                "loss": {
                    "reconstruction_loss": "laplacian",
                    "readback": 2.0,
                    "reconstruction_bce": 0.0,
                },
                "generator": {"d_channel_base": 512},
                "train": {
                    "generator_steps": 1200,
                    "checkpoint_every": 400,
                    "generator_warmup_lr": 5e-3,
                    "generator_warmup_betas": (0.9, 0.99),
                },
            },
        ),
        # At 128 px a full generator step is 3.4x a 64 px one (2.3 s on 2 CPU cores; one
        # generator step's classifier, generator and discriminator passes over its 64 images
        # measured 1.5 / 0.95 / 0.93 s), and the fit took 3,385 s with the 64 px override. Half
        # the batch halves every pass: measured on the pendulum at 128 px (same data, ResNet-18
        # and seed; bench_resolution.py --size 128) the fit took 2,234 s on a slower day, SSIM
        # 0.964 and edges 0.89 as before, FID 1.16 -> 3.22, sampled fidelity 0.994 -> 0.989,
        # the pendulum angle's direct / total 0.06 -> 0.11 (docs/own-model.md).
        (128, {"train": {"generator_batch": 16}}),
    ],
}


def _deep_update(base: dict[str, Any], changes: Mapping[str, Any], where: str) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_update(out[key], value, f"{where}.{key}")
        else:
            out[key] = value
    return out


def resolve_config(
    preset: str = "fast",
    config: GlanceConfig | Mapping[str, Any] | str | Path | None = None,
    *,
    resolution: int | None = None,
) -> GlanceConfig:
    """Resolve a preset name plus overrides into a validated :class:`GlanceConfig`.

    Parameters
    ----------
    preset
        Name of a registered preset (see :data:`PRESETS`).
    config
        ``None`` (the preset as is), a complete :class:`GlanceConfig` (used as is), a mapping of
        overrides (``{"train": {"generator_steps": 100}}``), or the path of a YAML/TOML file with
        such overrides. A file may name its own base with a top-level ``preset`` key.
    resolution
        Side of the training images, when known: the preset's :data:`AT_RESOLUTION` overrides
        for that size apply first, the caller's overrides on top of them.

    Raises
    ------
    ConfigError
        Unknown key, wrong type or out-of-range value, naming the key (and the file).
    UnknownNameError
        Unknown preset name.
    """
    if isinstance(config, GlanceConfig):
        return config
    overrides: dict[str, Any] = {}
    source = "config"
    if isinstance(config, (str, Path)):
        source = str(config)
        overrides = load_config_file(config)
    elif isinstance(config, Mapping):
        overrides = dict(config)
    elif config is not None:
        raise ConfigError(
            "'config' must be a GlanceConfig, a mapping or a file path; "
            f"got {type(config).__name__}"
        )
    preset = overrides.pop("preset", preset)
    if not isinstance(preset, str):
        raise ConfigError(f"{source}: 'preset' must be a string; got {preset!r}")
    base = PRESETS.get(preset).to_dict()
    for side, changes in AT_RESOLUTION.get(preset, []):
        if resolution is not None and resolution >= side:
            base = _deep_update(base, changes, f"AT_RESOLUTION[{preset!r}]")
    try:
        return GlanceConfig.from_dict(_deep_update(base, overrides, "config"))
    except ConfigError as exc:
        if source != "config":
            raise ConfigError(f"{source}: {exc}") from None
        raise


def config_hash(config: GlanceConfig) -> str:
    """Short sha256 of the resolved configuration (recorded in every checkpoint)."""
    text = json.dumps(config.to_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
