"""Latent regularisers added to the VAE loss (calibrators that bring no update of their own).

``mmd`` — the InfoVAE / MMD-VAE regulariser (Zhao, Song & Ermon 2017; the EnVAE paper's
"InfoVAE" baseline): ``weight * MMD^2(q(z), p(z))`` between the aggregate posterior,
represented by the batch's posterior samples ``state["z"]`` (with their graph, so the encoder
gets the gradient), and the prior, represented by ``model.prior.sample(n)`` (detached; same
number n of samples as z rows; an MCMC prior runs its sampler every step).

Estimator: the unbiased U-statistic (Gretton et al. 2012, Eq. 3)
  MMD_u^2 = 1/(n(n-1)) sum_{i!=j} k(z_i, z_j) + 1/(n(n-1)) sum_{i!=j} k(p_i, p_j)
            - 2/n^2 sum_{i,j} k(z_i, p_j),
which can be slightly negative; its mean is 0 when q(z) = p(z).

Kernel (a sum over ``scales`` s of):
- ``imq`` (default): inverse multiquadratic k(a, b) = C / (C + ||a - b||^2), C = 2 m sigma^2 s
  (m = latent_dim, sigma^2 = ``prior_var``), the kernel and multi-scale sum of the WAE code
  (Tolstikhin et al. 2018: heavy tails give gradients far from the prior's mass);
- ``rbf``: Gaussian k(a, b) = exp(-||a - b||^2 / C) with the same C (InfoVAE's public code uses
  one Gaussian exp(-||a - b||^2 / m^2): ``kernel: rbf, scales: [m / 2], prior_var: 1``).
Default scales (0.1, 0.2, 0.5, 1, 2, 5, 10), as in the WAE code.

Posterior samples with leading sample dimensions ([M, B, m], e.g. from a multi-sample
objective) are flattened to [M*B, m] (the cost is quadratic in the number of rows).

The InfoVAE objective (Zhao et al., Eq. 6), per example,
  -E_q ln p(x|z) + (1 - alpha) KL(q(z|x) || p(z)) + (alpha + lambda - 1) D(q(z) || p(z)),
is this package's VAE with ``kl_weight = 1 - alpha`` and an ``mmd`` calibrator with
``weight = alpha + lambda - 1``. The common MMD-VAE setting alpha = 1 (no KL)::

    model:
      name: vae
      kl_weight: 0.0                 # 1 - alpha
      reconstruction: {name: l2}     # the paper does not name InfoVAE's pixel loss
      calibrators:
        - {name: mmd, weight: 1000.0, kernel: imq}   # alpha + lambda - 1 (= lambda here)

(The EnVAE paper does not give its InfoVAE weights. MMD^2 is bounded by twice the number of
scales and is typically << 1 between batches, while a summed reconstruction loss grows with
the data dimension D, hence weights of 10^2..10^3 in the InfoVAE/WAE code.
``kl_weight: 1.0`` plus an ``mmd`` term is InfoVAE with alpha = 0.)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from ..registry import check
from .base import CALIBRATORS, Calibrator

__all__ = ["MMDRegularizer", "mmd_unbiased", "kernel_matrix"]

_WAE_SCALES = [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]


def kernel_matrix(a: torch.Tensor, b: torch.Tensor, kernel: str, bandwidths) -> torch.Tensor:
    """sum_C k_C(a_i, b_j) for a [n, m], b [n', m]: [n, n']."""
    d2 = (a.unsqueeze(1) - b.unsqueeze(0)).pow(2).sum(-1, keepdim=True)   # exact (no cdist cancellation)
    c = torch.as_tensor(tuple(bandwidths), dtype=d2.dtype, device=d2.device)
    k = c / (c + d2) if kernel == "imq" else torch.exp(-d2 / c)
    return k.sum(-1)


def mmd_unbiased(z: torch.Tensor, p: torch.Tensor, kernel: str = "imq", bandwidths=(1.0,)) -> torch.Tensor:
    """Unbiased U-statistic estimate of MMD^2 between samples z [n, m] and p [n', m]."""
    n, n2 = z.shape[0], p.shape[0]
    if n < 2 or n2 < 2:
        raise ValueError(f"the unbiased MMD needs >= 2 samples per set, got {n} and {n2}")
    k = kernel_matrix(w := torch.cat([z, p]), w, kernel, bandwidths)     # one kernel evaluation
    k_zz, k_pp, k_zp = k[:n, :n], k[n:, n:], k[:n, n:]
    off = lambda kk, m: (kk.sum() - kk.diagonal().sum()) / (m * (m - 1))  # noqa: E731
    return off(k_zz, n) + off(k_pp, n2) - 2 * k_zp.mean()


class MMDRegularizer(Calibrator):
    """Adds ``weight * MMD_u^2(q(z), p(z))`` to the VAE loss (see the module docstring)."""

    def __init__(self, latent_dim: int, weight: float = 1.0, kernel: str = "imq",
                 scales=tuple(_WAE_SCALES), prior_var: float = 1.0):
        super().__init__()
        self.weight, self.kernel = weight, kernel
        self.bandwidths = tuple(2.0 * latent_dim * prior_var * s for s in scales)

    def vae_loss_term(self, model, x, state):
        z = state["z"]
        z = z.reshape(-1, z.shape[-1])
        if z.shape[0] < 2:                       # no estimate from one sample: contribute nothing
            zero = z.sum() * 0.0
            return zero, {"mmd": zero.detach()}
        p = model.prior.sample(z.shape[0]).detach().to(dtype=z.dtype, device=z.device)
        mmd = mmd_unbiased(z, p, self.kernel, self.bandwidths)
        return self.weight * mmd, {"mmd": mmd.detach()}


@dataclass
class MMDParams:
    weight: float = 1.0                                  # alpha + lambda - 1 in InfoVAE's notation
    kernel: Literal["imq", "rbf"] = "imq"
    scales: list[float] = field(default_factory=lambda: list(_WAE_SCALES))
    prior_var: float = 1.0                               # sigma^2 in C = 2 m sigma^2 s

    def __post_init__(self):
        check(self.weight >= 0, f"weight must be >= 0, got {self.weight}")
        check(len(self.scales) > 0, "scales must not be empty")
        check(all(s > 0 for s in self.scales), f"scales must be > 0, got {self.scales}")
        check(self.prior_var > 0, f"prior_var must be > 0, got {self.prior_var}")
        self.scales = [float(s) for s in self.scales]


@CALIBRATORS.register("mmd", MMDParams)
def _mmd(p: MMDParams, *, latent_dim: int, **_):
    return MMDRegularizer(latent_dim, p.weight, p.kernel, p.scales, p.prior_var)
