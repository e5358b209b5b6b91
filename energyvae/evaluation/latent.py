"""Latent-space diagnostics of paper 000 (Tables 3, 4, 7): how smooth the encoder is and how
wide its posteriors are, the two factors behind FEnVAE's local-linearity approximation.

- ``lipschitz_pairs``: the paper's definition, Lip = sup ||f(x1) - f(x2)|| / ||x1 - x2|| over
  pairs x1 != x2 (App. 6.5), with f the posterior mean, taken over all pairs of a held-out
  sample: a lower bound of the true constant.
- ``lipschitz_jacobian``: max over the sample of the spectral norm of the encoder mean's
  Jacobian (power iteration with jvp / vjp): the largest local gain, also a lower bound, and
  for a linear encoder both equal the spectral norm of its weight.
- ``posterior_variance``: mean of sigma^2 over examples and latent dimensions.
"""
from __future__ import annotations

import torch
from torch.func import jvp, vjp


def _mean_fn(model):
    return lambda x: model.encode(x).mean


@torch.no_grad()
def lipschitz_pairs(model, x: torch.Tensor, chunk: int = 256) -> float:
    f = _mean_fn(model)(x).flatten(1).double()
    xf = x.flatten(1).double()
    best = 0.0
    for s in range(0, len(x), chunk):
        dz = torch.cdist(f[s:s + chunk], f)
        dx = torch.cdist(xf[s:s + chunk], xf)
        ok = dx > 0
        if ok.any():
            best = max(best, (dz[ok] / dx[ok]).max().item())
    return best


def lipschitz_jacobian(model, x: torch.Tensor, iters: int = 30, seed: int = 0) -> float:
    """max_i ||J(x_i)||_2 by power iteration on J^T J, batched over examples."""
    f = _mean_fn(model)
    g = torch.Generator(device=x.device).manual_seed(seed)
    v = torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)
    sigma = torch.zeros(len(x), device=x.device)
    for _ in range(iters):
        v = v / v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
        _, u = jvp(f, (x,), (v,))                    # J v      (per example: the encoder is batch-wise)
        sigma = u.flatten(1).norm(dim=1)
        _, pullback = vjp(f, x)
        (v,) = pullback(u)                           # J^T J v
    return sigma.max().item()


@torch.no_grad()
def posterior_variance(model, x: torch.Tensor) -> float:
    q = model.encode(x)
    return 0.0 if q.deterministic else q.std.pow(2).mean().item()


def latent_diagnostics(model, data, n: int = 500, split: str = "test") -> dict:
    dev = next(model.parameters()).device
    x = data.preprocess(getattr(data, split).x[:n]).to(dev)
    return {"lipschitz_pairs": lipschitz_pairs(model, x),
            "lipschitz_jacobian": lipschitz_jacobian(model, x[:200]),
            "posterior_variance": posterior_variance(model, x)}
