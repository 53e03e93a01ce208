"""Training tasks: one forward pass of a stage including its loss terms (timm ``TrainingTask``).

Each task returns ``{"loss": total, **components}`` where every component is the *unweighted*
term (logged under its config key) and ``loss`` is the weighted sum. The loop checks every
component for NaN/inf before any optimiser step, so a divergence is reported by term name.

Randomness comes from an explicit ``torch.Generator``. Under data parallelism every rank draws the
random numbers of the *global* batch and keeps its own slice (``ParallelSlice``), so a run on
``k`` processes sees the same noise as a single process with the same global batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from glance.training import losses as L
from glance.training.config import LossConfig

__all__ = [
    "ParallelSlice",
    "ConceptMixture",
    "EncoderTask",
    "GeneratorTask",
    "DiscriminatorTask",
    "ReadbackSpec",
    "TIED_CORRELATION",
    "tied_pairs",
]

LossHook = Callable[[str, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ParallelSlice:
    """This process's share ``[start, stop)`` of a global batch of ``size``."""

    size: int
    start: int
    stop: int

    @classmethod
    def of(cls, global_batch: int, rank: int = 0, world: int = 1) -> ParallelSlice:
        """Contiguous equal shares; ``global_batch`` must be divisible by ``world``."""
        local = global_batch // world
        return cls(global_batch, rank * local, (rank + 1) * local)

    @property
    def local(self) -> int:
        return self.stop - self.start

    def randn(self, *shape: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """Standard normal draws of the global batch, sliced to this process."""
        full = torch.randn(self.size, *shape, generator=generator)
        return full[self.start : self.stop].to(device)


class ConceptMixture(nn.Module):
    """A Gaussian mixture over concept space (the fitted aggregate posterior), sampled in torch.

    Fitted with :class:`sklearn.mixture.GaussianMixture` (full covariances) on the encoded
    training images; stored as buffers so it checkpoints with the models (safetensors).
    """

    def __init__(self, n_components: int, dim: int) -> None:
        super().__init__()
        self.register_buffer(
            "weights", torch.full((n_components,), 1.0 / n_components, dtype=torch.float64)
        )
        self.register_buffer("means", torch.zeros(n_components, dim, dtype=torch.float64))
        self.register_buffer(
            "cholesky", torch.eye(dim, dtype=torch.float64).repeat(n_components, 1, 1)
        )

    @classmethod
    def fit(
        cls, z: torch.Tensor, n_components: int, random_state: int, reg_covar: float = 1e-4
    ) -> ConceptMixture:
        """Fit ``n_components`` full-covariance Gaussians to ``z`` (N, d), deterministically."""
        from sklearn.mixture import GaussianMixture

        x = z.detach().double().cpu().numpy()
        k = max(1, min(n_components, len(x) // max(2, x.shape[1] + 1)))
        gm = GaussianMixture(
            n_components=k,
            covariance_type="full",
            random_state=random_state,
            reg_covar=reg_covar,
            max_iter=200,
            n_init=1,
        ).fit(x)
        out = cls(k, x.shape[1])
        out.weights = torch.as_tensor(gm.weights_, dtype=torch.float64)
        out.means = torch.as_tensor(gm.means_, dtype=torch.float64)
        out.cholesky = torch.linalg.cholesky(torch.as_tensor(gm.covariances_, dtype=torch.float64))
        return out

    def sample(
        self, n: int, generator: torch.Generator, slice_: ParallelSlice | None = None
    ) -> torch.Tensor:
        """``n`` draws (float32, CPU); with ``slice_`` draw the global batch and keep a share."""
        total = slice_.size if slice_ is not None else n
        comp = torch.multinomial(self.weights.cpu(), total, replacement=True, generator=generator)
        eps = torch.randn(total, self.means.shape[1], generator=generator, dtype=torch.float64)
        z = self.means.cpu()[comp] + torch.einsum("nij,nj->ni", self.cholesky.cpu()[comp], eps)
        if slice_ is not None:
            z = z[slice_.start : slice_.stop]
        return z.float()


def _weighted(
    terms: dict[str, torch.Tensor], weights: dict[str, float], on_loss: LossHook | None
) -> dict[str, torch.Tensor]:
    """Apply the fault-injection hook, then return ``{"loss": sum w·t, **terms}``."""
    if on_loss is not None:
        terms = {k: on_loss(k, v) for k, v in terms.items()}
    total = sum(weights[k] * v for k, v in terms.items() if weights[k] != 0.0)
    if not isinstance(total, torch.Tensor):  # every weight zero
        total = next(iter(terms.values())) * 0.0
    return {"loss": total, **terms}


class EncoderTask(nn.Module):
    """Stage 1: concept encoder E and surrogate head S on cached classifier features.

    ``distill`` = T²·KL(softmax(f(x)/T) ‖ softmax(S(z)/T)); ``align`` = MSE of the aligned dims
    to the standardised contexts where known; ``kl`` = KL(q(z|x) ‖ N(0, I)); ``covariance`` =
    off-diagonal covariance of the free dims among themselves and with the aligned dims;
    optionally ``independence`` (HSIC of the free dims and the contexts) and
    ``feature_reconstruction`` (the pooled features decoded back from z).
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, n_aligned: int, cfg: LossConfig):
        super().__init__()
        self.encoder, self.head, self.n_aligned, self.cfg = encoder, head, n_aligned, cfg

    def forward(
        self,
        features: torch.Tensor,
        teacher_logits: torch.Tensor,
        contexts: torch.Tensor,
        eps: torch.Tensor,
        on_loss: LossHook | None = None,
    ) -> dict[str, torch.Tensor]:
        mu, logvar = self.encoder(features)
        z = mu + torch.exp(0.5 * logvar) * eps
        logits = self.head(z)
        cfg = self.cfg
        terms = {
            "distill": L.distillation_kl(teacher_logits, logits, cfg.temperature),
            "align": L.alignment_loss(mu[:, : self.n_aligned], contexts),
            "kl": L.kl_standard_normal(mu, logvar),
            "covariance": L.covariance_penalty(z, self.n_aligned, z.shape[1] - self.n_aligned),
        }
        m = self.n_aligned
        if cfg.independence > 0 and 0 < m < mu.shape[1]:
            # The free dims must not carry the contexts (nonlinearly either): a generator that
            # can read a context from them too draws only part of an intervention on its
            # aligned dim. Unknown contexts are stood in for by their aligned dims.
            known = torch.where(torch.isfinite(contexts), contexts, mu[:, :m].detach())
            terms["independence"] = L.hsic_dependence(mu[:, m:], known)
        if cfg.feature_reconstruction > 0:
            terms["feature_reconstruction"] = L.feature_reconstruction(
                self.encoder.decode_features(z), self.encoder.feature_target(features)
            )
        weights = {k: getattr(cfg, k) for k in terms}
        return _weighted(terms, weights, on_loss)


#: Contexts whose training values correlate beyond this (|Pearson r|) are *tied*: a reader fitted
#: on observational data reads one partly or wholly through the other (on causal shapes it reads
#: ``shape`` through the colour alone, and ``brightness`` a quarter through ``pos_y``:
#: benchmarks/bench_readers.py), so neither is held still when the other moves (the read-back
#: loss, calibrated interventions) nor counted as the other's cross-talk (``glance evaluate``).
TIED_CORRELATION = 0.5
#: Samples per read-back step, and the range of |shift| in standardised units.
READBACK_SAMPLES = 8
READBACK_SHIFT = (0.5, 1.5)


def tied_pairs(contexts: np.ndarray, threshold: float = TIED_CORRELATION) -> np.ndarray:
    """``(m, m)`` bool: contexts whose training values correlate beyond ``threshold``.

    ``contexts`` is (N, m), NaN for unknown values (each pair uses the rows where both are
    known, at least 3); a constant column is tied to nothing, nor is a context to itself.
    """
    c = np.asarray(contexts, dtype=np.float64)
    m = c.shape[1]
    tied = np.zeros((m, m), dtype=bool)
    for j in range(m):
        for k in range(j + 1, m):
            ok = np.isfinite(c[:, j]) & np.isfinite(c[:, k])
            if ok.sum() <= 2:  # too few rows known for both: no correlation to speak of
                continue
            a, b = c[ok, j] - c[ok, j].mean(), c[ok, k] - c[ok, k].mean()
            norm = np.linalg.norm(a) * np.linalg.norm(b)
            if norm > 0:
                tied[j, k] = tied[k, j] = abs(float(a @ b) / norm) > threshold
    return tied


@dataclass(frozen=True)
class ReadbackSpec:
    """What :func:`~glance.training.losses.intervention_readback` needs during training.

    Attributes
    ----------
    reader
        Frozen context reader network: images to standardised contexts (R columns).
    columns
        (R,) long: the aligned dim of ``z`` each reader column reads.
    readable
        (R,) bool: the reader reads that context (held-out R² at least ``READABLE_R2``).
    linked
        (m, R) bool: when aligned dim ``j`` moves, column ``c`` is not compared (the two contexts
        are tied in the training data, :func:`tied_pairs`: penalising
        one when the other moves would fight the intervention itself).
    """

    reader: nn.Module
    columns: torch.Tensor
    readable: torch.Tensor
    linked: torch.Tensor

    @classmethod
    def from_reader(cls, reader: object, contexts: list[str], values: torch.Tensor) -> ReadbackSpec:
        """Spec of a fitted :class:`~glance.metrics.readers.ContextReader` whose CNN reads
        ``contexts`` (the aligned dims, in order); ``values`` (N, m) are the training contexts
        (NaN = unknown), from which the linked pairs are found."""
        names = list(reader.cnn_contexts)  # type: ignore[attr-defined]
        cols = torch.tensor([contexts.index(c) for c in names], dtype=torch.long)
        readable = torch.tensor([reader.readable(c) for c in names], dtype=torch.bool)  # type: ignore[attr-defined]
        linked = torch.as_tensor(tied_pairs(values.double().cpu().numpy()))[:, cols]
        net = reader.net.eval().requires_grad_(False)  # type: ignore[attr-defined]
        return cls(reader=net, columns=cols, readable=readable, linked=linked)

    def draw(
        self, z: torch.Tensor, rng: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Moves for ``z`` (N, d): the moved dim (any dim, aligned or free), a shift towards the
        centre of ``|shift|`` in ``READBACK_SHIFT``, and the (N, R) weights of the comparisons."""
        n, d = z.shape
        moved = torch.randint(0, d, (n,), generator=rng)
        lo, hi = READBACK_SHIFT
        size = lo + (hi - lo) * torch.rand(n, generator=rng)
        toward = -torch.sign(z.detach().cpu()[torch.arange(n), moved])
        shift = size * torch.where(toward == 0, torch.ones_like(toward), toward)
        m = self.linked.shape[0]
        linked = torch.zeros(n, self.columns.numel(), dtype=torch.bool)
        aligned = moved < m
        linked[aligned] = self.linked[moved[aligned]]
        weights = (self.readable.unsqueeze(0) & ~linked).float()
        dev = z.device
        return moved.to(dev), shift.to(dev), weights.to(dev)


class GeneratorTask(nn.Module):
    """Stage 2 generator step (E, S, classifier and D frozen; gradients reach G only).

    One G forward on ``z = [z_real; z_sampled]`` (encoded real images, then draws from the
    concept mixture), one classifier forward and one D forward on the generated images, so the
    step is a single forward per module (friendly to DistributedDataParallel).
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        encoder: nn.Module,
        head: nn.Module,
        classify: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
        cfg: LossConfig,
        readback: ReadbackSpec | None = None,
    ):
        super().__init__()
        self.G = generator
        self.readback = readback  # a frozen dataclass: not registered, not seen by DDP
        # Frozen collaborators are kept out of the module tree (a tuple is not registered), so
        # DDP and the optimiser see only G's parameters.
        self._frozen = (discriminator, encoder, head)
        self.classify, self.cfg = classify, cfg

    def reconstruction(self, images: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """The reconstruction term of both stages: ``LossConfig.reconstruction_loss`` plus
        ``reconstruction_bce`` times the pixels' binary cross-entropy."""
        cfg = self.cfg
        loss = L.RECONSTRUCTION_LOSSES[cfg.reconstruction_loss](images, real)
        if cfg.reconstruction_bce > 0:
            loss = loss + cfg.reconstruction_bce * L.reconstruction_bce(images, real)
        return loss

    def forward(
        self,
        real: torch.Tensor,
        real_features: torch.Tensor | None,
        z_real: torch.Tensor,
        z_sampled: torch.Tensor,
        rng: torch.Generator,
        *,
        disentangle: bool = False,
        readback: bool = False,
        warmup: bool = False,
        on_loss: LossHook | None = None,
    ) -> dict[str, torch.Tensor]:
        cfg, n_real = self.cfg, len(z_real)
        if warmup:  # the reconstruction loss alone (TrainConfig.generator_warmup_steps)
            images = self.G(z_real, noise_mode="random", generator=rng)
            loss = self.reconstruction(images, real)
            return _weighted(
                {"reconstruction": loss}, {"reconstruction": cfg.reconstruction}, on_loss
            )
        D, E, S = self._frozen
        z = torch.cat([z_real, z_sampled])
        images = self.G(z, noise_mode="random", generator=rng)
        logits, feats = self.classify(images)
        with torch.no_grad():
            s_logits = S(z)
        mu_back, _ = E(feats)
        terms = {
            "adversarial": L.g_nonsaturating(D(images)),
            "reconstruction": self.reconstruction(images[:n_real], real),
            "feature_matching": L.feature_matching(feats[:n_real], real_features),
            "distill_generated": L.adversarial_distillation(s_logits, logits),
            "latent_cycle": L.latent_cycle(mu_back, z),
        }
        if disentangle and cfg.disentangle > 0:
            # A few random dims of a few samples keep the lazy penalty cheap: k + 1 extra
            # generator passes over 4 samples instead of d + 1 over the batch.
            dims = torch.randperm(z.shape[1], generator=rng)[:3].tolist()
            terms["disentangle"] = L.orthogonal_jacobian_penalty(
                lambda zz: self.G(zz, noise_mode="const"), z[:4], dims=dims
            )
        if readback and cfg.readback > 0 and self.readback is not None:
            spec, z0 = self.readback, z_real[:READBACK_SAMPLES]
            moved, shift, w = spec.draw(z0, rng)
            terms["readback"] = L.intervention_readback(
                lambda zz: self.G(zz, noise_mode="const"),
                spec.reader,
                z0,
                moved,
                shift,
                spec.columns.to(z0.device),
                w,
            )
        weights = {k: getattr(cfg, k) for k in terms}
        if "disentangle" in weights:
            weights["disentangle"] *= cfg.disentangle_interval  # lazy: scale by the interval
        if "readback" in weights:
            weights["readback"] *= cfg.readback_interval
        out = _weighted(terms, weights, on_loss)
        out["_images"] = images.detach()
        return out


class DiscriminatorTask(nn.Module):
    """Stage 2 discriminator step: logistic loss on real vs generated, lazy R1 on real."""

    def __init__(self, discriminator: nn.Module, cfg: LossConfig):
        super().__init__()
        self.D, self.cfg = discriminator, cfg

    def forward(
        self,
        real: torch.Tensor,
        fake: torch.Tensor,
        *,
        r1: bool = False,
        on_loss: LossHook | None = None,
    ) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        real = real.detach().requires_grad_(r1)
        # Two D calls, not one on the concatenation: minibatch-stddev groups must never mix
        # real and generated images (D could tell them apart by the group statistics).
        real_logits, fake_logits = self.D(real), self.D(fake.detach())
        terms = {"d_logistic": L.d_logistic(real_logits, fake_logits)}
        weights = {"d_logistic": 1.0}
        if r1 and cfg.r1_gamma > 0:
            terms["r1"] = L.r1_penalty(real_logits, real)
            weights["r1"] = cfg.r1_gamma / 2 * cfg.r1_interval  # lazy regularisation
        out = _weighted(terms, weights, on_loss)
        with torch.no_grad():
            out["d_real_sign"] = torch.sign(real_logits).mean()  # ADA overfitting signal
        return out
