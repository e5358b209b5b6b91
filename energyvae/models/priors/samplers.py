"""Samplers of EBM priors exp(-E(z)) / Z (``model.prior.sampler``); see ``LatentSampler``.

- ``langevin``: unadjusted Langevin dynamics in the convention of paper 002, Eq. 13,

      z_{k+1} = z_k - h grad E(z_k) + sqrt(2 h) eps_k,   eps_k ~ N(0, I),   h = ``step_size``.

  Pang et al. (2020) write z_{k+1} = z_k - s^2/2 grad E(z_k) + s eps_k: the same chain with
  h = s^2 / 2 (their s = 0.4 is h = 0.08). ``grad_clip`` caps each chain's gradient norm.
  The chain's law is biased by O(h) (no accept/reject).
- ``gibbs``: block Gibbs for the GRBM with its exact conditionals (see ``GRBMEnergy``):
  h ~ p(h | z), then z ~ N(mu + W h, diag sigma^2). Leaves the GRBM exactly invariant.
- ``gibbs_langevin``: Gibbs-Langevin for the GRBM (Liao et al. 2022, "Gaussian-Bernoulli RBMs
  without tears") on the joint (z, h). One step: K = ``langevin_steps`` Langevin steps on z under
  the joint energy E(z, h) at fixed h, preconditioned by the conditional variance (step
  h_i = ``step_size`` * sigma_i^2 for unit i; Liao et al. scale by the mean variance and anneal
  the step with a cosine schedule, we keep it constant), then h' ~ p(h | z'). Given h, E(z, h)
  is Gaussian in z with mean c = mu + W h, so the K steps compose in closed form, which we draw
  directly (same law as running them): with r = ``step_size`` and a = 1 - r,

      z' = c + a^K (z - c) + sqrt(v) eps,   v = 2 sigma^2 (1 - a^(2K)) / (2 - r)   (0 < r < 2).

  With ``metropolis`` (default, as in Liao et al.) the move (z, h) -> (z', h') is accepted with
  probability min(1, exp(E(z, h) - E(z', h')) q(z | z', h') p(h | z) / (q(z' | z, h) p(h' | z'))),
  q the Gaussian above, so the joint GRBM law is exactly invariant; without it the z-marginal
  is biased (e.g. variance ~ sigma^2 / (1 - r/2) for W = 0).

Chains start from N(0, init_std^2 I) unless ``init`` is given. Gradients are taken with respect
to z only (no .grad is left on the energy's parameters); tensors follow the energy's
device and dtype; ``trace`` is the mean energy E(z) of the chains after each step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ...registry import check
from .ebm import LATENT_SAMPLERS, LatentSampler
from .energies import GRBMEnergy


def energy_and_grad(energy: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(E(z), grad_z E(z)), both detached; works under ``torch.no_grad()``."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        e = energy(z)
        (g,) = torch.autograd.grad(e.sum(), z)
    return e.detach(), g


class _Sampler(LatentSampler):
    """Shared start: ``init`` if given, else N(0, init_std^2 I) on the energy's device and dtype."""

    def __init__(self, latent_dim: int, steps: int, init_std: float):
        super().__init__()
        self.latent_dim, self.steps, self.init_std = latent_dim, steps, init_std

    def start(self, energy: nn.Module, n: int, init: torch.Tensor | None) -> torch.Tensor:
        p = next(energy.parameters())
        if init is not None:
            return init.detach().to(device=p.device, dtype=p.dtype)
        return self.init_std * torch.randn(n, self.latent_dim, device=p.device, dtype=p.dtype)


@dataclass
class LangevinParams:
    steps: int = 100
    step_size: float = 1e-2              # h of Eq. 13
    init_std: float = 1.0
    grad_clip: float | None = None       # max norm of grad E per chain; None: no clipping

    def __post_init__(self):
        check(self.steps >= 1, f"steps: must be >= 1, got {self.steps}")
        check(self.step_size > 0, f"step_size: must be > 0, got {self.step_size}")
        check(self.init_std > 0, f"init_std: must be > 0, got {self.init_std}")
        check(self.grad_clip is None or self.grad_clip > 0, f"grad_clip: must be > 0, got {self.grad_clip}")


class Langevin(_Sampler):
    def __init__(self, latent_dim: int, steps: int, step_size: float, init_std: float = 1.0,
                 grad_clip: float | None = None):
        super().__init__(latent_dim, steps, init_std)
        self.step_size, self.grad_clip = step_size, grad_clip

    def sample(self, energy, n, init=None, trace=False):
        z, tr, h = self.start(energy, n, init), [] if trace else None, self.step_size
        for k in range(self.steps):
            e, g = energy_and_grad(energy, z)
            if trace and k:
                tr.append(e.mean().item())
            if self.grad_clip is not None:
                g = g * (self.grad_clip / g.norm(dim=-1, keepdim=True).clamp_min(self.grad_clip))
            z = z - h * g + (2 * h) ** 0.5 * torch.randn_like(z)
        if trace:
            with torch.no_grad():
                tr.append(energy(z).mean().item())
        return z, tr


