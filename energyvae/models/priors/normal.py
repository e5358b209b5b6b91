"""The standard normal prior p(z) = N(0, I), prior ``normal`` (the default)."""
from __future__ import annotations

import torch

from ..base import PRIORS
from .base import LOG_2PI, Prior


class StandardNormal(Prior):
    """p(z) = N(0, I)."""

    def __init__(self, latent_dim: int):
        super().__init__(latent_dim)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def log_prob(self, z):
        return -0.5 * (z.pow(2) + LOG_2PI).sum(-1)

    def sample(self, n):
        return torch.randn(n, self.latent_dim, device=self._anchor.device)

    def kl(self, q):
        return q.kl_standard_normal()


@PRIORS.register("normal")
def _normal(p, *, latent_dim: int, **_):
    return StandardNormal(latent_dim)
