"""Zero-shot restoration with a trained (EC-)VAE (paper 001 §4.3, Eqs. 5-7; docs/methods.md §2).

Given y = A x (A linear, A+ its Moore-Penrose pseudo-inverse, P = I - A+ A the orthogonal
projector onto what A does not see; every operator of ``operators.py`` has an orthogonal P),
the answer is always the range-null composition  x^ = A+ y + P x',  so A x^ = y exactly, and x'
comes from two chains.

1. Latent chain (Eq. 5, the VAE prior). From z_0 ~ p(z), K steps of
       z_{k+1} = z_k + (s/2) grad_z log p(z_k | y) + sqrt(s) xi,
       log p(z | y) = log N(A+ y; A+ A g(z), sigma^2 I) + log p(z)  (+ the latent EBM term, mode
       ``latent``), g the decoder mean; x' = g(z_K). Defaults (ours; the paper gives none):
       K = 200, s = 1e-3, sigma = 0.1 (model-space units), stable on 8x8 digits and 28x28
       Fashion-MNIST VAEs.

2. The EBM term at the temperature the energy was trained at (``ebm_mode="data"``, default).
   The EC calibrator trains E_w against the samples of its chain
       x <- x - (s_c/2) grad E_w(x) + c sqrt(s_c) xi    (``energy_calibration.py``),
   whose law is exp(-E_w(x) / c^2) (c^2 = 1e-5 in the shipped configs): E_w is an energy at
   temperature c^2, and only its short-run moves of K_c steps of size s_c from decoder outputs
   were ever scored. Eq. 6 as printed puts exp(-E_w(g(z))) into the latent chain at temperature
   1: relative to the trained law that is beta_eff = c^2 = 1e-5, so the term is flat (the
   restoration benchmark, benchmarks/ecvae.py, measured its latent gradient and PSNR effect: both negligible). Taking the
   trained law instead, exp(-E_w / c^2), inside the latent chain needs s <~ c^2 / ||J^T H J||
   for stability (J the decoder Jacobian): ~1e5 steps to mix the prior part. So the EBM factor
   is applied where and how it was trained: from x_0 = A+ y + P g(z_K), K_c steps of the
   calibrator's own chain restricted to the consistent images {x : A x = y},
       x_{k+1} = x_k - (s_c/2) beta P grad E_w(x_k) + c sqrt(s_c) P xi,
   i.e. Langevin of p(x | y) ∝ exp(-beta E_w(x) / c^2) on the affine set A x = y (P orthogonal,
   so projecting drift and noise samples the restricted law exactly, up to the O(s_c) step
   bias). beta = ``ebm_weight`` (1 = the trained temperature; the benchmark picks it on the
   validation split), K_c, s_c, c the calibrator's ``steps`` / ``step_size`` / ``noise``
   (``ebm_steps`` overrides K_c). Answer x^ = A+ y + P x_K.
   ``ebm_mode="latent"`` keeps Eq. 6 as printed: - beta E_w(g(z)) added to log p(z | y) of the
   latent chain (temperature 1).

Everything lives in the model's data space (what ``data.preprocess`` returns). Without an ``ec``
calibrator, or with ``use_ebm=False``, stage 2 is skipped (the plain-VAE prior). Deterministic
given ``seed`` (a private RNG stream; the global RNG is untouched).
"""
from __future__ import annotations

import math

import torch

from ..mcmc.kernels import autograd_grad_fn, langevin_step
from .operators import Operator, RestorationError

__all__ = ["EBM_MODES", "data_energy", "ec_calibrator", "langevin_latents", "consistent_langevin", "restore",
           "pinv_baseline"]
EBM_MODES = ("data", "latent")


def ec_calibrator(model):
    """The model's EC-VAE calibrator (``name == "ec"``), or None."""
    for cal in model.calibrator_parts():
        if cal.name == "ec":
            return cal
    return None


def data_energy(model):
    """``cal.data_energy`` of the model's EC-VAE calibrator, or None."""
    cal = ec_calibrator(model)
    return None if cal is None else cal.data_energy


