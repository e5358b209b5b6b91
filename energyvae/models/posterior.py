"""Approximate posteriors q(z|x): diagonal Gaussians, learned, fixed-scale or deterministic."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from ..registry import check
from .base import POSTERIORS

LOG_2PI = math.log(2 * math.pi)


class DiagGaussian:
    """N(mean, diag std^2) over the last dimension; ``std is None`` means a point mass."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor | None):
        self.mean, self.std = mean, std

    @property
    def deterministic(self) -> bool:
        return self.std is None

    def rsample(self, n: int | None = None) -> torch.Tensor:
        """Reparameterised sample(s): [B, m], or [n, B, m] when ``n`` is given."""
        shape = self.mean.shape if n is None else (n, *self.mean.shape)
        if self.deterministic:
            return self.mean.expand(shape)
        return self.mean + self.std * torch.randn(shape, dtype=self.mean.dtype, device=self.mean.device)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """ln q(z|x), summed over the latent dimension (broadcasts over leading sample dims)."""
        if self.deterministic:
            raise ValueError("a deterministic posterior has no density")
        u = (z - self.mean) / self.std
        return (-0.5 * u.pow(2) - self.std.log() - 0.5 * LOG_2PI).sum(-1)

    def entropy(self) -> torch.Tensor:
        if self.deterministic:
            raise ValueError("a deterministic posterior has no entropy")
        return (self.std.log() + 0.5 * (1 + LOG_2PI)).sum(-1)

    def kl_standard_normal(self) -> torch.Tensor:
        """KL(q || N(0, I)) in closed form: 1/2 sum(mu^2 + s^2 - 1 - ln s^2) (Kingma & Welling, App. B).

        For a point mass this returns 1/2 ||mu||^2, the latent penalty of a regularised
        autoencoder (the KL is infinite); see :class:`DeltaPosterior`.
        """
        if self.deterministic:
            return 0.5 * self.mean.pow(2).sum(-1)
        var = self.std.pow(2)
        return 0.5 * (self.mean.pow(2) + var - 1 - var.log()).sum(-1)


class Posterior(nn.Module, ABC):
    """The contract of an approximate posterior (a ``POSTERIORS`` entry): the encoder outputs
    ``encoder_features(m)`` features and ``forward(h)`` turns them into a :class:`DiagGaussian`
    over m latents; ``stochastic`` False for a point mass."""
    stochastic: bool = True

    @abstractmethod
    def encoder_features(self, latent_dim: int) -> int:
        """How many features the encoder must output for ``latent_dim`` latents."""

    @abstractmethod
    def forward(self, h: torch.Tensor) -> DiagGaussian:
        """q(z|x) from the encoder's features ``h`` [B, encoder_features(m)]."""


class GaussianPosterior(Posterior):
    """q(z|x) = N(mu, diag exp(logvar)); the encoder outputs [mu, logvar] (2m features)."""
    stochastic = True

    def __init__(self, min_logvar: float = -12.0, max_logvar: float = 8.0):
        super().__init__()
        self.min_logvar, self.max_logvar = min_logvar, max_logvar

    def encoder_features(self, latent_dim: int) -> int:
        return 2 * latent_dim

    def forward(self, h: torch.Tensor) -> DiagGaussian:
        mean, logvar = h.chunk(2, dim=-1)
        logvar = logvar.clamp(self.min_logvar, self.max_logvar)
        return DiagGaussian(mean, (0.5 * logvar).exp())


class FixedScalePosterior(Posterior):
    """q(z|x) = N(mu, std^2 I) with a fixed std (paper 002's "ECVAE" uses std = 1)."""
    stochastic = True

    def __init__(self, std: float):
        super().__init__()
        self.fixed_std = std

    def encoder_features(self, latent_dim: int) -> int:
        return latent_dim

    def forward(self, h: torch.Tensor) -> DiagGaussian:
        return DiagGaussian(h, torch.full_like(h, self.fixed_std))


class DeltaPosterior(Posterior):
    """A point mass at the encoder output: a (regularised) autoencoder.

    Used for two-stage training (autoencoder first, then a latent prior; EVaLP's authors do
    this) and wherever an exactly deterministic step is wanted. Its "KL" is the RAE penalty
    1/2 ||mu||^2 (Ghosh et al. 2020), so ``kl_weight`` still controls latent regularisation.
    """
    stochastic = False

    def encoder_features(self, latent_dim: int) -> int:
        return latent_dim

    def forward(self, h: torch.Tensor) -> DiagGaussian:
        return DiagGaussian(h, None)


@dataclass
class GaussianParams:
    min_logvar: float = -12.0
    max_logvar: float = 8.0

    def __post_init__(self):
        check(self.min_logvar < self.max_logvar, "min_logvar must be < max_logvar")


@dataclass
class FixedParams:
    std: float = 1.0

    def __post_init__(self):
        check(self.std > 0, f"std must be > 0, got {self.std}")


@POSTERIORS.register("gaussian", GaussianParams)
def _gaussian(p: GaussianParams, **_):
    return GaussianPosterior(p.min_logvar, p.max_logvar)


@POSTERIORS.register("fixed", FixedParams)
def _fixed(p: FixedParams, **_):
    return FixedScalePosterior(p.std)


@POSTERIORS.register("delta")
def _delta(p, **_):
    return DeltaPosterior()
