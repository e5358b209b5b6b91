"""Normalizing-flow prior p(z) (masked autoregressive flow, Papamakarios et al. 2017) and the
flow builder shared with the adversarial scheme's proposal (schemes/adversarial.py).

ln p(z) = ln N(f(z); 0, I) + ln |det df/dz| with f a stack of affine autoregressive layers
(zuko). The flow is normalised and trained with the ELBO (one-sample Monte Carlo KL).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

import torch
import zuko
from torch import nn

from ...registry import check
from ..base import PRIORS
from .base import Prior


def make_flow(dim: int, transforms: int = 4, hidden: Sequence[int] = (64, 64),
              kind: Literal["maf", "iaf"] = "maf") -> zuko.flows.Flow:
    """An affine autoregressive flow over R^dim with base N(0, I), initialised to the identity
    (the last layer of every conditioner is zero), so it starts as N(0, I). For dim = 1 each
    layer is a learned affine map.

    ``kind="maf"``: log_prob in one pass, sampling in ``dim`` passes (a density model);
    ``kind="iaf"``: the MAF's transform inverted (Kingma et al. 2016): sampling and
    ``rsample_and_log_prob`` in one pass, log_prob of arbitrary points in ``dim`` passes (a
    sampler whose samples come with their exact log-density).
    Call the result (``flow()``) for a distribution with rsample / log_prob / rsample_and_log_prob.
    """
    maf = zuko.flows.MAF(dim, transforms=transforms, hidden_features=tuple(hidden))
    with torch.no_grad():
        for t in maf.transform.transforms:     # dim = 1: zuko uses free parameters, no conditioner
            linears = [m for m in t.modules() if isinstance(m, nn.Linear)]
            for p in (linears[-1] if linears else t).parameters():
                p.zero_()
    return maf if kind == "maf" else zuko.flows.Flow(maf.transform.inv, maf.base)


class FlowPrior(Prior):
    def __init__(self, flow: zuko.flows.Flow, latent_dim: int):
        super().__init__(latent_dim)
        self.flow = flow

    def log_prob(self, z):
        return self.flow().log_prob(z)

    def sample(self, n):
        return self.flow().sample((n,))


@dataclass
class FlowParams:
    """``transforms`` affine MAF layers, each conditioned by a masked MLP of widths ``hidden``."""
    transforms: int = 4
    hidden: list[int] = field(default_factory=lambda: [64, 64])

    def __post_init__(self):
        check(0 < self.transforms <= 1024, f"transforms must be in [1, 1024], got {self.transforms}")
        check(all(h > 0 for h in self.hidden), f"hidden widths must be > 0, got {self.hidden}")


@PRIORS.register("flow", FlowParams)
def _flow(p: FlowParams, *, latent_dim: int, **_):
    return FlowPrior(make_flow(latent_dim, p.transforms, p.hidden), latent_dim)
