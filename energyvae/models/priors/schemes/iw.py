"""Importance-weighted partition estimate (paper 002, Sec. 2.1, Eqs. 5-7): a documented FAILING
baseline (the paper's EVAE / ECVAE).

The VAE's KL term becomes that of the VLB of Eq. 5 with ln Z replaced by its self-normalised
importance-sampling estimate under the posterior, from K fresh samples z_k ~ q(z|x):

    KL_IW(x) = mean_k [ln q(z_k|x) + E(z_k)] + ln 1/K sum_k exp(-E(z_k) - ln q(z_k|x)),

so the energy is trained by the VAE optimizer (its gradient is Eq. 7). By Jensen the second
term underestimates ln Z in expectation (the estimate is <= the exact KL; K = 1 gives 0), and
it tends to ln Z as K grows. It fails in practice because q(z|x) fits the true posterior of
each x, not the prior: its samples cover a small part of exp(-E), so the estimate of ln Z and
the negative phase of Eq. 7 are biased and of high variance, and the learned prior does not
match the aggregate posterior. A posterior with fixed std 1 (``posterior: {name: fixed}``, the
paper's "sigma = 1") covers more of the prior and works better; a learned std shrinks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ....registry import check
from ..ebm import PRIOR_SCHEMES, PriorScheme


class ImportanceWeighted(PriorScheme):
    trained_by_elbo = True

    def __init__(self, samples: int):
        super().__init__()
        self.samples = samples

    def kl(self, prior, q):
        if q.deterministic:
            raise ValueError("the IW scheme needs a stochastic posterior")
        z = q.rsample(self.samples)                               # [K, B, m]
        log_w = -prior.energy(z) - q.log_prob(z)                  # [K, B]
        return torch.logsumexp(log_w, 0) - math.log(self.samples) - log_w.mean(0)


@dataclass
class IWParams:
    """``samples``: K posterior samples per example for the estimate of ln Z (K >= 2)."""
    samples: int = 16

    def __post_init__(self):
        check(self.samples >= 2, f"samples must be >= 2 (K = 1 makes the term 0), got {self.samples}")


@PRIOR_SCHEMES.register("iw", IWParams)
def _iw(p: IWParams, **_):
    return ImportanceWeighted(p.samples)
