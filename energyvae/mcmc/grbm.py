"""The Gaussian-Bernoulli RBM energy with its hidden units summed out, and its exact ``ln Z``
(docs/methods.md Eq. 12): the closed forms behind the GRBM prior of paper 002 and the oracle
that AIS (:mod:`energyvae.mcmc.ais`) is tested against."""
from __future__ import annotations

import math

import torch

__all__ = ["grbm_energy", "grbm_exact_log_partition"]

LOG_2PI = math.log(2 * math.pi)

def _grbm_params(W, b, mu, sigma, dtype=None):
    W = torch.as_tensor(W)
    dtype = dtype or (W.dtype if W.is_floating_point() else torch.get_default_dtype())
    W = W.to(dtype)
    if W.dim() != 2:
        raise ValueError(f"W must be [visible, hidden], got shape {tuple(W.shape)}")
    D, H = W.shape
    b = torch.as_tensor(b, dtype=dtype, device=W.device).expand(H)
    mu = torch.as_tensor(mu, dtype=dtype, device=W.device).expand(D)
    sigma = torch.as_tensor(sigma, dtype=dtype, device=W.device).expand(D)
    return W, b, mu, sigma


def grbm_energy(z: torch.Tensor, W, b, mu, sigma) -> torch.Tensor:
    """GRBM energy (docs/methods.md Eq. 12) with the hidden units summed out, ``[N, D] -> [N]``::

        E(z) = 1/2 ||(z - mu) / sigma||^2 - sum_j softplus((W^T (z / sigma^2))_j + b_j)

    ``W``: ``[D, H]``; ``b``: ``[H]``; ``mu``: ``[D]`` or scalar; ``sigma``: ``[D]`` or scalar
    (> 0).
    """
    W, b, mu, sigma = _grbm_params(W, b, mu, sigma, dtype=z.dtype)
    W, b, mu, sigma = (x.to(z.device) for x in (W, b, mu, sigma))
    quad = 0.5 * (((z - mu) / sigma) ** 2).sum(-1)
    return quad - torch.nn.functional.softplus((z / sigma**2) @ W + b).sum(-1)


@torch.no_grad()
def grbm_exact_log_partition(W, b, mu, sigma, *, chunk_size: int = 1 << 14) -> torch.Tensor:
    """Exact ``ln Z = ln ∫ exp(-E(z)) dz`` of the GRBM energy of :func:`grbm_energy`, float64 0-d.

    Derivation: ``softplus(a) = ln(1 + e^a) = ln sum_{h in {0,1}} e^{h a}``, so with ``s = sigma^2``
    (elementwise) and ``h in {0,1}^H``::

        exp(-E(z)) = sum_h exp(-1/2 sum_i (z_i - mu_i)^2 / s_i + sum_i z_i (W h)_i / s_i + b^T h).

    Completing the square in ``z`` with ``c = mu + W h``: the exponent equals
    ``-1/2 sum_i (z_i - c_i)^2 / s_i + sum_i (c_i^2 - mu_i^2) / (2 s_i) + b^T h``, and the Gaussian
    integrates to ``prod_i sqrt(2 pi s_i)``.  With ``c_i^2 - mu_i^2 = (W h)_i^2 + 2 mu_i (W h)_i``::

        ln Z = D/2 ln(2 pi) + sum_i ln sigma_i
               + logsumexp_h [ b^T h + sum_i ((W h)_i^2 + 2 mu_i (W h)_i) / (2 sigma_i^2) ].

    The ``2^H`` hidden states are enumerated in chunks of ``chunk_size`` (vectorised within a
    chunk) in float64; ``H <= 20`` (about 10^6 states).
    """
    W, b, mu, sigma = _grbm_params(W, b, mu, sigma, dtype=torch.float64)
    D, H = W.shape
    if H > 20:
        raise ValueError(f"exact GRBM log-partition enumerates 2^H states; H = {H} > 20 is too many")
    if bool((sigma <= 0).any()):
        raise ValueError("sigma must be positive")
    s = sigma**2
    bits = 1 << torch.arange(H, device=W.device)
    chunk_lse = []
    for start in range(0, 1 << H, chunk_size):
        idx = torch.arange(start, min(start + chunk_size, 1 << H), device=W.device)
        h = ((idx[:, None] & bits) != 0).to(torch.float64)  # [C, H]
        wh = h @ W.T  # [C, D]
        val = h @ b + ((wh * wh + 2 * mu * wh) / (2 * s)).sum(1)
        chunk_lse.append(torch.logsumexp(val, 0))
    return 0.5 * D * LOG_2PI + torch.log(sigma).sum() + torch.logsumexp(torch.stack(chunk_lse), 0)
