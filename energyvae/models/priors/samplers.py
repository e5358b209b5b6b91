"""Samplers of EBM priors exp(-E(z)) / Z (``model.prior.sampler``); see ``LatentSampler``.

- ``langevin``: unadjusted Langevin dynamics in the convention of paper 002, Eq. 13,

      z_{k+1} = z_k - h grad E(z_k) + sqrt(2 h) eps_k,   eps_k ~ N(0, I),   h = ``step_size``.

  Pang et al. (2020) write z_{k+1} = z_k - s^2/2 grad E(z_k) + s eps_k: the same chain with
  h = s^2 / 2 (their s = 0.4 is h = 0.08). ``grad_clip`` caps each chain's gradient norm.
  The chain's law is biased by O(h) (no accept/reject), and its default (100 steps of
  h = 0.01, total time 1) is far too short to reach a prior that differs from N(0, I): on a
  small GRBM its sample mean was 2.7 sd off. Kept as the papers' sampler; not a default.
- ``mala`` (the default of every EBM prior): Metropolis-adjusted Langevin with a diagonal
  preconditioner M = diag(s^2),

      z' = z - h M grad E(z) + sqrt(2 h) M^(1/2) eps,   accepted with prob.
      min(1, exp(E(z) - E(z')) q(z | z') / q(z' | z)),  q(z' | z) = N(z - h M grad E(z), 2 h M).

  Warm-up (the first ``warmup`` steps) adapts h towards the acceptance ``target_accept``
  (0.574, optimal for MALA, Roberts & Rosenthal 1998) by log h += 2 (mean acceptance - target)
  per step, h shared by all chains, and sets s to the chains' per-coordinate std at 1/4, 1/2
  and 3/4 of the warm-up (many parallel chains make this estimate cheap and good); at the end
  of warm-up h is fixed to the mean of log h over its last quarter. After warm-up the kernel is
  fixed, so the chain is exact MALA and its law converges to exp(-E) / Z without O(h) bias.
  At least ``min_chains`` chains run (given starts ``init`` are topped up with N(0, I) ones;
  extra chains are dropped from the returned samples but kept in the trace) so that the adaptation sees enough chains. Defaults: 2000 steps, 200 of them
  warm-up. On the 50-epoch energies of benchmarks/results/ebm_prior_fashion-mnist.md, 500 steps
  mixed on GRBM-SSM, GRBM-Adv. and EVaLP (implicit) (split R-hat 1.037-1.043) but not on the
  tilted short-run energy, whose mean-coordinate statistic mixes slowly (R-hat 1.097; drift
  0.7 sd: stationary, slow); 2000 steps passed on all four (R-hat 1.008-1.023). No setting
  mixed on the EVaLP (flow) energy, which has mass far from the data (R-hat 1.85 after 2000
  steps; see schemes/evalp.py). It is also the GRBM's default: Gibbs-Langevin (exact, with
  Metropolis, a quarter of MALA's time) mixed on the GRBM-SSM energy but not on the GRBM-Adv.
  one (acceptance 0.07, R-hat ~10). ``energyvae sample``/``evaluate`` report the diagnostic.
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

``langevin`` and ``mala`` are loops over the kernels of :mod:`energyvae.mcmc.kernels`
(``langevin_step``, ``mala_step``, ``StepSize``: the adaptation stays on the device, so a step
reads nothing back to the host) with the energy's own ``energy_and_grad`` (closed form for the
GRBM: two matmuls instead of an autograd pass); ``gibbs`` and ``gibbs_langevin`` use the GRBM's
exact conditionals. Speed against the former loops: benchmarks/results/mcmc_speed.md.

Chains start from N(0, init_std^2 I) unless ``init`` is given. Gradients are taken with respect
to z only (no .grad is left on the energy's parameters); tensors follow the energy's
device and dtype; ``trace=True`` also returns a ``ChainTrace`` (priors/ebm.py: per-chain energy
and coordinate mean after each step, acceptance, step size) whose ``diagnostics()`` gives split
R-hat and ESS (mcmc/diagnostics.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...errors import ConfigError
from ...registry import check
from ...mcmc.kernels import StepSize, gibbs_langevin_step, gibbs_step, langevin_step, mala_step
from ...mcmc.trace import TraceRecorder
from .ebm import LATENT_SAMPLERS, LatentSampler, grad_fn
from .energies import GRBMEnergy


def energy_and_grad(energy: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(E(z), grad_z E(z)), both detached; works under ``torch.no_grad()``: the energy's own
    closed form where it has one (``LatentEnergy.energy_and_grad``), else autograd."""
    return grad_fn(energy)(z)


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
        z, rec, h, fn = self.start(energy, n, init), TraceRecorder(trace), self.step_size, grad_fn(energy)
        for k in range(self.steps):
            e, g = fn(z)
            if k:
                rec(z, e)
            if self.grad_clip is not None:
                g = g * (self.grad_clip / g.norm(dim=-1, keepdim=True).clamp_min(self.grad_clip))
            z = langevin_step(z, g, h, (2 * h) ** 0.5)
        rec(z, energy=energy)
        return z, rec.result(step_size=h)


@LATENT_SAMPLERS.register("langevin", LangevinParams)
def _langevin(p: LangevinParams, *, latent_dim: int, **_):
    return Langevin(latent_dim, p.steps, p.step_size, p.init_std, p.grad_clip)


