"""Zero-shot restoration with a trained (EC-)VAE (paper 001 §4.3, Eqs. 5-7; METHODS.md §2).

Given y = A x, Langevin dynamics in the latent space samples

    p(z | y) ∝ N(A+ y; A+ A g(z), σ² I) · exp(-β E_w(g(z))) · p(z),

where g(z) is the decoder mean, p(z) the model's prior (N(0, I) for EC-VAE) and E_w the EC-VAE
data-space energy ``cal.data_energy`` (the neural-transport prior, Eq. 6; absent without an
``ec`` calibrator or with ``use_ebm=False``). β = ``ebm_weight`` (default 1, Eq. 6 as printed).
The calibrator's own chain samples exp(-E_w / c²) (c = ``cal.noise``, c² = 1e-5 in the shipped
configs), but β = 1/c² makes this chain diverge at the default step size (an EC-VAE on 8x8
digits: β from 1 to 100 moves PSNR by < 0.5 dB, β = 1e3 lowers it, β = 1e5 diverges), so the
default stays 1. From z_0 ~ p(z), K steps of

    z_{k+1} = z_k + (s/2) ∇_z log p(z_k | y) + √s ξ,   ξ ~ N(0, I)

and the answer is the range-null composition x^ = A+ y + (I - A+ A) g(z_K), so A x^ = y exactly.
Everything lives in the model's data space (what ``data.preprocess`` returns); σ (``noise_scale``)
is in those units. The paper gives no step size, steps or σ: the defaults (200 steps, s = 1e-3,
σ = 0.1) are ours, stable on 8x8 digits and 28x28 Fashion-MNIST VAEs.
"""
from __future__ import annotations

import torch

from .operators import Operator, RestorationError

__all__ = ["data_energy", "langevin_latents", "restore", "pinv_baseline"]


def data_energy(model):
    """``cal.data_energy`` of the model's EC-VAE calibrator (``name == "ec"``), or None."""
    for cal in getattr(model, "calibrators", ()):
        if getattr(cal, "name", None) == "ec":
            return cal.data_energy
    return None


def _decode_mean(model, z: torch.Tensor) -> torch.Tensor:
    return model.reconstruction.mean(model.decode(z))


@torch.no_grad()
def langevin_latents(model, y: torch.Tensor, op: Operator, *, steps: int = 200, step_size: float = 1e-3,
                     noise_scale: float = 0.1, use_ebm: bool = True, ebm_weight: float = 1.0,
                     seed: int = 0) -> torch.Tensor:
    """z_K of the latent Langevin chain above, one chain per degraded image: ``[B, latent_dim]``."""
    if steps < 0 or step_size <= 0 or noise_scale <= 0:
        raise RestorationError(f"need steps >= 0, step_size > 0, noise_scale > 0; got {steps}, "
                               f"{step_size}, {noise_scale}")
    energy = data_energy(model) if use_ebm else None
    target = op.pinv(y)
    with torch.random.fork_rng(devices=[] if y.device.type == "cpu" else [y.device]):
        torch.manual_seed(seed)
        z = model.prior.sample(y.shape[0]).to(y.device).detach()
        for _ in range(steps):
            with torch.enable_grad():
                z.requires_grad_(True)
                x = _decode_mean(model, z)
                residual = (target - op.pinv(op.A(x))).flatten(1)
                log_p = model.prior.log_prob(z) - residual.pow(2).sum(1) / (2 * noise_scale**2)
                if energy is not None:
                    log_p = log_p - ebm_weight * energy(x)
                grad, = torch.autograd.grad(log_p.sum(), z)
            z = z.detach() + step_size / 2 * grad + step_size**0.5 * torch.randn_like(z)
    return z


@torch.no_grad()
def restore(model, y: torch.Tensor, op: Operator, *, steps: int = 200, step_size: float = 1e-3,
            noise_scale: float = 0.1, use_ebm: bool = True, ebm_weight: float = 1.0,
            seed: int = 0) -> torch.Tensor:
    """x^ = A+ y + (I - A+ A) g(z_K) for a batch of degraded images ``y`` (model space).

    ``use_ebm=False`` drops the energy term (the plain-VAE prior, Eq. 5). Deterministic given ``seed``.
    """
    z = langevin_latents(model, y, op, steps=steps, step_size=step_size, noise_scale=noise_scale,
                         use_ebm=use_ebm, ebm_weight=ebm_weight, seed=seed)
    return op.pinv(y) + op.project_null(_decode_mean(model, z))


def pinv_baseline(op: Operator, y: torch.Tensor) -> torch.Tensor:
    """The range-space part alone, A+ y (no prior)."""
    return op.pinv(y)
