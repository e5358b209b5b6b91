"""VampPrior (Tomczak & Welling 2018, Eq. 9): p(z) = 1/K sum_k q(z | u_k).

The K pseudo-inputs u_k have the data's shape and are encoded by the VAE's own encoder and
posterior; they are Parameters of the prior, so the VAE optimizer steps them with the ELBO.
The prior reaches the encoder through ``bind(model)`` (called by the VAE after building), which
keeps a weak reference: the VAE is not a submodule of its prior, so ``state_dict`` holds the
encoder once. Copies (``copy.deepcopy``, e.g. the EMA model; pickling) rebind to the copied
model: the reference is made strong in ``__getstate__`` and weak again in ``__setstate__``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ...registry import check
from ..base import PRIORS, BindsModel
from ..posterior import DiagGaussian
from .base import Prior


class VampPrior(BindsModel, Prior):
    def __init__(self, pseudo_inputs: torch.Tensor, latent_dim: int):
        super().__init__(latent_dim)
        self.pseudo_inputs = nn.Parameter(pseudo_inputs)      # [K, *data_shape]

    def bind(self, model: nn.Module) -> None:
        if not model.posterior.stochastic:
            raise ValueError("the VampPrior needs a stochastic posterior (q(z|u_k) must have a density)")
        super().bind(model)

    def components(self) -> DiagGaussian:
        """q(z | u_k) for all k: a DiagGaussian with mean / std [K, m]."""
        model = self.bound_model
        if model is None:
            raise RuntimeError("VampPrior is not bound to a live model (VAE calls bind(model))")
        return model.encode(self.pseudo_inputs)

    def log_prob(self, z):
        """ln p(z) = logsumexp_k ln q(z|u_k) - ln K, for z of shape [..., m]."""
        lp = self.components().log_prob(z.unsqueeze(-2))     # [..., K]
        return torch.logsumexp(lp, -1) - math.log(lp.shape[-1])

    def sample(self, n):
        q = self.components()
        k = torch.randint(len(self.pseudo_inputs), (n,), device=q.mean.device)
        return q.mean[k] + q.std[k] * torch.randn_like(q.mean[k])


@dataclass
class VampParams:
    """``components``: K pseudo-inputs. ``init``: their start, "uniform" = U(lo, hi) over the
    data's value range ((-1, 1) for data without one, e.g. standardised vectors), "normal" =
    N(0, 1) per entry."""
    components: int = 16
    init: Literal["uniform", "normal"] = "uniform"

    def __post_init__(self):
        check(self.components > 0, f"components must be > 0, got {self.components}")


@PRIORS.register("vamp", VampParams)
def _vamp(p: VampParams, *, latent_dim: int, data_shape, value_range=None, **_):
    shape = (p.components, *data_shape)
    if p.init == "normal":
        u = torch.randn(shape)
    else:
        lo, hi = value_range or (-1.0, 1.0)
        u = torch.empty(shape).uniform_(lo, hi)
    return VampPrior(u, latent_dim)
