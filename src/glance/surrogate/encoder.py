"""Representation surrogate: concept encoder ``E`` and surrogate head ``S`` (DESIGN §2.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glance.exceptions import ShapeError
from glance.surrogate.layers import check_shape

__all__ = ["ConceptEncoder", "SurrogateHead"]


class ConceptEncoder(nn.Module):
    """Classifier feature maps (N, C, h, w) -> posterior ``(mu, logvar)``, each (N, z_dim).

    Architecture: per-channel standardisation of the features (statistics set with
    :meth:`set_feature_stats`, identity until then), a 1x1 convolution to ``hidden`` channels
    (cheap even for C = 2048), a 3x3 convolution, adaptive average pooling to at most
    ``pool_size x pool_size`` (keeps coarse layout; 1x1 maps stay 1x1), and an MLP.

    Parameters
    ----------
    feature_shape : tuple of int
        ``(C, h, w)`` of the classifier features, e.g. ``adapter.feature_shape``.
    z_dim : int
        Concept dimensions ``d`` (aligned dims first, then free dims).
    hidden : int
        Width of the convolutions and the MLP.
    pool_size : int
        Largest spatial size kept by the pooling.
    logvar_range : float
        ``logvar`` is squashed smoothly into ``(-logvar_range, logvar_range)`` so that
        ``exp(logvar)`` can neither overflow nor vanish.
    feature_decoder : bool
        Also build an MLP decoding ``z`` back to the standardised features pooled like the
        encoder's input (:meth:`decode_features`, :meth:`feature_target`), for
        ``LossConfig.feature_reconstruction``.

    Examples
    --------
    >>> enc = ConceptEncoder((64, 7, 7), z_dim=10)
    >>> mu, logvar = enc(torch.randn(4, 64, 7, 7))
    >>> mu.shape, logvar.shape
    (torch.Size([4, 10]), torch.Size([4, 10]))
    """

    def __init__(
        self,
        feature_shape: tuple[int, int, int],
        z_dim: int,
        hidden: int = 128,
        *,
        pool_size: int = 4,
        logvar_range: float = 10.0,
        feature_decoder: bool = False,
    ) -> None:
        super().__init__()
        if len(feature_shape) != 3 or min(feature_shape) < 1:
            raise ShapeError(
                f"feature_shape must be (C, h, w) with positive sizes; got {tuple(feature_shape)}"
            )
        if z_dim < 1:
            raise ValueError(f"z_dim of ConceptEncoder must be >= 1; got {z_dim}")
        c, h, w = (int(s) for s in feature_shape)
        self.feature_shape = (c, h, w)
        self.z_dim, self.logvar_range = z_dim, logvar_range
        self.pooled = (min(h, pool_size), min(w, pool_size))
        self.register_buffer("feature_mean", torch.zeros(c))
        self.register_buffer("feature_std", torch.ones(c))
        self.reduce = nn.Conv2d(c, hidden, 1)
        self.conv = nn.Conv2d(hidden, hidden, 3, padding=1)
        flat = hidden * self.pooled[0] * self.pooled[1]
        self.mlp = nn.Sequential(
            nn.Linear(flat, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 2 * z_dim),
        )
        self.feature_decoder = (
            nn.Sequential(
                nn.Linear(z_dim, hidden),
                nn.LeakyReLU(0.2),
                nn.Linear(hidden, hidden),
                nn.LeakyReLU(0.2),
                nn.Linear(hidden, c * self.pooled[0] * self.pooled[1]),
            )
            if feature_decoder
            else None
        )

    @torch.no_grad()
    def set_feature_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set the per-channel mean and std (each (C,)) used to standardise the features.

        Classifier features can sit at any scale (ReLU outputs of a ResNet reach tens); the
        statistics of the training features make the encoder's input well conditioned. Channels
        with (near) zero std are left unscaled.
        """
        c = self.feature_shape[0]
        check_shape(torch.as_tensor(mean), (c,), "mean")
        check_shape(torch.as_tensor(std), (c,), "std")
        std = torch.as_tensor(std, dtype=torch.float32)
        self.feature_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.feature_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def _standardise(self, features: torch.Tensor) -> torch.Tensor:
        check_shape(features, (None, *self.feature_shape), "features")
        return (features - self.feature_mean.reshape(1, -1, 1, 1)) / self.feature_std.reshape(
            1, -1, 1, 1
        )

    def feature_target(self, features: torch.Tensor) -> torch.Tensor:
        """What :meth:`decode_features` must return: the standardised features average-pooled
        to the encoder's pooled size, flattened (N, C * ph * pw); no gradient."""
        with torch.no_grad():
            return F.adaptive_avg_pool2d(self._standardise(features), self.pooled).flatten(1)

    def decode_features(self, z: torch.Tensor) -> torch.Tensor:
        """Concepts (N, z_dim) -> the pooled standardised features they came from."""
        if self.feature_decoder is None:
            raise ValueError("this ConceptEncoder was built without feature_decoder=True")
        check_shape(z, (None, self.z_dim), "z")
        return self.feature_decoder(z)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.leaky_relu(self.reduce(self._standardise(features)), 0.2)
        x = F.leaky_relu(self.conv(x), 0.2)
        x = F.adaptive_avg_pool2d(x, self.pooled).flatten(1)  # [N, hidden * ph * pw]
        mu, raw = self.mlp(x).chunk(2, dim=1)
        logvar = self.logvar_range * torch.tanh(raw / self.logvar_range)
        return mu, logvar

    @staticmethod
    def sample(
        mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Reparameterised sample ``mu + exp(logvar / 2) * eps`` (differentiable)."""
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + (0.5 * logvar).exp() * eps


class SurrogateHead(nn.Module):
    """Surrogate head ``S``: concepts ``z`` (N, z_dim) -> class logits (N, n_classes).

    Parameters
    ----------
    z_dim : int
        Concept dimensions.
    n_classes : int
        Number of classes of the explained classifier.
    hidden : int
        Width of the hidden layers.
    n_layers : int
        Number of hidden layers (0 makes ``S`` linear in ``z``).
    """

    def __init__(self, z_dim: int, n_classes: int, hidden: int = 128, *, n_layers: int = 2):
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"n_classes of SurrogateHead must be >= 2; got {n_classes}")
        self.z_dim, self.n_classes = z_dim, n_classes
        layers: list[nn.Module] = []
        width = z_dim
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        check_shape(z, (None, self.z_dim), "z")
        return self.net(z)
