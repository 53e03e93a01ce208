"""Loss terms of GLANCE (DESIGN §2.1-2.2) as pure functions returning scalar tensors.

No function here holds state, logs or steps an optimiser; the training tasks weight and sum them.
Batch reductions are means, so a term's scale does not depend on the batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from glance.exceptions import ShapeError

__all__ = [
    "distillation_kl",
    "alignment_loss",
    "kl_standard_normal",
    "covariance_penalty",
    "g_nonsaturating",
    "d_logistic",
    "r1_penalty",
    "adversarial_distillation",
    "latent_cycle",
    "reconstruction_l1",
    "reconstruction_laplacian",
    "RECONSTRUCTION_LOSSES",
    "reconstruction_bce",
    "feature_matching",
    "feature_reconstruction",
    "orthogonal_jacobian_penalty",
    "intervention_readback",
    "hsic_dependence",
]


def _same_shape(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    if a.shape != b.shape:
        raise ShapeError(
            f"{names} must have the same shape; got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _kl_logits(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Batch mean of KL(softmax(p) || softmax(q)), computed from log-probabilities."""
    log_p = F.log_softmax(p_logits, dim=1)
    log_q = F.log_softmax(q_logits, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()


def distillation_kl(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Knowledge distillation ``T^2 KL(softmax(f/T) || softmax(S/T))`` (Hinton et al., 2015).

    Parameters
    ----------
    teacher_logits : Tensor of shape (N, K)
        The classifier's logits ``f(x)`` (detach them; the classifier is never trained).
    student_logits : Tensor of shape (N, K)
        The surrogate's logits ``S(z)``.
    temperature : float
        Softening temperature ``T``; the ``T^2`` factor keeps gradient sizes comparable across T.
    """
    _same_shape(teacher_logits, student_logits, "teacher_logits and student_logits")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    t = temperature
    return t * t * _kl_logits(teacher_logits / t, student_logits / t)


def alignment_loss(
    z_aligned: torch.Tensor, contexts: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error between aligned dims and standardised contexts where known.

    Parameters
    ----------
    z_aligned : Tensor of shape (N, m)
        The first ``m`` concept dimensions.
    contexts : Tensor of shape (N, m)
        Standardised context values; NaN where unknown.
    mask : bool Tensor of shape (N, m), optional
        Where the context is known; combined with ``isfinite(contexts)``.

    Returns
    -------
    Tensor
        Mean over the known entries; 0 (still connected to the graph) when none is known.
        NaN contexts never reach the gradient (they are replaced before the subtraction).
    """
    _same_shape(z_aligned, contexts, "z_aligned and contexts")
    known = torch.isfinite(contexts)
    if mask is not None:
        _same_shape(z_aligned, mask, "z_aligned and mask")
        known = known & mask.bool()
    target = torch.where(known, contexts, torch.zeros_like(contexts))
    sq = torch.where(known, (z_aligned - target).square(), torch.zeros_like(z_aligned))
    return sq.sum() / known.sum().clamp(min=1)


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))`` summed over dims, mean over the batch."""
    _same_shape(mu, logvar, "mu and logvar")
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(dim=1).mean()


def _dims(spec: int | Sequence[int], start: int) -> list[int]:
    if isinstance(spec, int):
        return list(range(start, start + spec))
    return [int(i) for i in spec]


def covariance_penalty(
    z: torch.Tensor, aligned_dims: int | Sequence[int], free_dims: int | Sequence[int]
) -> torch.Tensor:
    """Mean squared batch covariance among free dims and between free and aligned dims.

    Aligned dims are not penalised among themselves: they keep their natural correlation (the
    causal graph must be able to see thickness -> intensity).

    Parameters
    ----------
    z : Tensor of shape (N, d)
        Concept vectors (a batch with N >= 2).
    aligned_dims, free_dims : int or sequence of int
        Indices of the aligned and free dims; an int ``m`` for ``aligned_dims`` means dims
        ``0..m-1`` and an int ``u`` for ``free_dims`` means the ``u`` dims after the aligned ones.

    Returns
    -------
    Tensor
        Mean of the squared covariances over the penalised pairs (each unordered pair once);
        0 when there is no pair to penalise.
    """
    if z.ndim != 2 or z.shape[0] < 2:
        raise ShapeError(f"z must have shape (N >= 2, d); got {tuple(z.shape)}")
    aligned = _dims(aligned_dims, 0)
    free = _dims(free_dims, max(aligned, default=-1) + 1)
    if any(i < 0 or i >= z.shape[1] for i in aligned + free):
        raise ShapeError(
            f"aligned/free dims {aligned}/{free} out of range for z with {z.shape[1]} dims"
        )
    zc = z - z.mean(dim=0, keepdim=True)
    cov = zc.t() @ zc / (z.shape[0] - 1)  # [d, d]
    terms = []
    if len(free) > 1:
        ff = cov[free][:, free]
        iu = torch.triu_indices(len(free), len(free), offset=1, device=z.device)
        terms.append(ff[iu[0], iu[1]])
    if free and aligned:
        terms.append(cov[free][:, aligned].reshape(-1))
    if not terms:
        return z.sum() * 0.0
    return torch.cat(terms).square().mean()


def _rbf_gram(x: torch.Tensor) -> torch.Tensor:
    """Gaussian kernel matrix of the rows of ``x``, bandwidth the median pairwise distance."""
    d2 = torch.cdist(x, x).square()
    med = d2.detach()[~torch.eye(len(x), dtype=torch.bool, device=x.device)].median()
    return torch.exp(-d2 / (med.clamp(min=1e-12)))


def hsic_dependence(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Normalised HSIC between the rows of ``a`` and ``b`` with Gaussian kernels (RBF CKA).

    0 when ``a`` and ``b`` are independent over the batch (in expectation), 1 when one is a
    bijective function of the other; unlike a covariance it sees nonlinear dependence (Gretton
    et al. 2005; Kornblith et al. 2019). Bandwidths: the median heuristic, without gradient.

    Parameters
    ----------
    a : Tensor of shape (N, p)
    b : Tensor of shape (N, q)
        Paired rows (N >= 4).
    """
    if a.ndim != 2 or b.ndim != 2 or len(a) != len(b) or len(a) < 4:
        raise ShapeError(
            f"a and b must have shapes (N >= 4, p) and (N, q); got {tuple(a.shape)}, "
            f"{tuple(b.shape)}"
        )
    n = len(a)
    h = torch.eye(n, device=a.device, dtype=a.dtype) - 1.0 / n
    k, m = h @ _rbf_gram(a) @ h, h @ _rbf_gram(b.to(a.dtype)) @ h
    cross = (k * m).sum()
    return cross / ((k * k).sum() * (m * m).sum()).sqrt().clamp(min=1e-12)


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss ``mean(softplus(-D(G(z))))``."""
    return F.softplus(-fake_logits).mean()


def d_logistic(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Logistic discriminator loss ``mean(softplus(-D(x))) + mean(softplus(D(G(z))))``."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """R1 gradient penalty ``mean_n ||d D(x_n) / d x_n||^2`` (Mescheder et al., 2018).

    Not scaled: the caller multiplies by ``gamma / 2`` and, for lazy regularisation, by the
    interval. For ``D(x) = w . x + b`` it equals ``||w||^2`` exactly.

    Parameters
    ----------
    real_logits : Tensor of shape (N,)
        ``D(real_images)``, computed with ``real_images.requires_grad_(True)``.
    real_images : Tensor of shape (N, C, H, W)
        The images the logits were computed from.

    Returns
    -------
    Tensor
        Differentiable (``create_graph=True``) so it can be minimised w.r.t. D's parameters.
    """
    if not real_images.requires_grad:
        raise ValueError(
            "r1_penalty needs real_images.requires_grad_(True) before computing "
            "real_logits = D(real_images)"
        )
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.square().flatten(1).sum(dim=1).mean()


def adversarial_distillation(
    surrogate_logits: torch.Tensor,
    classifier_logits_on_generated: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """``KL(softmax(S(z)) || softmax(f(G(z))))``: the classifier must agree with ``S`` on ``G(z)``.

    Gradients reach ``G`` through ``classifier_logits_on_generated``; detach
    ``surrogate_logits`` when ``S`` is frozen (stage 2).
    """
    _same_shape(
        surrogate_logits,
        classifier_logits_on_generated,
        "surrogate_logits and classifier_logits_on_generated",
    )
    t = temperature
    return t * t * _kl_logits(surrogate_logits / t, classifier_logits_on_generated / t)


def latent_cycle(z_hat: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the concepts read back from ``G(z)`` and ``z`` itself."""
    _same_shape(z_hat, z, "z_hat and z")
    return F.mse_loss(z_hat, z)


