"""Generalized VI + sliced score matching (paper 002, Alg. 1; ``scheme: {name: ssm}``).

The VAE update keeps the default ALB term ln q(z|x) + E(z) (no ln Z). The prior's own update
(order 1, after the VAE's) fits E to the step's posterior samples z ~ q(z|x) (detached,
``state["z_posterior"]`` [B, m] or [M, B, m]) by sliced score matching (Song et al. 2020) with
the model score s(z) = -grad E(z) and projections v:

    J = E_z E_v [ v^T (grad_z s(z)) v + 1/2 (v^T s(z))^2 ]
      = E_z E_v [ -v^T H_E(z) v + 1/2 (v^T grad E(z))^2 ],

computed by double backpropagation (H_E v as the gradient of v^T grad E). Alg. 1 of the paper
prints "+ v^T H v", which with s = -grad E rewards flat energies (for a Gaussian energy the
precision collapses to 0; docs/methods.md §3, tests/models/priors/test_ebm_prior.py). ``projections`` v are drawn per
sample, standard normal or Rademacher (both E[v v^T] = I).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ....registry import check
from ..ebm import PRIOR_SCHEMES, EnergyOptimParams, PriorScheme


def sliced_score_matching_loss(energy: nn.Module, z: torch.Tensor, projections: int = 1,
                               noise: str = "gaussian") -> torch.Tensor:
    """The SSM objective J above (mean over samples and projections), differentiable in the
    energy's parameters. ``z``: [..., m] samples (detached inside)."""
    z = z.detach().reshape(-1, z.shape[-1]).repeat(projections, 1).requires_grad_(True)
    v = torch.randn_like(z)
    if noise == "rademacher":
        v = v.sign()
    (g,) = torch.autograd.grad(energy(z).sum(), z, create_graph=True)
    gv = (g * v).sum(-1)                                                   # v^T grad E
    (hv,) = torch.autograd.grad(gv.sum(), z, create_graph=True)            # H_E v
    return (-(hv * v).sum(-1) + 0.5 * gv**2).mean()


@dataclass
class SSMParams(EnergyOptimParams):
    projections: int = 1                               # v per posterior sample
    noise: Literal["gaussian", "rademacher"] = "gaussian"

    def __post_init__(self):
        super().__post_init__()
        check(self.projections >= 1, f"projections: must be >= 1, got {self.projections}")


class SSMScheme(PriorScheme):
    def __init__(self, p: SSMParams):
        super().__init__()
        self.p = p

    def updates(self, prior):
        return [self.energy_update(prior, self.p)]

    def update_loss(self, prior, name, x, state):
        if name != "prior":
            return super().update_loss(prior, name, x, state)
        z = state["z_posterior"]
        loss = sliced_score_matching_loss(prior.energy_net, z, self.p.projections, self.p.noise)
        with torch.no_grad():
            e = prior.energy_net(z).mean()
        return loss, {"ssm_loss": loss.detach(), "energy_pos": e}


@PRIOR_SCHEMES.register("ssm", SSMParams)
def _ssm(p: SSMParams, **_):
    return SSMScheme(p)