def consistent_langevin(energy, x0: torch.Tensor, op: Operator, *, steps: int, step_size: float, noise: float,
                        weight: float = 1.0) -> torch.Tensor:
    """Stage 2 of the module docstring: ``steps`` steps of
    x <- x - (s/2) weight P grad E(x) + c sqrt(s) P xi from ``x0`` (P = I - A+ A, s = ``step_size``,
    c = ``noise``): Langevin of exp(-weight E(x) / c^2) on {x : A x = A x0}. Uses the current RNG;
    returns the detached x_K (A x_K = A x0 up to rounding)."""
    x, fn = x0.detach(), autograd_grad_fn(energy)
    for _ in range(steps):
        _, grad = fn(x)
        x = langevin_step(x, grad, 0.5 * step_size * weight, noise * step_size**0.5, project=op.project_null)
    return x


def _decode_mean(model, z: torch.Tensor) -> torch.Tensor:
    return model.reconstruction.mean(model.decode(z))


@torch.no_grad()
def langevin_latents(model, y: torch.Tensor, op: Operator, *, steps: int = 200, step_size: float = 1e-3,
                     noise_scale: float = 0.1, use_ebm: bool = True, ebm_weight: float = 1.0) -> torch.Tensor:
    """z_K of the latent Langevin chain (stage 1, with Eq. 6's latent EBM term at temperature 1
    when ``use_ebm``), one chain per degraded image: ``[B, latent_dim]``. Uses the current RNG."""
    energy = data_energy(model) if use_ebm else None
    target = op.pinv(y)
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
        z = langevin_step(z.detach(), -grad, step_size / 2, step_size**0.5)    # ascent on ln p
    return z


def _check(steps, step_size, noise_scale, ebm_weight, ebm_mode, ebm_steps) -> None:
    finite = all(math.isfinite(v) for v in (step_size, noise_scale, ebm_weight))
    if not finite or steps < 0 or step_size <= 0 or noise_scale <= 0 or ebm_weight < 0:
        raise RestorationError(f"need steps >= 0, step_size > 0, noise_scale > 0, ebm_weight >= 0 (all finite); got "
                               f"{steps}, {step_size}, {noise_scale}, {ebm_weight}")
    if ebm_mode not in EBM_MODES:
        raise RestorationError(f"ebm_mode must be one of {', '.join(EBM_MODES)}, got {ebm_mode!r}")
    if ebm_steps is not None and ebm_steps < 0:
        raise RestorationError(f"ebm_steps must be >= 0, got {ebm_steps}")


@torch.no_grad()
def restore(model, y: torch.Tensor, op: Operator, *, steps: int = 200, step_size: float = 1e-3,
            noise_scale: float = 0.1, use_ebm: bool = True, ebm_weight: float = 1.0,
            seed: int = 0, ebm_mode: str = "data", ebm_steps: int | None = None) -> torch.Tensor:
    """x^ = A+ y + P x' for a batch of degraded images ``y`` (model space; module docstring).

    ``use_ebm=False`` drops the energy term (the plain-VAE prior, Eq. 5). ``ebm_mode="data"``:
    x' = the consistent chain at the trained temperature from g(z_K); ``"latent"``: Eq. 6 as
    printed, x' = g(z_K) of the latent chain with beta E_w(g(z)). Deterministic given ``seed``.
    """
    _check(steps, step_size, noise_scale, ebm_weight, ebm_mode, ebm_steps)
    cal = ec_calibrator(model) if use_ebm else None
    with torch.random.fork_rng(devices=[] if y.device.type == "cpu" else [y.device]):
        torch.manual_seed(seed)
        z = langevin_latents(model, y, op, steps=steps, step_size=step_size, noise_scale=noise_scale,
                             use_ebm=cal is not None and ebm_mode == "latent", ebm_weight=ebm_weight)
        x = op.pinv(y) + op.project_null(_decode_mean(model, z))
        if cal is not None and ebm_mode == "data" and ebm_weight > 0:
            x = consistent_langevin(cal.data_energy, x, op, steps=cal.steps if ebm_steps is None else ebm_steps,
                                    step_size=cal.step_size, noise=cal.noise, weight=ebm_weight)
    return op.pinv(y) + op.project_null(x)


def pinv_baseline(op: Operator, y: torch.Tensor) -> torch.Tensor:
    """The range-space part alone, A+ y (no prior)."""
    return op.pinv(y)
