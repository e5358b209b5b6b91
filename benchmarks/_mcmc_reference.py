"""The MCMC loops as they were before the kernels of energyvae.mcmc.kernels (energyvae 368a65d /
f92d271), kept only so that benchmarks/mcmc_speed.py can time today's code against them in one
interleaved run. Not part of the library; do not import it elsewhere.

- ``OldMALA``: the latent MALA sampler (autograd energy + gradient, a host read of the mean
  acceptance every step, Python-float step size);
- ``old_ais_log_partition``: AIS with its own HMC / MALA transitions (autograd, host reads).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from energyvae.mcmc.ais import LOG_2PI, AISResult, _as_betas, _infer_device, _logmeanexp, _TARGET_ACCEPT
from energyvae.mcmc.trace import TraceRecorder
from energyvae.models.priors.samplers import MALAParams, _Sampler


def energy_and_grad(energy, z):
    """The old autograd energy + gradient (every energy, the GRBM included)."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        e = energy(z)
        (g,) = torch.autograd.grad(e.sum(), z)
    return e.detach(), g


class OldMALA(_Sampler):
    def __init__(self, latent_dim: int, p: MALAParams):
        super().__init__(latent_dim, p.steps, p.init_std)
        self.p = p

    def sample(self, energy, n, init=None, trace=False):
        p = self.p
        z = self.start(energy, max(n, p.min_chains), None)
        if init is not None:                                 # given starts, topped up to min_chains
            z = torch.cat([self.start(energy, n, init), z[:max(p.min_chains - len(init), 0)]])
        rec, c = TraceRecorder(trace), z.shape[0]
        log_h = torch.tensor(float(p.step_size)).log()
        scale = torch.ones_like(z[0])                        # M^(1/2): per-coordinate std
        e, g = energy_and_grad(energy, z)
        acc, tail = [], []
        for k in range(p.steps):
            h = float(log_h.exp())
            var = scale**2
            mean_fwd = z - h * var * g
            z_new = mean_fwd + (2 * h) ** 0.5 * scale * torch.randn_like(z)
            e_new, g_new = energy_and_grad(energy, z_new)
            mean_bwd = z_new - h * var * g_new
            log_q_fwd = -(((z_new - mean_fwd) / scale) ** 2).sum(-1) / (4 * h)
            log_q_bwd = -(((z - mean_bwd) / scale) ** 2).sum(-1) / (4 * h)
            log_alpha = torch.nan_to_num(e - e_new + log_q_bwd - log_q_fwd, nan=-math.inf).clamp(max=0)
            finite = torch.isfinite(e_new) & torch.isfinite(g_new).all(-1) & torch.isfinite(z_new).all(-1)
            log_alpha = torch.where(finite, log_alpha, torch.full_like(log_alpha, -math.inf))
            accept = torch.rand_like(log_alpha).log() < log_alpha
            z = torch.where(accept[:, None], z_new, z)
            e, g = torch.where(accept, e_new, e), torch.where(accept[:, None], g_new, g)
            a = float(log_alpha.exp().mean())
            if k < p.warmup:                                 # adapt: log h += 2 (a - target), bounded
                log_h = (log_h + 2.0 * (a - p.target_accept)).clamp(-30.0, 5.0)
                if p.precondition and c >= 8 and k + 1 in (p.warmup // 4, p.warmup // 2, 3 * p.warmup // 4):
                    scale = z.std(0).clamp(1e-3, 1e3)
                if k >= 3 * p.warmup // 4:                   # average the last quarter's log h
                    tail.append(float(log_h))
                if k == p.warmup - 1:
                    log_h = torch.tensor(sum(tail) / len(tail))
            else:
                acc.append(a)
            rec(z, e)
        stats = dict(warmup=p.warmup, acceptance=sum(acc) / len(acc) if acc else None,
                     step_size=float(log_h.exp()))
        return z[:n], rec.result(**stats)


def old_ais_log_partition(
    energy: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    *,
    n_chains: int = 256,
    n_temps: int = 1000,
    transition: str = "hmc",
    step_size: float | None = None,
    n_leapfrog: int = 10,
    init_std: float = 1.0,
    n_groups: int = 8,
    stderr_method: str = "delta",
    schedule: str | Sequence[float] | torch.Tensor = "sigmoid",
    step_jitter: float = 0.2,
    adapt: bool = True,
    target_accept: float | None = None,
    n_tune_chains: int | None = None,
    min_step: float = 1e-4,
    max_step: float | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    progress: bool = False,
) -> AISResult:
    """Estimate ``ln Z = ln ∫ exp(-energy(z)) dz`` over ``R^dim`` by AIS (see the module docstring).

    ``energy`` maps ``[N, dim]`` to ``[N]`` and must be differentiable in its input (it may be an
    ``nn.Module``; only gradients with respect to ``z`` are taken, parameters are left alone).
    ``n_temps`` is the number ``K`` of annealing steps (``K + 1`` inverse temperatures including 0
    and 1; ``K - 1`` transitions); ``schedule`` is ``"sigmoid"``, ``"linear"``, ``"geometric"`` or
    an explicit non-decreasing sequence from 0 to 1 (then ``n_temps`` is taken from it).
    ``step_size`` defaults to 0.1 (HMC leapfrog step) or 0.01 (MALA ``h``); it is the initial value
    when ``adapt``; ``step_jitter`` spreads each chain's step uniformly by that fraction.
    ``init_std`` is the std of the base Gaussian; pick it near the target's scale.
    ``n_tune_chains`` defaults to ``max(32, n_chains // 8)`` when ``adapt``.  Randomness comes from
    ``generator`` if given, else from a new generator seeded with ``seed`` (else the global RNG's
    next seed).  All chains advance together as one ``[n_chains + n_tune_chains, dim]`` tensor.
    ``device`` defaults to that of the energy's first parameter when ``energy`` is an ``nn.Module``,
    else the CPU: pass it explicitly for a plain callable (e.g. a lambda) wrapping a GPU model.
    """
    if transition not in _TARGET_ACCEPT:
        raise ValueError(f"unknown transition {transition!r}; expected 'hmc' or 'mala'")
    if n_chains < 1 or dim < 1 or n_leapfrog < 1 or init_std <= 0:
        raise ValueError("n_chains, dim and n_leapfrog must be >= 1 and init_std > 0")
    if stderr_method not in ("delta", "groups"):
        raise ValueError(f"unknown stderr_method {stderr_method!r}; expected 'delta' or 'groups'")
    if not 0 <= step_jitter < 1:
        raise ValueError(f"step_jitter must be in [0, 1), got {step_jitter}")
    n_groups = max(1, min(int(n_groups), n_chains))
    betas = _as_betas(schedule, n_temps)
    n_temps = betas.numel() - 1
    device = torch.device(device) if device is not None else _infer_device(energy)
    if generator is None:
        generator = torch.Generator(device=device)
        if seed is None:
            seed = int(torch.randint(2**62, (1,)).item())
        generator.manual_seed(int(seed))
    if step_size is None:
        step_size = 0.1 if transition == "hmc" else 0.01
    step = float(step_size)
    if max_step is None:  # HMC steps are lengths, MALA's h a variance: scale with the base
        max_step = 10.0 * init_std if transition == "hmc" else 10.0 * init_std**2
    target = float(target_accept) if target_accept is not None else _TARGET_ACCEPT[transition]
    if not adapt:
        n_tune = 0
    else:
        n_tune = int(n_tune_chains) if n_tune_chains is not None else max(32, n_chains // 8)
    n_total = n_chains + n_tune
    var0 = float(init_std) ** 2
    log_norm0 = -0.5 * dim * (LOG_2PI + math.log(var0))

    def randn(*shape):
        return torch.randn(*shape, generator=generator, device=device, dtype=dtype)

    def rand(n):
        return torch.rand(n, generator=generator, device=device, dtype=dtype)

    def energy_and_grad(z: torch.Tensor):
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            e = energy(z)
            if e.shape != (z.shape[0],):
                raise ValueError(f"energy must map [N, {dim}] to [N], got output shape {tuple(e.shape)}")
            (g,) = torch.autograd.grad(e.sum(), z)
        return e.detach(), g.detach()

    def base_logp(z):  # ln p_0(z), normalised
        return -0.5 * (z * z).sum(1) / var0 + log_norm0

    # U_b(z) = -f_b(z) up to the constant of ln p_0 (irrelevant to the Metropolis ratios).
    def potential(z, e, b):
        return (1 - b) * 0.5 * (z * z).sum(1) / var0 + b * e

    def potential_grad(z, g, b):
        return (1 - b) * z / var0 + b * g

    z = randn(n_total, dim) * float(init_std)
    e, g = energy_and_grad(z)
    log_w = torch.zeros(n_total, dtype=torch.float64, device=device)
    acc_sum = 0.0
    step_sizes = []

    it = range(1, n_temps + 1)
    if progress:
        try:
            from tqdm.auto import tqdm

            it = tqdm(it, desc=f"AIS ({transition})", leave=False)
        except ImportError:  # pragma: no cover - tqdm is optional
            pass

    for t in it:
        b_prev, b = float(betas[t - 1]), float(betas[t])
        log_w += (b - b_prev) * (-e - base_logp(z)).to(torch.float64)
        if t == n_temps:
            break
        step_sizes.append(step)
        # Per-chain step drawn independently of the state: a mixture of invariant kernels.
        eps = step * (1 + step_jitter * (2 * rand(n_total) - 1))[:, None]
        u0 = potential(z, e, b)
        if transition == "hmc":
            p = randn(n_total, dim)
            k0 = 0.5 * (p * p).sum(1)
            zn, en, gn = z, e, g
            p = p - 0.5 * eps * potential_grad(zn, gn, b)
            for i in range(n_leapfrog):
                zn = zn + eps * p
                en, gn = energy_and_grad(zn)
                if i < n_leapfrog - 1:
                    p = p - eps * potential_grad(zn, gn, b)
            p = p - 0.5 * eps * potential_grad(zn, gn, b)
            log_alpha = u0 + k0 - potential(zn, en, b) - 0.5 * (p * p).sum(1)
        else:  # mala
            grad0 = potential_grad(z, g, b)
            zn = z - eps * grad0 + torch.sqrt(2 * eps) * randn(n_total, dim)
            en, gn = energy_and_grad(zn)
            grad1 = potential_grad(zn, gn, b)
            log_q_fwd = -((zn - z + eps * grad0) ** 2).sum(1) / (4 * eps[:, 0])
            log_q_bwd = -((z - zn + eps * grad1) ** 2).sum(1) / (4 * eps[:, 0])
            log_alpha = u0 - potential(zn, en, b) + log_q_bwd - log_q_fwd
        log_alpha = torch.nan_to_num(log_alpha, nan=-math.inf).clamp(max=0.0)
        finite = torch.isfinite(en) & torch.isfinite(gn).all(1) & torch.isfinite(zn).all(1)
        log_alpha = torch.where(finite, log_alpha, torch.full_like(log_alpha, -math.inf))
        accept = torch.log(rand(n_total)) < log_alpha
        z = torch.where(accept[:, None], zn, z)
        e = torch.where(accept, en, e)
        g = torch.where(accept[:, None], gn, g)
        alpha = log_alpha.exp()
        acc_sum += float(alpha[:n_chains].mean())
        if adapt:
            tune_acc = float(alpha[n_chains:].mean())
            step = min(max(step * (1.02 if tune_acc > target else 0.98), min_step), max_step)

    lw = log_w[:n_chains].detach().cpu()
    log_z = float(_logmeanexp(lw))
    groups = torch.tensor_split(lw, n_groups)
    group_log_z = torch.stack([_logmeanexp(gr) for gr in groups])
    stderr_groups = float(group_log_z.std() / math.sqrt(n_groups)) if n_groups > 1 else float("nan")
    wn = torch.softmax(lw, 0)
    ess = float(1.0 / (wn * wn).sum())
    stderr_delta = math.sqrt(max(1.0 / ess - 1.0 / n_chains, 0.0))
    if not math.isfinite(log_z):
        ess, stderr_delta = 0.0, float("nan")
    n_trans = max(n_temps - 1, 1)
    return AISResult(
        log_z=log_z,
        stderr=stderr_delta if stderr_method == "delta" else stderr_groups,
        ess=ess,
        acceptance=acc_sum / n_trans if n_temps > 1 else float("nan"),
        log_weights=lw,
        n_chains=n_chains,
        n_temps=n_temps,
        stderr_delta=stderr_delta,
        stderr_groups=stderr_groups,
        group_log_z=group_log_z,
        step_sizes=torch.tensor(step_sizes, dtype=torch.float64),
        samples=z[:n_chains].detach(),
        transition=transition,
    )
