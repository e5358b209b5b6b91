"""Latent priors p(z) = exp(-E(z)) / Z.

Interface of every prior (subclass :class:`Prior`, register with ``PRIORS.register``):

- ``normalized``: True when ``log_prob`` is a normalised log-density, False when it is
  only -E(z) (ln Z unknown; likelihoods then need AIS, see the evaluation module);
- ``log_prob(z)``: [..., m] -> [...];  ``energy(z) = -log_prob(z)``;
- ``sample(n)``: n samples [n, m] (MCMC priors run their sampler here);
- ``kl(q)``: KL(q(z|x) || p) per example in closed form, or None (the model then uses the
  one-sample Monte Carlo estimate ln q(z|x) - ln p(z));
- ``trained_by_elbo``: whether the VAE update also steps this prior's parameters (True for
  VampPrior or a flow; False for EBM priors that bring their own update);
- ``updates()`` / ``update_loss(name, x, state)``: the prior's own optimisation updates, which
  see the posterior samples of the step in ``state["z_posterior"]``.
"""
from __future__ import annotations

import math

import torch

from ..base import PRIORS, Component
from ..posterior import DiagGaussian

LOG_2PI = math.log(2 * math.pi)


class Prior(Component):
    normalized: bool = True
    trained_by_elbo: bool = True

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        return -self.log_prob(z)

    def sample(self, n: int) -> torch.Tensor:
        raise NotImplementedError

    def kl(self, q: DiagGaussian) -> torch.Tensor | None:
        return None

    def _device(self) -> torch.device:
        p = next(self.parameters(), None)
        if p is None:
            p = next(self.buffers(), None)
        return p.device if p is not None else torch.device("cpu")


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


from . import ebm, energies, flow, samplers, schemes, vamp  # noqa: F401,E402  (register the built-ins)
