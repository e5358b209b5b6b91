"""Energy-based latent priors p(z) = exp(-E(z)) / Z (paper 002, docs/methods.md §3).

An EBM prior is composed of three parts, each chosen by name in the config::

    prior: {name: ebm,
            energy:  {name: grbm, hidden: 64},               # ENERGIES      (energies.py)
            scheme:  {name: ssm, projections: 1, lr: 2e-4},  # PRIOR_SCHEMES (schemes/*.py)
            sampler: {name: langevin, steps: 100, step_size: 0.01}}   # LATENT_SAMPLERS (samplers.py)

- an **energy** E(z): an ``nn.Module`` mapping [..., m] -> [...];
- a **training scheme**: how E is fitted (sliced score matching, adversarial CD, the
  importance-weighted partition bound, short-run MCMC, EVaLP, ...). A scheme may add its own
  optimisation updates (which see the step's posterior samples in ``state["z_posterior"]``),
  may replace the VAE's KL term (``kl``), and may bring extra modules (a proposal flow, a
  sampler network) that it registers on itself;
- a **sampler** that draws z ~ p(z) (default: adapted MALA; Gibbs-Langevin for the GRBM; the
  papers' unadjusted Langevin; see samplers.py for the measurements behind the default); a scheme
  that has a better generator (EVaLP's sampler network) may take over ``sample``.

The VAE update uses the unnormalised "ALB" term E_q[ln q(z|x) + E(z)] (Alg. 1; no ln Z) unless
the scheme replaces it, estimated as -H(q) + ``expected_energy`` (the energy's Gaussian part in
closed form, energies.py) where the energy offers that, else at the one posterior sample
(``kl_term: one_sample`` forces the latter, as Alg. 1 prints it). Likelihoods subtract an AIS
estimate of ln Z (evaluation/likelihood.py).
Adding a scheme, energy or sampler is one new file that registers it.

Why EBM priors did not beat N(0, I), and what changed (binarised Fashion-MNIST, paper 002's
nets; benchmarks/results/ebm_prior_*.md, all paired on the same test images):

- **Samplers.** The papers' 100 unadjusted Langevin steps of h = 0.01 (total time 1) hardly move
  the chains: split R-hat 3.0-4.8 on every trained energy, drift up to 157 sd, so their samples
  were not samples of the prior. The default is now adapted MALA (samplers.py), with a
  convergence diagnostic in ``energyvae sample`` / ``evaluate``.
- **The KL term.** The one-sample ln q(z|x) + E(z) cost every EBM prior ~0.6 nats against the
  N(0, I) VAE's closed-form KL (ebm_prior_kl_term.md, 3 seeds); the energy's Gaussian part is
  now in closed form (energies.py, ``expected_energy``).
- **There is room; the post-hoc GRBM does not find it.** A room meter shown to work
  (evaluation/room.py: a MAF fitted by maximum likelihood to training posteriors, early-stopped
  on validation posteriors; it reads 0.000 on N(0, I) and 3.68 of the 4.64 nats of a whitened
  mixture target) finds +0.865 +- 0.035 nats of held-out test-ELBO room on the five 50-epoch
  N(0, I) Fashion-MNIST VAEs, and the MAF as their prior lowers the paired IW NLL (K = 1000) by
  0.80 +- 0.04 nats (ebm_prior_room.md, 5 seeds). GRBMs fitted post hoc by SSM at the paper's
  and 10x its learning rate change the NLL by less than 0.03 nats on the same VAE, so the
  scheme (SSM from a near-zero W: a saddle; SSM is no likelihood fit on multimodal targets),
  not the room, is what fails. The earlier reading ("the aggregate posterior already is
  N(0, I)") rested on a full-covariance Gaussian, which cannot see non-Gaussian structure.
- **Joint training, 50 epochs.** Paired to N(0, I) with ln Z from 10000-temperature AIS, every
  EBM prior lands within N(0, I)'s own seed-to-seed spread (two more N(0, I) runs: 0.30 and 0.41
  nats below the first): GRBM-SSM -0.30, GRBM-Adv. -0.17 and -0.06 (two seeds, each against
  the N(0, I) run of its seed). With 1000 temperatures AIS put the sharp GRBM-Adv. ln Z
  0.65-1.1 nats too low (ESS 3-5 of 256) and Adv. looked 0.8-1.1 nats better than N(0, I):
  check the AIS ESS before trusting an EBM prior's NLL (ebm_prior_fashion-mnist.md).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from ...mcmc.kernels import GradFn, autograd_grad_fn
from ...mcmc.trace import ChainTrace, TraceRecorder  # noqa: F401  (re-exported: their old home)
from ...registry import Registry, check, keep_parsed, parsed
from ..base import PRIORS, UpdateSpec
from ..posterior import DiagGaussian
from .base import Prior

ENERGIES = Registry("energy")
LATENT_SAMPLERS = Registry("latent sampler")
PRIOR_SCHEMES = Registry("prior training scheme")


class LatentEnergy(nn.Module, ABC):
    """The contract of a latent energy E(z) (an ``ENERGIES`` entry): ``forward(z)`` maps
    [..., m] -> [...]. Optional, with defaults: ``tilted`` (E = f + ||z||^2 / 2, bounded below
    by a Gaussian: what NCP's classifier needs) and ``expected_energy(mean, std, z)`` (E_q[E]
    with its Gaussian part in closed form, or None)."""
    tilted: bool = False

    @abstractmethod
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """E(z), [..., m] -> [...]."""

    def expected_energy(self, mean: torch.Tensor, std: torch.Tensor, z: torch.Tensor) -> torch.Tensor | None:
        return None

    def energy_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E(z) [N], grad_z E(z) [N, m]), detached (what every MCMC kernel calls): autograd
        here; an energy with a closed-form gradient (GRBM, quadratic) overrides it."""
        return autograd_grad_fn(self)(z)


