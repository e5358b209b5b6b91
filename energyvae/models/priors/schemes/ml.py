"""Maximum likelihood by persistent contrastive divergence (``scheme: {name: ml}``).

Objective. The prior's update (order 1, after the VAE's) maximises the likelihood of the step's
posterior samples z+ ~ q(z|x) (``state["z_posterior"]``, detached) under p(z) = exp(-E(z)) / Z.
Its gradient is the difference of two expectations,

    grad_theta [-ln p(z+)] = E_data[grad_theta E(z)] - E_model[grad_theta E(z)],

the second over p itself. The loss is its Monte Carlo surrogate

    loss = mean E(z+) - mean E(sg(z-)),

with negatives z- ~ p taken from **persistent chains** (Tieleman 2008, "Training restricted
Boltzmann machines using approximations to the likelihood gradient"): a buffer of ``chains``
states that survives across updates (a registered buffer, so checkpoints carry it and a
resumed run continues the same chains). Each update first advances every chain by ``steps``
kernel steps under the current energy, then uses them (all of them) as z-. Because the
parameters move little per update the chains stay close to the current model's law, unlike
short-run CD from noise, whose energy learns to match its own short chains (short_run.py). For
a multimodal target this is a likelihood fit; sliced score matching (ssm.py) is not: on the
issue-30 target SSM from W std 0.1 ends 3.7 nats *below* N(0, I).

Kernels. For a GRBM (``GRBMEnergy``) the Gibbs-Langevin sweep of Liao et al. (2022) with its
Metropolis correction (``mcmc.kernels.gibbs_langevin_step``: h ~ p(h | z), then K =
``langevin_steps`` Langevin steps on z | h in closed form, accepted jointly; step r sigma_i^2 per
unit, as the ``gibbs_langevin`` sampler, samplers.py); h is redrawn from p(h | z) at the start of
every update (a Gibbs step, so only z needs to persist). For any other energy MALA
(``mcmc.kernels.mala_step``) with a step size adapted across updates towards acceptance 0.57
(its log is a buffer too).

Settings and why (measured in ``tests/models/priors/test_ml_scheme.py``):

- ``lr`` 1e-3 (Adam, betas 0.9 / 0.999). Chosen by a sweep over 2e-4, 1e-3, 3e-3 of this
  scheme on a whitened 2-D two-component mixture (components at +-2 with std 0.5 along one axis,
  then whitened; 0.715 nats of room over N(0, I)), GRBM with 8 hidden units and the default
  init, exact ln Z by enumeration, 1500 updates of batch 256; held-out log-likelihood minus
  N(0, I)'s in nats at the end, seeds 0 / 1 / 2:
  2e-4: +0.001 / -0.045 / +0.001 (still climbing back to N(0, I) from the random start);
  1e-3: +0.482 / 0.000 / +0.405; 3e-3: +0.699 / -0.001 / +0.044, oscillating by +-0.5 nats
  between checkpoints (e.g. seed 0: +0.05, -0.54, +0.49, +0.30, +0.70 at 500-1500 updates).
  1e-3 is the smooth one with the best mean. Seed 1 stays on the N(0, I) saddle at every lr
  within 1500 updates: the ML gradient first shrinks a random W that does not fit the data
  towards the saddle, so the larger init makes escape likely, not certain. The old init
  (W std 0.01) at lr 2e-4 stays within 0.001 nats of N(0, I) on all three seeds.
- ``chains`` 256 (four of the benchmark's batches of 64): enough negatives that the
  negative phase is not the noisier half of the gradient, at about a third of the VAE step's cost.
- ``steps`` 5 sweeps per update (GRBM), each of ``langevin_steps`` 10 at ``step_size`` r = 0.1
  (decay 0.9^10 = 0.35 of z's distance to its conditional mean per sweep): persistent chains need
  only a few steps per update (Tieleman used 1 Gibbs step), and a sweep is cheap (closed form).
  Liao et al. ran 100 Gibbs-Langevin sweeps per update from fresh N(0, I) noise (not persistent),
  with SGD lr 0.01 (cosine decay), gradient-norm clipping 10 and the same initial W.
- The chains start at N(0, I), the GRBM's initial law up to O(|W|^2).

Logs (GRBM): ``grbm_w_norm`` ||W||_F, ``grbm_sigma_min`` / ``grbm_sigma_max``, and
``grbm_hidden_var``: the mean over hidden units j of Var_z sigmoid(a_j(z)) over the batch's
posterior samples (a_j the logits of p(h_j = 1 | z)); near 0 while the hidden units see nothing
(the saddle: every unit's activation is ~ 1/2 everywhere), growing as they pick up structure.
Also ``acceptance`` of the kernel and ``energy_pos`` / ``energy_neg``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ....mcmc.kernels import gibbs_langevin_step, mala_step
from ....registry import check
from ..ebm import PRIOR_SCHEMES, EnergyOptimParams, PriorScheme, grad_fn
from ..energies import GRBMEnergy


@dataclass
class MLParams(EnergyOptimParams):
    lr: float = 1e-3                  # by the sweep in the module docstring (2e-4, 1e-3, 3e-3)
    chains: int = 256                 # persistent chains (negatives per update)
    steps: int = 5                    # kernel steps per update (GRBM: Gibbs-Langevin sweeps)
    langevin_steps: int = 10          # GRBM: Langevin steps on z per sweep
    step_size: float = 0.1            # GRBM: r (step of unit i is r sigma_i^2), 0 < r < 2;
    #                                   else MALA's initial step size (then adapted)
    target_acceptance: float = 0.57   # MALA's adaptation target (non-GRBM energies)

    def __post_init__(self):
        super().__post_init__()
        check(self.chains >= 1, f"chains: must be >= 1, got {self.chains}")
        check(self.steps >= 1, f"steps: must be >= 1, got {self.steps}")
        check(self.langevin_steps >= 1, f"langevin_steps: must be >= 1, got {self.langevin_steps}")
        check(self.step_size > 0, f"step_size: must be > 0, got {self.step_size}")
        check(0 < self.target_acceptance < 1,
              f"target_acceptance: must be in (0, 1), got {self.target_acceptance}")


class MLScheme(PriorScheme):
    def __init__(self, p: MLParams, latent_dim: int, grbm: bool):
        super().__init__()
        self.p, self.grbm = p, grbm
        check(not grbm or p.step_size < 2, f"step_size: must be in (0, 2) for the GRBM, got {p.step_size}")
        self.register_buffer("chains", torch.randn(p.chains, latent_dim))
        self.register_buffer("log_step", torch.tensor(math.log(p.step_size)))   # MALA only

    def updates(self, prior):
        return [self.energy_update(prior, self.p)]

    @torch.no_grad()
    def advance(self, energy) -> torch.Tensor:
        """Advance the persistent chains by ``steps`` kernel steps; returns the mean acceptance."""
        z, acc = self.chains, torch.zeros((), device=self.chains.device)
        if self.grbm:
            r, k = self.p.step_size, self.p.langevin_steps
            decay = (1 - r) ** k                                            # a^K
            std = energy.sigma * (2 * (1 - decay**2) / (2 - r)) ** 0.5      # as GibbsLangevin
            h = energy.sample_hidden(z)
            for _ in range(self.p.steps):
                z, h, log_alpha = gibbs_langevin_step(z, h, energy, decay, std, metropolis=True)
                acc = acc + log_alpha.clamp(max=0).exp().mean()
        else:
            fn = grad_fn(energy)
            state = (z, *fn(z))
            for _ in range(self.p.steps):
                state, log_alpha = mala_step(state, fn, self.log_step.exp())
                a = log_alpha.nan_to_num(nan=-math.inf).clamp(max=0).exp().mean()
                acc = acc + a
                self.log_step.add_(0.05 * (a - self.p.target_acceptance)).clamp_(-12.0, 2.0)
            z = state[0]
        self.chains.copy_(z)
        return acc / self.p.steps

    def update_loss(self, prior, name, x, state):
        if name != "prior":
            return super().update_loss(prior, name, x, state)
        energy = prior.energy_net
        z_pos = state["z_posterior"].detach().reshape(-1, prior.latent_dim)
        acc = self.advance(energy)
        e_pos, e_neg = energy(z_pos), energy(self.chains.detach().clone())
        loss = e_pos.mean() - e_neg.mean()
        logs = {"ml_loss": loss.detach(), "energy_pos": e_pos.mean().detach(),
                "energy_neg": e_neg.mean().detach(), "acceptance": acc}
        if isinstance(energy, GRBMEnergy):
            logs.update(grbm_logs(energy, z_pos))
        return loss, logs


@torch.no_grad()
def grbm_logs(energy: GRBMEnergy, z: torch.Tensor) -> dict:
    """||W||_F, sigma's range and the hidden activation variance over z (module docstring)."""
    sigma = energy.sigma
    act = torch.sigmoid(energy.hidden_logits(z))                   # [N, h]
    var = act.var(0, unbiased=False).mean() if len(z) > 1 else act.new_zeros(())
    return {"grbm_w_norm": energy.W.norm(), "grbm_sigma_min": sigma.min(),
            "grbm_sigma_max": sigma.max(), "grbm_hidden_var": var}


@PRIOR_SCHEMES.register("ml", MLParams)
def _ml(p: MLParams, *, latent_dim: int, energy=None, **_):
    return MLScheme(p, latent_dim, grbm=isinstance(energy, GRBMEnergy))