def reconstruction_l1(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean absolute pixel error ``mean |G(E(h(x))) - x|``."""
    _same_shape(x_hat, x, "x_hat and x")
    return (x_hat - x).abs().mean()


def _laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Band-pass levels ``g_j - up(g_{j+1})`` of an average-pooling pyramid, then the low-pass
    residual: ``levels + 1`` tensors, finest first."""
    bands = []
    for _ in range(levels):
        down = F.avg_pool2d(x, 2)
        bands.append(
            x - F.interpolate(down, size=x.shape[-2:], mode="bilinear", align_corners=False)
        )
        x = down
    return [*bands, x]


def reconstruction_laplacian(
    x_hat: torch.Tensor, x: torch.Tensor, levels: int | None = None
) -> torch.Tensor:
    """Mean absolute error per level of a Laplacian pyramid, summed over the levels.

    Every spatial frequency band counts the same (Bojanowski et al., "Optimizing the latent
    space of generative networks", 2018: the Lap1 loss), where a plain pixel L1 lets the large
    flat regions of an image outweigh its small objects and thin edges, which a short schedule
    then leaves blurred. A uniform offset costs what it costs in pixel L1 (it lives in the
    low-pass level alone). ``levels`` defaults to halving down to 8 px (3 at 64 px); an image
    under 16 px has one level.
    """
    _same_shape(x_hat, x, "x_hat and x")
    if levels is None:
        levels = max(1, (min(x.shape[-2:]) // 8).bit_length() - 1)
    diffs = _laplacian_pyramid(x_hat - x, levels)  # the pyramid is linear: one pass
    return torch.stack([d.abs().mean() for d in diffs]).sum()


def reconstruction_bce(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of the pixels of ``x_hat`` (in ``[0, 1]``) against ``x``.

    Through the generator's output sigmoid its gradient on a pixel's logit is ``x_hat - x``,
    the error itself, where an L1's is the sigmoid's slope times the error's sign: a pixel
    driven to 0 while its target is bright still pulls (an L1 fitted to sparse images, whose
    per-pixel median is black, can saturate the sigmoid for good). Computed in float32 outside
    autocast (which refuses the op): PyTorch's backward divides by ``max(p (1 - p), 1e-12)``,
    so a pixel that float32 rounds to exactly 0 or 1 gets a zero gradient, not the NaN of
    ``0 / 0`` that differentiating ``log(p)`` by hand gives there.
    """
    _same_shape(x_hat, x, "x_hat and x")
    with torch.autocast(device_type=x_hat.device.type, enabled=False):
        return F.binary_cross_entropy(x_hat.float(), x.float())


#: Reconstruction losses by name (:attr:`~glance.training.config.LossConfig.reconstruction_loss`).
RECONSTRUCTION_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l1": reconstruction_l1,
    "laplacian": reconstruction_laplacian,
}


def feature_reconstruction(decoded: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the classifier features decoded from ``z`` against the features
    themselves (standardised and pooled: :meth:`ConceptEncoder.feature_target`).

    The concept space then keeps what the classifier's features hold, not only what its
    logits need: a β-VAE on the features, with some dims aligned to the contexts."""
    _same_shape(decoded, target, "decoded and target")
    return F.mse_loss(decoded, target)


def feature_matching(h_fake: torch.Tensor, h_real: torch.Tensor) -> torch.Tensor:
    """Mean squared error between classifier features of generated and real images."""
    _same_shape(h_fake, h_real, "h_fake and h_real")
    return F.mse_loss(h_fake, h_real)


def orthogonal_jacobian_penalty(
    generator: Callable[[torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    eps: float = 0.1,
    *,
    dims: Sequence[int] | None = None,
) -> torch.Tensor:
    """Finite-difference orthogonal-Jacobian penalty on ``G`` w.r.t. ``z`` (OroJaR-style).

    For each perturbed dim ``i`` the image change ``D_i = (G(z + eps e_i) - G(z)) / eps`` is one
    column of the Jacobian; the penalty is the mean squared off-diagonal entry of the Gram matrix
    ``<D_i, D_j>`` (inner products averaged over pixels), so changing one concept changes the
    image in a direction of its own. One batched call to ``generator`` of ``(k + 1) N`` samples.

    Parameters
    ----------
    generator : callable
        Maps z (M, d) to images (M, ...); must be deterministic (a
        :class:`glance.surrogate.Generator` is called with ``noise_mode="const"``).
    z : Tensor of shape (N, d)
        Concept vectors.
    eps : float
        Finite-difference step, in z units.
    dims : sequence of int, optional
        The dims whose Jacobian columns are compared (all by default; pass a random subset to
        make it cheaper). At least two.
    """
    from glance.surrogate.generator import Generator  # local: training must not import at load

    if z.ndim != 2:
        raise ShapeError(f"z must have shape (N, d); got {tuple(z.shape)}")
    n, d = z.shape
    idx = list(range(d)) if dims is None else [int(i) for i in dims]
    if len(idx) < 2:
        raise ValueError(f"orthogonal_jacobian_penalty needs at least 2 dims; got {idx}")
    steps = torch.zeros(len(idx), d, device=z.device, dtype=z.dtype)
    steps[torch.arange(len(idx)), torch.tensor(idx)] = eps
    z_all = torch.cat([z.unsqueeze(0), z.unsqueeze(0) + steps.unsqueeze(1)]).reshape(-1, d)
    if isinstance(generator, Generator):
        images = generator(z_all, noise_mode="const")
    else:
        images = generator(z_all)
    images = images.reshape(len(idx) + 1, n, -1)  # [k + 1, N, P]
    jac = (images[1:] - images[:1]) / eps  # [k, N, P]
    gram = torch.einsum("inp,jnp->nij", jac, jac) / jac.shape[2]  # [N, k, k]
    off = ~torch.eye(len(idx), dtype=torch.bool, device=z.device)
    return gram[:, off].square().mean()


def intervention_readback(
    generator: Callable[[torch.Tensor], torch.Tensor],
    read: Callable[[torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    moved: torch.Tensor,
    shift: torch.Tensor,
    columns: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    """Single-dimension interventions on ``G``'s input, read back from the generated images.

    Sample ``i`` moves dim ``moved[i]`` of ``z[i]`` by ``shift[i]``. A frozen context reader
    (images to standardised contexts, fitted on real images) reads both images; column ``c`` of
    the reader reads the context aligned to dim ``columns[c]`` of ``z``. The read change must be
    ``shift[i]`` on the moved dim's own column and 0 on every other one (an intervention on one
    concept changes that concept in the image, by as much as it was moved, and nothing else).
    Per sample, the squared error of the own column plus the mean squared error of the other
    compared columns (so that drawing less of everything, which lowers the many "nothing else"
    errors, does not pay); entries where ``weights[i, c]`` is 0 are not compared. The mean over
    the samples. Gradients reach ``G`` through the images; the reader should be frozen.

    Parameters
    ----------
    generator : callable
        Maps z (M, d) to images (M, C, H, W); deterministic.
    read : callable
        Maps images (M, C, H, W) to standardised contexts (M, R).
    z : Tensor of shape (N, d)
        Concept vectors to intervene on.
    moved : long Tensor of shape (N,)
        The dim of ``z`` moved in each sample.
    shift : Tensor of shape (N,)
        The shift of that dim, in the units of ``z`` (standardised contexts for aligned dims).
    columns : long Tensor of shape (R,)
        The dim of ``z`` each reader column is aligned to.
    weights : Tensor of shape (N, R)
        Which read changes count (0: not compared, e.g. an unreadable context or one the data
        cannot tell apart from the moved one).
    """
    if z.ndim != 2:
        raise ShapeError(f"z must have shape (N, d); got {tuple(z.shape)}")
    n = z.shape[0]
    if moved.shape != (n,) or shift.shape != (n,) or weights.shape != (n, columns.numel()):
        raise ShapeError(
            f"moved {tuple(moved.shape)}, shift {tuple(shift.shape)} and weights "
            f"{tuple(weights.shape)} must be (N,), (N,), (N, R) for z {tuple(z.shape)} and "
            f"{columns.numel()} reader columns"
        )
    rows = torch.arange(n, device=z.device)
    z_moved = z.clone()
    z_moved[rows, moved] = z_moved[rows, moved] + shift.to(z.dtype)
    read_all = read(generator(torch.cat([z, z_moved])))
    change = read_all[n:] - read_all[:n]  # [N, R]
    own = columns.unsqueeze(0) == moved.unsqueeze(1)  # [N, R]
    target = torch.where(own, shift.unsqueeze(1), torch.zeros_like(change))
    err = (change - target).square() * weights.to(change.dtype)
    other_w = weights.to(change.dtype) * (~own)
    others = (err * (~own)).sum(1) / other_w.sum(1).clamp(min=1e-12)
    return ((err * own).sum(1) + others).mean()