@LATENT_SAMPLERS.register("langevin", LangevinParams)
def _langevin(p: LangevinParams, *, latent_dim: int, **_):
    return Langevin(latent_dim, p.steps, p.step_size, p.init_std, p.grad_clip)


def _require_grbm(energy: nn.Module, sampler: str) -> None:
    if not isinstance(energy, GRBMEnergy):
        raise ConfigError(f"model.prior.sampler.name: {sampler} needs the grbm energy "
                          f"(model.prior.energy.name: grbm), got {type(energy).__name__}")


@dataclass
class GibbsParams:
    steps: int = 100
    init_std: float = 1.0

    def __post_init__(self):
        check(self.steps >= 1, f"steps: must be >= 1, got {self.steps}")
        check(self.init_std > 0, f"init_std: must be > 0, got {self.init_std}")


class Gibbs(_Sampler):
    @torch.no_grad()
    def sample(self, energy, n, init=None, trace=False):
        z, tr = self.start(energy, n, init), [] if trace else None
        for _ in range(self.steps):
            z = energy.sample_visible(energy.sample_hidden(z))
            if trace:
                tr.append(energy(z).mean().item())
        return z, tr


@LATENT_SAMPLERS.register("gibbs", GibbsParams)
def _gibbs(p: GibbsParams, *, latent_dim: int, energy: nn.Module, **_):
    _require_grbm(energy, "gibbs")
    return Gibbs(latent_dim, p.steps, p.init_std)


@dataclass
class GibbsLangevinParams:
    steps: int = 100                 # Gibbs sweeps (z then h)
    langevin_steps: int = 10         # K Langevin steps on z per sweep
    step_size: float = 0.1           # r: Langevin step of unit i is r * sigma_i^2; 0 < r < 2
    metropolis: bool = True          # accept/reject each sweep (exact); False: biased by O(r)
    init_std: float = 1.0

    def __post_init__(self):
        check(self.steps >= 1, f"steps: must be >= 1, got {self.steps}")
        check(self.langevin_steps >= 1, f"langevin_steps: must be >= 1, got {self.langevin_steps}")
        check(0 < self.step_size < 2, f"step_size: must be in (0, 2), got {self.step_size}")
        check(self.init_std > 0, f"init_std: must be > 0, got {self.init_std}")


class GibbsLangevin(_Sampler):
    def __init__(self, latent_dim: int, steps: int, langevin_steps: int, step_size: float,
                 metropolis: bool, init_std: float):
        super().__init__(latent_dim, steps, init_std)
        self.langevin_steps, self.step_size, self.metropolis = langevin_steps, step_size, metropolis

    @torch.no_grad()
    def sample(self, energy, n, init=None, trace=False):
        z, tr = self.start(energy, n, init), [] if trace else None
        h = energy.sample_hidden(z)
        decay = (1 - self.step_size) ** self.langevin_steps                       # a^K
        std = energy.sigma * (2 * (1 - decay**2) / (2 - self.step_size)) ** 0.5    # sqrt(v)

        def log_q(z_to, z_from, h_from):        # ln q(z_to | z_from, h_from) up to a constant
            c = energy.visible_mean(h_from)
            return -0.5 * (((z_to - c - decay * (z_from - c)) / std) ** 2).sum(-1)

        def log_p_h(h_, z_):                    # ln p(h | z)
            return -F.binary_cross_entropy_with_logits(energy.hidden_logits(z_), h_,
                                                       reduction="none").sum(-1)

        for _ in range(self.steps):
            c = energy.visible_mean(h)
            z_new = c + decay * (z - c) + std * torch.randn_like(z)
            h_new = energy.sample_hidden(z_new)
            if self.metropolis:
                log_alpha = (energy.joint_energy(z, h) - energy.joint_energy(z_new, h_new)
                             + log_q(z, z_new, h_new) - log_q(z_new, z, h)
                             + log_p_h(h, z) - log_p_h(h_new, z_new))
                accept = (torch.rand_like(log_alpha).log() < log_alpha)[:, None]
                z_new, h_new = torch.where(accept, z_new, z), torch.where(accept, h_new, h)
            z, h = z_new, h_new
            if trace:
                tr.append(energy(z).mean().item())
        return z, tr


@LATENT_SAMPLERS.register("gibbs_langevin", GibbsLangevinParams)
def _gibbs_langevin(p: GibbsLangevinParams, *, latent_dim: int, energy: nn.Module, **_):
    _require_grbm(energy, "gibbs_langevin")
    return GibbsLangevin(latent_dim, p.steps, p.langevin_steps, p.step_size, p.metropolis, p.init_std)