def grad_fn(energy: nn.Module) -> GradFn:
    """The kernels' ``fn(z) -> (E, grad E)`` of an energy: its own ``energy_and_grad`` for a
    :class:`LatentEnergy`, autograd for any other differentiable module."""
    return energy.energy_and_grad if isinstance(energy, LatentEnergy) else autograd_grad_fn(energy)


class LatentSampler(nn.Module, ABC):
    """Draws samples of exp(-E(z)) / Z.

    ``sample(energy, n, init=None, trace=False) -> (z [n, m], ChainTrace or None)``:
    ``init`` (if given) is the chain start [n, m], else the sampler's own start (N(0, I));
    ``trace`` also returns the chains' statistics after each step (``ChainTrace``, whose
    ``diagnostics()`` says whether they mixed). Samplers must work under ``torch.no_grad()``
    (they enable gradients for z themselves) and must not leave gradients on the energy's
    parameters.
    """

    @abstractmethod
    def sample(self, energy: nn.Module, n: int, init: torch.Tensor | None = None,
               trace: bool = False) -> tuple[torch.Tensor, ChainTrace | None]:
        """(z [n, m], the ChainTrace or None)."""


@dataclass
class EnergyOptimParams:
    """Optimizer settings of a scheme's energy update (base of scheme params; paper 002: Adam 2e-4)."""
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.999)
    every: int = 1                                     # the energy update runs every this many steps

    def __post_init__(self):
        check(self.lr > 0, f"lr: must be > 0, got {self.lr}")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
              f"betas: must be two numbers in [0, 1), got {self.betas}")
        check(self.every >= 1, f"every: must be >= 1, got {self.every}")


class PriorScheme(nn.Module, ABC):
    """How an EBM prior is trained. Modules it owns (a flow proposal, a sampler network) are
    submodules of the scheme, so they are saved in checkpoints with the model.

    - ``trained_by_elbo``: True when the VAE optimizer also steps the energy (the IW scheme,
      whose KL term carries its gradient); else the scheme's own updates do;
    - ``updates(prior)``: extra :class:`UpdateSpec` s (order >= 1: after the VAE update);
    - ``update_loss(prior, name, x, state)``: (scalar loss, logs) of one of them;
    - ``kl(prior, q)``: the VAE's KL-like term per example [B], or None for the default
      one-sample ALB term ln q(z|x) + E(z);
    - ``sample(prior, n)``: samples [n, m], or None to use the prior's sampler;
    - ``kl_normalized``: True when ``kl`` is a KL to a normalised density (NCP's base);
    - ``vae_stop``: the step at which the VAE update stops (two-stage schemes), or None;
    - ``bind(model)``: called once with the VAE (schemes that encode batches themselves).
    """
    trained_by_elbo: bool = False
    kl_normalized: bool = False

    @property
    def vae_stop(self) -> int | None:
        return None

    def bind(self, model: nn.Module) -> None:
        """Called once by the EBM prior with the model (default: nothing)."""

    def updates(self, prior: "EBMPrior") -> list[UpdateSpec]:
        return []

    @staticmethod
    def energy_update(prior: "EBMPrior", p: EnergyOptimParams, name: str = "prior", order: int = 1) -> UpdateSpec:
        """The update that steps the energy's parameters with ``p``'s optimizer settings."""
        return UpdateSpec(name, list(prior.energy_net.parameters()), lr=p.lr, betas=p.betas,
                          order=order, every=p.every)

    def update_loss(self, prior: "EBMPrior", name: str, x: torch.Tensor, state: dict):
        raise KeyError(f"{type(self).__name__} has no update {name!r}")

    def after_update(self, prior: "EBMPrior", name: str, state: dict) -> None:
        """Non-gradient work after update ``name`` (default: nothing)."""

    def kl(self, prior: "EBMPrior", q: DiagGaussian) -> torch.Tensor | None:
        return None

    def sample(self, prior: "EBMPrior", n: int) -> torch.Tensor | None:
        return None


