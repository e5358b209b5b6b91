"""The latent prior's contract (documented in :mod:`energyvae.models.priors`)."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

from ...mcmc.kernels import autograd_grad_fn
from ..base import Component
from ..posterior import DiagGaussian

LOG_2PI = math.log(2 * math.pi)


class Prior(Component, ABC):
    """The contract of a latent prior (see :mod:`energyvae.models.priors`): ``log_prob`` and
    ``sample`` must be written; the rest has defaults here."""
    normalized: bool = True
    trained_by_elbo: bool = True

    @property
    def kl_normalized(self) -> bool:
        """Whether the VAE's KL term is a KL to a normalised density (default: ``normalized``;
        NCP's reweighted prior keeps the KL to its normalised base)."""
        return self.normalized

    #: whether the VAE may estimate KL(q || p) by the control-variate form (vae.py, ``VAE.kl``):
    #: same expectation as the one-sample ln q - ln p, lower variance
    kl_control_variate: bool = True

    @property
    def vae_stop(self) -> int | None:
        """The step at which the VAE update stops (a two-stage prior), or None."""
        return None

    def expected_energy(self, q: DiagGaussian, z: torch.Tensor) -> torch.Tensor | None:
        """E_q[-ln p(z)] per example with its Gaussian parts in closed form, or None (the VAE
        then uses the one-sample estimate at z)."""
        return None

    def sample_traced(self, n: int):
        """(n samples, the MCMC sampler's ``ChainTrace``), or (samples, None) for a prior that
        samples exactly."""
        return self.sample(n), None

    @property
    def generates_without_sampler(self) -> bool:
        """True when ``sample`` comes from a training scheme's own generator (EVaLP's S), not
        from the MCMC sampler that ``sample_traced`` runs."""
        return False

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim

    @abstractmethod
    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """[..., m] -> [...]: ln p(z), or -E(z) when ``normalized`` is False."""

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        return -self.log_prob(z)

    def energy_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E(z), grad_z E(z)), detached: autograd here; an EBM prior uses its energy's own
        (a closed form for the GRBM)."""
        return autograd_grad_fn(self.energy)(z)

    @abstractmethod
    def sample(self, n: int) -> torch.Tensor:
        """n samples [n, m]."""

    def kl(self, q: DiagGaussian) -> torch.Tensor | None:
        return None

    def _device(self) -> torch.device:
        p = next(self.parameters(), None)
        if p is None:
            p = next(self.buffers(), None)
        return p.device if p is not None else torch.device("cpu")
