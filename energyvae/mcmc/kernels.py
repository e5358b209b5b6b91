"""MCMC kernels over a batch of chains: unadjusted Langevin, MALA and HMC, and the step-size
adaptation that MALA's warm-up and AIS share. Every chain of the library is built on them:
the latent samplers (``models/priors/samplers.py``), AIS (:mod:`.ais`), EC-VAE's conditional
chain and the calibrated posterior (``models/energy_calibration.py``), the data-space EBM,
short-run CD and the restoration chains.

Conventions (docs/methods.md Eq. 13): a target exp(-U(z)), z ``[N, ...]`` (N chains, any event
shape), and a ``GradFn`` ``fn(z) -> (U [N], grad_z U, *extra)``, all detached; ``extra`` are
per-chain tensors the caller wants carried along (AIS keeps the untempered energy there).
:func:`autograd_grad_fn` makes one from any differentiable energy; an energy with a closed-form
gradient passes its own (``LatentEnergy.energy_and_grad``: GRBM, quadratic).

- :func:`langevin_step`: ``z - drift * P grad + noise * P xi`` (``P`` an optional projection):
  paper 002's ``drift = h, noise = sqrt(2 h)``, paper 001's (Eq. 3) ``drift = s / 2,
  noise = c sqrt(s)``. No accept/reject: its law is biased by O(h).
- :func:`mala_step`: the Langevin proposal with a diagonal preconditioner M = diag(scale^2),
  ``z' = z - h M grad U(z) + sqrt(2 h) M^(1/2) xi``, accepted with probability
  min(1, exp(U(z) - U(z')) q(z | z') / q(z' | z)). Exact: it leaves exp(-U) invariant.
- :func:`hmc_step`: ``n_leapfrog`` leapfrog steps of size ``eps`` with unit mass and a
  Metropolis correction. Exact.
- :func:`gibbs_step`, :func:`gibbs_langevin_step`: the GRBM's exact block Gibbs sweep and the
  Metropolis-corrected Gibbs-Langevin sweep of Liao et al. (2022).
- :class:`StepSize`: ``log h += rate (mean acceptance - target)`` per step on the device, and
  the mean of log h over a window (MALA's warm-up), or AIS's multiplicative 1.02 / 0.98 rule.

No kernel reads a value back to the host: step sizes, acceptance sums and adaptation stay
tensors, so a chain can run under ``torch.compile`` or a CUDA graph, and a step costs the
energy evaluations plus a few elementwise operations. A proposal whose energy or gradient is
not finite is rejected. Randomness comes from ``generator`` when given, else the global RNG.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

GradFn = Callable[[torch.Tensor], tuple]

__all__ = ["GradFn", "StepSize", "autograd_grad_fn", "gibbs_langevin_step", "gibbs_step", "hmc_step",
           "langevin_step", "mala_log_ratio", "mala_step"]


def autograd_grad_fn(energy: Callable[[torch.Tensor], torch.Tensor]) -> GradFn:
    """``z -> (energy(z), grad_z energy(z))`` by autograd, detached, under ``no_grad`` too; only
    z gets a gradient (an energy module's parameters are left untouched)."""
    def fn(z: torch.Tensor):
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            e = energy(z)
            (g,) = torch.autograd.grad(e.sum(), z)
        return e.detach(), g
    return fn


def _randn(like: torch.Tensor, generator) -> torch.Tensor:
    if generator is None:
        return torch.randn_like(like)
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def _rand(n: int, like: torch.Tensor, generator) -> torch.Tensor:
    if generator is None:
        return torch.rand(n, device=like.device, dtype=like.dtype)
    return torch.rand(n, generator=generator, device=like.device, dtype=like.dtype)


def _bcast(t, like: torch.Tensor):
    """A float, a per-chain [N] tensor or one broadcastable to ``like``, shaped to broadcast."""
    if isinstance(t, torch.Tensor) and t.dim() == 1 and t.shape[0] == like.shape[0] and like.dim() > 1:
        return t.reshape(-1, *([1] * (like.dim() - 1)))
    return t


def _sum(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).sum(1)


def _sq(t: torch.Tensor) -> torch.Tensor:
    """Per-chain squared norm in one pass."""
    t = t.flatten(1)
    return torch.linalg.vecdot(t, t)


def langevin_step(z: torch.Tensor, grad: torch.Tensor, drift, noise, *,
                  project: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """One unadjusted Langevin step ``z - drift * P grad + noise * P xi`` (module docstring);
    ``drift`` / ``noise`` floats or tensors broadcastable to z (per-chain [N] is reshaped)."""
    xi = _randn(z, generator)
    if project is not None:
        grad, xi = project(grad), project(xi)
    return z - _bcast(drift, z) * grad + _bcast(noise, z) * xi


def _select(accept: torch.Tensor, new: tuple, old: tuple) -> tuple:
    out = []
    for a, b in zip(new, old):
        out.append(torch.where(accept.reshape(-1, *([1] * (a.dim() - 1))), a, b))
    return tuple(out)


def _log_alpha(log_alpha: torch.Tensor, state: tuple) -> torch.Tensor:
    """NaN -> rejected, clamp at 0, reject non-finite proposals."""
    u, g = state[1], state[2]
    finite = torch.isfinite(u + _sum(g))      # a NaN or inf anywhere in U or grad U spoils the sum
    log_alpha = torch.nan_to_num(log_alpha, nan=-math.inf).clamp(max=0.0)
    return torch.where(finite, log_alpha, torch.full_like(log_alpha, -math.inf))


def mala_log_ratio(z, u, g, z_new, u_new, g_new, h, scale=None) -> torch.Tensor:
    """ln [exp(-U(z')) q(z | z') / (exp(-U(z)) q(z' | z))] per chain, q the preconditioned
    Langevin proposal N(z - h M grad U(z), 2 h M) (constants cancel); MALA accepts with
    probability min(1, exp(this))."""
    h = _bcast(h, z)
    var = 1.0 if scale is None else scale**2
    sd = 1.0 if scale is None else scale
    h_sum = h.reshape(-1) if isinstance(h, torch.Tensor) and h.dim() > 0 else h
    log_q_fwd = -_sum(((z_new - (z - h * var * g)) / sd) ** 2) / (4 * h_sum)
    log_q_bwd = -_sum(((z - (z_new - h * var * g_new)) / sd) ** 2) / (4 * h_sum)
    return u - u_new + log_q_bwd - log_q_fwd


def mala_step(state: tuple, fn: GradFn, h, scale: torch.Tensor | None = None, *,
              generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
              uniform: torch.Tensor | None = None) -> tuple[tuple, torch.Tensor]:
    """One MALA step from ``state = (z, U(z), grad U(z), *extra)``; ``h`` a float, a 0-d tensor or
    per-chain [N]; ``scale`` M^(1/2) (broadcastable to z; None: identity). Returns the new state
    and each chain's log acceptance probability [N]. (The forward proposal density needs only
    the noise: ((z' - mean_fwd) / M^(1/2))^2 / (4 h) = |xi|^2 / 2; the same algebra as
    :func:`mala_log_ratio`, arranged for few passes over the chains.) ``noise`` (xi, like z) and
    ``uniform`` ([N]) may be drawn by the caller: a compiled step (``torch.compile``) runs
    fastest with its random numbers drawn outside it."""
    z, u, g = state[:3]
    h = _bcast(h, z)
    hv = h if scale is None else h * scale**2               # h M
    sd = (2 * h) ** 0.5 if scale is None else (2 * h) ** 0.5 * scale
    xi = _randn(z, generator) if noise is None else noise
    z_new = torch.addcmul(z - hv * g, sd, xi) if isinstance(sd, torch.Tensor) else z - hv * g + sd * xi
    proposal = (z_new, *fn(z_new))
    u_new, g_new = proposal[1], proposal[2]
    back = z - z_new + hv * g_new                          # z - mean_bwd
    if scale is not None:
        back = back / scale
    h_sum = h.reshape(-1) if isinstance(h, torch.Tensor) and h.dim() > 0 else h
    log_alpha = u - u_new - _sq(back) / (4 * h_sum) + 0.5 * _sq(xi)
    log_alpha = _log_alpha(log_alpha, proposal)
    uniform = _rand(len(log_alpha), log_alpha, generator) if uniform is None else uniform
    accept = uniform.log() < log_alpha
    return _select(accept, proposal, state), log_alpha


def hmc_step(state: tuple, fn: GradFn, eps, n_leapfrog: int, *,
             generator: torch.Generator | None = None) -> tuple[tuple, torch.Tensor]:
    """One HMC step (unit mass, ``n_leapfrog`` leapfrog steps of size ``eps``: a float or per-chain
    [N]) from ``state = (z, U, grad U, *extra)``; returns the new state and log acceptance [N]."""
    z, u, g = state[:3]
    eps = _bcast(eps, z)
    p = _randn(z, generator)
    k0 = 0.5 * _sum(p * p)
    zn, gn = z, g
    p = p - 0.5 * eps * gn
    for i in range(n_leapfrog):
        zn = zn + eps * p
        out = fn(zn)
        gn = out[1]
        if i < n_leapfrog - 1:
            p = p - eps * gn
    p = p - 0.5 * eps * gn
    proposal = (zn, *out)
    log_alpha = _log_alpha(u + k0 - proposal[1] - 0.5 * _sum(p * p), proposal)
    accept = _rand(len(log_alpha), log_alpha, generator).log() < log_alpha
    return _select(accept, proposal, state), log_alpha


def gibbs_step(z: torch.Tensor, grbm) -> torch.Tensor:
    """One block-Gibbs sweep of a Gaussian-Bernoulli RBM with exact conditionals: h ~ p(h | z),
    then z ~ p(z | h). ``grbm`` offers ``sample_hidden(z)`` and ``sample_visible(h)``
    (``GRBMEnergy``). Leaves the GRBM exactly invariant."""
    return grbm.sample_visible(grbm.sample_hidden(z))


def gibbs_langevin_step(z: torch.Tensor, hid: torch.Tensor, grbm, decay, std, *, metropolis: bool = True):
    """One Gibbs-Langevin sweep of a GRBM (Liao et al. 2022; ``models/priors/samplers.py`` has
    the derivation): K Langevin steps on z at fixed h drawn in closed form,
    ``z' = c + decay (z - c) + std xi`` (c = mu + W h, ``decay`` = a^K, ``std`` its noise), then
    h' ~ p(h | z'), accepted jointly by Metropolis-Hastings when ``metropolis`` (exact) or always
    (biased by O(step)). ``grbm`` offers ``visible_mean``, ``sample_hidden``, ``hidden_logits``
    and ``joint_energy``. Returns (z, h, log acceptance [N] or None)."""
    c = grbm.visible_mean(hid)
    z_new = c + decay * (z - c) + std * torch.randn_like(z)
    h_new = grbm.sample_hidden(z_new)
    if not metropolis:
        return z_new, h_new, None

    def log_q(z_to, z_from, h_from):        # ln q(z_to | z_from, h_from) up to a constant
        m = grbm.visible_mean(h_from)
        return -0.5 * (((z_to - m - decay * (z_from - m)) / std) ** 2).sum(-1)

    def log_p_h(h_, z_):                    # ln p(h | z)
        return -torch.nn.functional.binary_cross_entropy_with_logits(grbm.hidden_logits(z_), h_,
                                                                     reduction="none").sum(-1)
    log_alpha = (grbm.joint_energy(z, hid) - grbm.joint_energy(z_new, h_new)
                 + log_q(z, z_new, h_new) - log_q(z_new, z, hid) + log_p_h(hid, z) - log_p_h(h_new, z_new))
    accept = (torch.rand_like(log_alpha).log() < log_alpha)[:, None]
    return torch.where(accept, z_new, z), torch.where(accept, h_new, hid), log_alpha


class StepSize:
    """A step size adapted on the device (no host reads).

    ``rule="log"`` (MALA's warm-up): ``log h += rate (mean acceptance - target)``, clamped to
    [``lo``, ``hi``] in log space; ``freeze_mean()`` fixes log h to the mean of the values
    recorded by ``record()`` (the warm-up's last quarter). ``rule="multiplicative"`` (AIS):
    ``h *= up`` when the mean acceptance exceeds the target, else ``h *= down``, clamped to
    [``lo``, ``hi``] (in h)."""

    def __init__(self, h: float, target: float, *, rule: str = "log", rate: float = 2.0,
                 lo: float = -30.0, hi: float = 5.0, up: float = 1.02, down: float = 0.98,
                 device=None, dtype=torch.float32):
        self.rule, self.target, self.rate, self.lo, self.hi, self.up, self.down = rule, target, rate, lo, hi, up, down
        self.log_h = torch.tensor(math.log(h), device=device, dtype=dtype)
        self._sum = torch.zeros((), device=device, dtype=dtype)
        self._n = 0

    @property
    def h(self) -> torch.Tensor:
        return self.log_h.exp()

    def update(self, mean_accept: torch.Tensor) -> None:
        if self.rule == "log":
            self.log_h = (self.log_h + self.rate * (mean_accept - self.target)).clamp(self.lo, self.hi)
        else:
            h = self.log_h.exp() * torch.where(mean_accept > self.target, self.up, self.down)
            self.log_h = h.clamp(self.lo, self.hi).log()

    def record(self) -> None:
        self._sum = self._sum + self.log_h
        self._n += 1

    def freeze_mean(self) -> None:
        if self._n:
            self.log_h = self._sum / self._n
