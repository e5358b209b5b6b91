"""Annealed importance sampling (AIS) for the log-partition function of an unnormalised energy.

Estimates ``ln Z = ln ∫ exp(-E(z)) dz`` for any differentiable ``energy: Tensor[N, d] -> Tensor[N]``
(Neal 2001), e.g. the EBM priors of docs/methods.md §3, whose likelihoods need ``ln Z``.

Path and weights
----------------
The base is the *normalised* Gaussian ``p_0 = N(0, init_std^2 I)`` and the path is geometric::

    f_t(z) = (1 - b_t) ln p_0(z) + b_t (-E(z)),   0 = b_0 < b_1 < ... < b_K = 1,  K = n_temps.

Chains start from exact samples ``z_0 ~ p_0``; for ``t = 1..K`` the log-weight gains
``f_t(z_{t-1}) - f_{t-1}(z_{t-1}) = (b_t - b_{t-1}) (-E(z_{t-1}) - ln p_0(z_{t-1}))`` and then (for
``t < K``) ``z_t ~ T_t(z_{t-1}, .)`` with a kernel ``T_t`` that leaves ``exp(f_t)`` invariant.
Since ``Z_0 = 1``, ``E[exp(log_w)] = Z`` exactly, for any number of temperatures; too few
temperatures or poor mixing only raise the variance of the weights.  ``ln`` of the unbiased
``Z``-estimate is biased *low* (Jensen): the estimate is a stochastic lower bound on ``ln Z``,
with a bias of about ``stderr^2 / 2`` once the weights are well behaved.

Transitions
-----------
Both are the kernels of :mod:`energyvae.mcmc.kernels` (``hmc_step``, ``mala_step``) on the tempered
potential, with the step size adapted on the device (``StepSize``, multiplicative rule).
``"hmc"``: Hamiltonian Monte Carlo, unit mass, ``n_leapfrog`` leapfrog steps of size
``step_size`` and a Metropolis accept/reject.  ``"mala"``: the Metropolis-adjusted Langevin
algorithm, the Langevin step ``z' = z - h grad U(z) + sqrt(2h) xi`` (``h = step_size``, the
parametrisation of docs/methods.md Eq. 13) followed by a Metropolis-Hastings correction.  Both leave
each intermediate density exactly invariant.  *Unadjusted* Langevin (no accept/reject) is
deliberately not offered: its stationary law differs from ``exp(f_t)`` by an O(h) error, which
breaks the invariance that AIS's unbiasedness rests on, so its estimate of ``ln Z`` is biased by an
amount that does not vanish with more chains.  Proposals whose energy is non-finite are rejected.

Step-size adaptation (``adapt=True``, default)
---------------------------------------------
The step size is one scalar shared by all chains, updated once per temperature towards a target
acceptance rate (``target_accept``; default 0.8 for HMC, 0.574 for MALA): multiplied by 1.02 when
the mean Metropolis acceptance probability at the previous temperature was above the target and
by 0.98 otherwise (the rule of Wu et al. 2017), clamped to ``[min_step, max_step]`` (``max_step``
defaults to ``10 init_std`` for HMC and ``10 init_std^2`` for MALA, whose ``h`` is a variance).
The HMC target is above the sampling-optimal 0.65 because a rejected chain lags behind the moving
intermediate density, which costs AIS more than short steps do: on the test Gaussians and GRBMs
0.8-0.9 gave a higher effective sample size than 0.65.  To keep the estimate exactly valid, that
acceptance rate is measured on ``n_tune_chains`` extra *tuning chains*: they are annealed in the
same batch tensor but with their own random numbers, and their weights are discarded.  The
step-size sequence is thus independent of the estimation chains, which see a (random but)
predetermined sequence of invariant kernels, so their weights stay independent and exactly
unbiased.  (Adapting on the estimation chains' own acceptance would let each kernel
depend on those chains' past and introduce an O(1/n_chains) bias.)  With ``adapt=False`` the
step size is fixed and no tuning chains are run.  At every transition each chain moreover uses
``step * U(1 - step_jitter, 1 + step_jitter)``, drawn independently of its state (a mixture of
invariant kernels, hence invariant): this breaks the near-periodic HMC trajectories that
otherwise make a fixed trajectory length return close to its start for some directions, and in
tests it roughly doubled the effective sample size of 10-leapfrog HMC on an anisotropic Gaussian.

Error estimate
--------------
``log_z`` is the log-mean-exp of all ``n_chains`` log-weights (chains are independent).  Two
standard errors of it are computed and both reported; ``stderr_method`` picks which is ``stderr``:

- ``"delta"`` (default): the delta method on the weights,
  ``stderr_delta = sqrt(Var(w) / (n E[w]^2)) = sqrt(1/ess - 1/n_chains)`` (plug-in moments);
- ``"groups"``: the chains are split into ``n_groups`` groups, each gives
  ``ln Z_g = logmeanexp`` of its weights, and ``stderr_groups = std(ln Z_g) / sqrt(n_groups)``
  (sample std), to first order the standard error of the all-chain estimate.

The delta method is the default because it uses all ``n_chains`` weights: the group value rests
on ``n_groups - 1`` degrees of freedom (about 27 % relative error with 8 groups) and in tests
under-stated the error by a factor ~2 in a few percent of seeds.  Both become unreliable when a
few weights dominate (small ``ess``), which is then the warning sign to heed; the spread of
``group_log_z`` is a useful cross-check.  ``ess = (sum w)^2 / sum w^2``.

The exact ``ln Z`` of a small Gaussian-Bernoulli RBM, AIS's oracle in the tests, is in
:mod:`energyvae.mcmc.grbm`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from .kernels import StepSize, hmc_step, mala_step

__all__ = [
    "AISResult",
    "ais_log_partition",
    "annealing_schedule",
]

LOG_2PI = math.log(2 * math.pi)
_TARGET_ACCEPT = {"hmc": 0.8, "mala": 0.574}


@dataclass
class AISResult:
    """Result of :func:`ais_log_partition`.

    ``log_z``: log-mean-exp of all log-weights; ``stderr``: its standard error by the chosen
    ``stderr_method`` (delta method by default); ``ess``: effective sample size
    ``(sum w)^2 / sum w^2``; ``acceptance``: mean Metropolis acceptance probability over the
    estimation chains and the transitions;
    ``log_weights``: ``[n_chains]`` (float64, CPU); ``n_chains``, ``n_temps``: as run.
    Extras: ``stderr_delta`` and ``stderr_groups`` (both standard errors), ``group_log_z``
    (``[n_groups]``), ``step_sizes`` (``[n_temps - 1]``, the step size used at each transition),
    ``samples`` (final chain states ``[n_chains, dim]``, approximately from the target once
    reweighted by ``log_weights``), ``transition``.
    """

    log_z: float
    stderr: float
    ess: float
    acceptance: float
    log_weights: torch.Tensor
    n_chains: int
    n_temps: int
    stderr_delta: float = float("nan")
    stderr_groups: float = float("nan")
    group_log_z: torch.Tensor | None = None
    step_sizes: torch.Tensor | None = None
    samples: torch.Tensor | None = field(default=None, repr=False)
    transition: str = "hmc"


def annealing_schedule(n_temps: int, schedule: str = "sigmoid", *, delta: float = 4.0,
                       geometric_start: float = 1e-4) -> torch.Tensor:
    """Inverse temperatures ``b_0 = 0 < ... < b_K = 1`` (``K = n_temps``), float64 ``[K + 1]``.

    ``"linear"``: evenly spaced.  ``"sigmoid"`` (Grosse et al. 2013):
    ``s_t = sigmoid(delta (2t/K - 1))`` rescaled to run from 0 to 1, denser at both ends.
    ``"geometric"``: ``b_1..b_K`` log-spaced from ``geometric_start`` to 1, denser near 0.
    """
    if n_temps < 1:
        raise ValueError(f"n_temps must be >= 1, got {n_temps}")
    t = torch.arange(n_temps + 1, dtype=torch.float64)
    if schedule == "linear":
        b = t / n_temps
    elif schedule == "sigmoid":
        s = torch.sigmoid(delta * (2 * t / n_temps - 1))
        b = (s - s[0]) / (s[-1] - s[0])
    elif schedule == "geometric":
        if n_temps == 1:
            b = t
        else:
            b = torch.cat([torch.zeros(1, dtype=torch.float64),
                           torch.logspace(math.log10(geometric_start), 0.0, n_temps,
                                          dtype=torch.float64)])
    else:
        raise ValueError(f"unknown schedule {schedule!r}; expected 'sigmoid', 'linear' or 'geometric'")
    b[0], b[-1] = 0.0, 1.0
    return b


def _as_betas(schedule, n_temps: int) -> torch.Tensor:
    if isinstance(schedule, str):
        return annealing_schedule(n_temps, schedule)
    b = torch.as_tensor(schedule, dtype=torch.float64).flatten().cpu()
    if b.numel() < 2 or b[0] != 0 or b[-1] != 1 or bool((b[1:] < b[:-1]).any()):
        raise ValueError("an explicit schedule must be non-decreasing from 0 to 1 with >= 2 entries")
    return b


def _logmeanexp(x: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(x, 0) - math.log(x.shape[0])


def _infer_device(energy) -> torch.device:
    if isinstance(energy, torch.nn.Module):
        for p in energy.parameters():
            return p.device
        for b in energy.buffers():
            return b.device
    return torch.device("cpu")


def ais_log_partition(
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
    energy_and_grad: Callable[[torch.Tensor], tuple] | None = None,
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
    ``energy_and_grad``: ``z -> (energy(z), grad_z energy(z))`` when the energy has a cheaper
    form than autograd (``LatentEnergy.energy_and_grad``: the GRBM's is two matmuls).
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
    step = float(step_size)  # the initial h; adapted on the device below
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

    own_grad = energy_and_grad

    def energy_and_grad(z: torch.Tensor):
        if own_grad is not None:
            e, g = own_grad(z)
            return e.detach(), g.detach()
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

    def tempered(b):
        """The kernels' fn at inverse temperature b: (U_b, grad U_b, E, grad E); the untempered
        energy rides along for the weights."""
        def fn(z):
            e, g = energy_and_grad(z)
            return potential(z, e, b), potential_grad(z, g, b), e, g
        return fn

    z = randn(n_total, dim) * float(init_std)
    e, g = energy_and_grad(z)
    log_w = torch.zeros(n_total, dtype=torch.float64, device=device)
    acc_sum = torch.zeros((), dtype=torch.float64, device=device)     # on the device: no host reads
    step = StepSize(step, target, rule="multiplicative", lo=min_step, hi=max_step, device=device,
                    dtype=torch.float64)
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
        h = step.h
        step_sizes.append(h)
        # Per-chain step drawn independently of the state: a mixture of invariant kernels.
        eps = h.to(dtype) * (1 + step_jitter * (2 * rand(n_total) - 1))
        state = (z, potential(z, e, b), potential_grad(z, g, b), e, g)
        if transition == "hmc":
            state, log_alpha = hmc_step(state, tempered(b), eps, n_leapfrog, generator=generator)
        else:  # mala
            state, log_alpha = mala_step(state, tempered(b), eps, generator=generator)
        z, e, g = state[0], state[3], state[4]
        alpha = log_alpha.exp()
        acc_sum += alpha[:n_chains].mean()
        if adapt:
            step.update(alpha[n_chains:].mean())

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
        acceptance=float(acc_sum) / n_trans if n_temps > 1 else float("nan"),
        log_weights=lw,
        n_chains=n_chains,
        n_temps=n_temps,
        stderr_delta=stderr_delta,
        stderr_groups=stderr_groups,
        group_log_z=group_log_z,
        step_sizes=torch.stack(step_sizes).cpu() if step_sizes else torch.zeros(0, dtype=torch.float64),
        samples=z[:n_chains].detach(),
        transition=transition,
    )