class EBMPrior(Prior):
    """p(z) = exp(-E(z)) / Z with Z unknown: ``log_prob`` is -E(z) (``normalized = False``)."""
    normalized = False

    def __init__(self, energy: nn.Module, scheme: PriorScheme, sampler: LatentSampler, latent_dim: int,
                 kl_term: str = "closed_form"):
        super().__init__(latent_dim)
        self.energy_net, self.scheme, self.sampler = energy, scheme, sampler
        self.kl_term = kl_term

    @property
    def trained_by_elbo(self) -> bool:
        return self.scheme.trained_by_elbo

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        return self.energy_net(z)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return -self.energy_net(z)

    def energy_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return grad_fn(self.energy_net)(z)

    def sample(self, n: int, trace: bool = False):
        """n samples [n, m] (with ``trace``: also the sampler's ``ChainTrace``; a scheme's own
        generator, e.g. EVaLP's network, is then bypassed: the MCMC sampler is what is traced)."""
        z = None if trace else self.scheme.sample(self, n)
        if z is not None:
            return z
        z, tr = self.sampler.sample(self.energy_net, n, trace=trace)
        return (z.detach(), tr) if trace else z.detach()

    def kl(self, q: DiagGaussian) -> torch.Tensor | None:
        return self.scheme.kl(self, q)

    def expected_energy(self, q: DiagGaussian, z: torch.Tensor) -> torch.Tensor | None:
        """E_q[E(z)] per example [B] with the energy's Gaussian part in closed form and the rest
        at the samples z [..., B, m] (averaged over leading sample dims), or None when the energy
        has no such split (an MLP): the VAE then uses ln q(z|x) + E(z) at z. Same expectation,
        lower variance: the "ALB" term becomes -H(q) + this (see energies.py)."""
        if self.kl_term == "one_sample" or not isinstance(self.energy_net, LatentEnergy):
            return None                      # a plain nn.Module energy offers no closed-form part
        return self.energy_net.expected_energy(q.mean, q.std, z)

    def bind(self, model: nn.Module) -> None:
        """Called by the VAE after building: passed on to the scheme."""
        self.scheme.bind(model)

    @property
    def vae_stop(self) -> int | None:
        """The step at which the VAE update stops (a scheme's two-stage mode), or None."""
        return self.scheme.vae_stop

    @property
    def kl_normalized(self) -> bool:
        return self.scheme.kl_normalized

    @property
    def kl_control_variate(self) -> bool:
        """False with ``kl_term: one_sample`` (Alg. 1 as printed, kept literal for the ablation)."""
        return self.kl_term != "one_sample"

    def sample_traced(self, n: int):
        """(n samples of the MCMC sampler, its ChainTrace), bypassing a scheme's own generator."""
        return self.sample(n, trace=True)

    @property
    def generates_without_sampler(self) -> bool:
        return self.scheme.sample(self, 2) is not None

    def updates(self) -> list[UpdateSpec]:
        return self.scheme.updates(self)

    def update_loss(self, name, x, state):
        return self.scheme.update_loss(self, name, x, state)

    def after_update(self, name, state):
        self.scheme.after_update(self, name, state)


@dataclass
class EBMPriorParams:
    energy: dict = field(default_factory=lambda: {"name": "grbm"})
    scheme: dict = field(default_factory=lambda: {"name": "ssm"})
    sampler: dict = field(default_factory=lambda: {"name": "mala"})
    # the VAE's KL term: "closed_form" (-H(q) + expected_energy, where the energy offers it) or
    # "one_sample" (ln q(z|x) + E(z) at the sample, Alg. 1 as printed; for ablations)
    kl_term: Literal["closed_form", "one_sample"] = "closed_form"

    def __post_init__(self):
        keep_parsed(self, "energy", ENERGIES, "model.prior.energy")
        keep_parsed(self, "scheme", PRIOR_SCHEMES, "model.prior.scheme")
        keep_parsed(self, "sampler", LATENT_SAMPLERS, "model.prior.sampler")
        sampler, energy = self.sampler.get("name"), self.energy.get("name")
        check(sampler not in ("gibbs", "gibbs_langevin") or energy == "grbm",
              f"model.prior.sampler: {sampler} needs the grbm energy (got {energy}); use langevin")


@PRIORS.register("ebm", EBMPriorParams)
def _ebm(p: EBMPriorParams, *, latent_dim: int, **ctx):
    energy = ENERGIES.build(parsed(p, "energy"), "model.prior.energy", latent_dim=latent_dim, **ctx)
    sampler = LATENT_SAMPLERS.build(parsed(p, "sampler"), "model.prior.sampler", latent_dim=latent_dim,
                                    energy=energy, **ctx)
    scheme = PRIOR_SCHEMES.build(parsed(p, "scheme"), "model.prior.scheme", latent_dim=latent_dim,
                                 energy=energy, **ctx)
    return EBMPrior(energy, scheme, sampler, latent_dim, p.kl_term)
