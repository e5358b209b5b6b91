"""Adversarial contrastive divergence (paper 002, Sec. 2.2, Eqs. 9-10, Alg. 2).

A proposal flow q_c(z) (an affine IAF, as the paper's 4-layer IAF: one-pass sampling with the
exact log-density of its own samples) tracks the EBM by maximising the lower bound on ln Z of
Eq. 9, E_{q_c}[-E(z)] + H(q_c); the EBM then does contrastive divergence between the posterior
samples and the proposal's. Two updates after the VAE's:

- ``prior`` (order 1, energy params): mean E(z_post) - mean E(sg(z_c)),  z_post ~ q(z|x) of
  the step (``state["z_posterior"]``), z_c ~ q_c;
- ``proposal`` (order 2, flow params): mean over reparameterised z ~ q_c of E(z) + ln q_c(z).
  Its backward also reaches the energy's parameters; those gradients are never applied: each
  optimizer steps only its own parameters, and the ``prior`` optimizer zeroes the energy's
  gradients before its own backward (train/trainer.py, ``train_step``).

Generation (``sample_from``): "sampler" = the prior's MCMC sampler (the paper), "proposal" =
q_c samples, "proposal+sampler" = the MCMC sampler started at q_c samples.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from ....registry import check
from ...base import UpdateSpec
from ..ebm import PRIOR_SCHEMES, PriorScheme
from ..flow import make_flow


class AdversarialCD(PriorScheme):
    def __init__(self, proposal: nn.Module, lr: float, proposal_lr: float,
                 betas: tuple[float, float] | None, negatives: int | None, sample_from: str):
        super().__init__()
        self.proposal = proposal                                 # zuko Flow: proposal() is q_c
        self.lr, self.proposal_lr, self.betas = lr, proposal_lr, betas
        self.negatives, self.sample_from = negatives, sample_from

    def updates(self, prior):
        return [UpdateSpec("prior", list(prior.energy_net.parameters()), lr=self.lr,
                           betas=self.betas, order=1),
                UpdateSpec("proposal", list(self.proposal.parameters()), lr=self.proposal_lr,
                           betas=self.betas, order=2)]

    def update_loss(self, prior, name, x, state):
        z_post = state["z_posterior"].reshape(-1, prior.latent_dim)
        n = self.negatives or z_post.shape[0]
        if name == "prior":
            with torch.no_grad():
                z_c = self.proposal().sample((n,))
            e_pos, e_neg = prior.energy(z_post).mean(), prior.energy(z_c).mean()
            return e_pos - e_neg, {"energy_pos": e_pos.detach(), "energy_neg": e_neg.detach()}
        if name == "proposal":
            z, log_q = self.proposal().rsample_and_log_prob((n,))
            e = prior.energy(z)
            return (e + log_q).mean(), {"energy": e.mean().detach(), "entropy": -log_q.mean().detach()}
        return super().update_loss(prior, name, x, state)

    def sample(self, prior, n):
        if self.sample_from == "sampler":
            return None
        with torch.no_grad():
            z = self.proposal().sample((n,))
        if self.sample_from == "proposal":
            return z
        return prior.sampler.sample(prior.energy_net, n, init=z)[0].detach()


@dataclass
class AdversarialParams:
    """``lr``/``betas``: the energy's Adam (paper: 2e-4; betas None = the train section's);
    ``proposal_lr``: the flow's Adam (the paper gives none; 1e-3, the VAE's rate, lets the
    proposal keep up with the EBM); ``transforms``/``hidden``: the IAF (paper: 4 layers);
    ``negatives``: proposal samples per update (None = the posterior batch size)."""
    lr: float = 2e-4
    proposal_lr: float = 1e-3
    betas: tuple[float, float] | None = None
    transforms: int = 4
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    negatives: int | None = None
    sample_from: Literal["sampler", "proposal", "proposal+sampler"] = "sampler"

    def __post_init__(self):
        check(self.lr > 0 and self.proposal_lr > 0, "lr and proposal_lr must be > 0")
        check(0 < self.transforms <= 1024, f"transforms must be in [1, 1024], got {self.transforms}")
        check(all(h > 0 for h in self.hidden), f"hidden widths must be > 0, got {self.hidden}")
        check(self.negatives is None or self.negatives > 0, f"negatives must be > 0, got {self.negatives}")


@PRIOR_SCHEMES.register("adversarial", AdversarialParams)
def _adversarial(p: AdversarialParams, *, latent_dim: int, **_):
    proposal = make_flow(latent_dim, p.transforms, p.hidden, kind="iaf")
    return AdversarialCD(proposal, p.lr, p.proposal_lr, p.betas, p.negatives, p.sample_from)