@dataclass
class MALAParams:
    steps: int = 2000                # all steps, warm-up included
    warmup: int = 200                # adaptation steps (step size, preconditioner)
    step_size: float = 0.05          # initial h (Eq. 13's); adapted during warm-up
    target_accept: float = 0.574     # Roberts & Rosenthal (1998): optimal MALA acceptance
    precondition: bool = True        # diagonal preconditioner from the chains' variance
    min_chains: int = 64             # chains run at least (the extra ones are dropped)
    init_std: float = 1.0
    compile: bool = False            # run the step under torch.compile (random numbers drawn outside)

    def __post_init__(self):
        check(self.steps >= 1, f"steps: must be >= 1, got {self.steps}")
        check(0 <= self.warmup < self.steps, f"warmup: must be in [0, steps), got {self.warmup}")
        check(self.step_size > 0, f"step_size: must be > 0, got {self.step_size}")
        check(0 < self.target_accept < 1, f"target_accept: must be in (0, 1), got {self.target_accept}")
        check(self.min_chains >= 1, f"min_chains: must be >= 1, got {self.min_chains}")
        check(self.init_std > 0, f"init_std: must be > 0, got {self.init_std}")


class MALA(_Sampler):
    """Preconditioned MALA with warm-up adaptation (the module docstring's ``mala``)."""

    def __init__(self, latent_dim: int, p: MALAParams):
        super().__init__(latent_dim, p.steps, p.init_std)
        self.p = p

    def sample(self, energy, n, init=None, trace=False):
        p = self.p
        z = self.start(energy, max(n, p.min_chains), None)
        if init is not None:                                 # given starts, topped up to min_chains
            z = torch.cat([self.start(energy, n, init), z[:max(p.min_chains - len(init), 0)]])
        rec, c, fn = TraceRecorder(trace), z.shape[0], grad_fn(energy)
        step = StepSize(p.step_size, p.target_accept, device=z.device)   # log h += 2 (a - target)
        scale = torch.ones_like(z[0])                        # M^(1/2): per-coordinate std
        state = (z, *fn(z))
        acc, n_acc = torch.zeros((), device=z.device), 0     # device-side: no host read per step
        kernel = _compiled_mala(fn) if p.compile else None
        for k in range(p.steps):
            if kernel is None:
                state, log_alpha = mala_step(state, fn, step.h.to(z.dtype), scale)
            else:                                            # same draws, in the same order
                xi = torch.randn_like(state[0])
                state, log_alpha = kernel(state, step.h.to(z.dtype), scale, xi, torch.rand_like(state[1]))
            a = log_alpha.exp().mean()
            if k < p.warmup:                                 # adapt the step, then the preconditioner
                step.update(a)
                if p.precondition and c >= 8 and k + 1 in (p.warmup // 4, p.warmup // 2, 3 * p.warmup // 4):
                    scale = state[0].std(0).clamp(1e-3, 1e3)
                if k >= 3 * p.warmup // 4:                   # average the last quarter's log h
                    step.record()
                if k == p.warmup - 1:
                    step.freeze_mean()
            else:
                acc, n_acc = acc + a, n_acc + 1
            rec(state[0], state[1])
        stats = dict(warmup=p.warmup, acceptance=float(acc / n_acc) if n_acc else None,
                     step_size=float(step.h))
        return state[0][:n], rec.result(**stats)


def _compiled_mala(fn):
    """``mala_step`` with ``fn`` under ``torch.compile`` (static shapes; the random numbers come
    in as arguments). On one CPU thread it measured ~1.4x the eager step on a 64 x 64 GRBM, after
    ~10 s of compilation (benchmarks/results/mcmc_speed.md): worth it for long chains only."""
    def step(state, h, scale, noise, uniform):
        return mala_step(state, fn, h, scale, noise=noise, uniform=uniform)
    return torch.compile(step, dynamic=False)


@LATENT_SAMPLERS.register("mala", MALAParams)
def _mala(p: MALAParams, *, latent_dim: int, **_):
    return MALA(latent_dim, p)


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
        z, rec = self.start(energy, n, init), TraceRecorder(trace)
        for _ in range(self.steps):
            z = gibbs_step(z, energy)
            rec(z, energy=energy)
        return z, rec.result()


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
        z, rec = self.start(energy, n, init), TraceRecorder(trace)
        acc = torch.zeros((), device=z.device)           # on the device: no host read per sweep
        h = energy.sample_hidden(z)
        decay = (1 - self.step_size) ** self.langevin_steps                       # a^K
        std = energy.sigma * (2 * (1 - decay**2) / (2 - self.step_size)) ** 0.5    # sqrt(v)
        for _ in range(self.steps):
            z, h, log_alpha = gibbs_langevin_step(z, h, energy, decay, std, metropolis=self.metropolis)
            if log_alpha is not None:
                acc = acc + log_alpha.clamp(max=0).exp().mean()
            rec(z, energy=energy)
        rate = float(acc) / self.steps if self.metropolis and trace else None
        return z, rec.result(acceptance=rate, step_size=self.step_size)


@LATENT_SAMPLERS.register("gibbs_langevin", GibbsLangevinParams)
def _gibbs_langevin(p: GibbsLangevinParams, *, latent_dim: int, energy: nn.Module, **_):
    _require_grbm(energy, "gibbs_langevin")
    return GibbsLangevin(latent_dim, p.steps, p.langevin_steps, p.step_size, p.metropolis, p.init_std)
