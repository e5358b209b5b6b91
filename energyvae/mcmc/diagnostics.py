"""Convergence diagnostics of MCMC chains: split R-hat and the multi-chain effective sample size.

Both follow Gelman et al., *Bayesian Data Analysis* (3rd ed., Sec. 11.4-11.5), close to Stan's
implementation (without its final + rho_even correction of tau, and without the rank normalisation of Vehtari et al. 2021, which matters for heavy tails, not
here: the traced statistics are energies and coordinate means of well-behaved latent chains).
A trace is ``[T, C]``: T steps of C chains of one scalar statistic.

- **Split R-hat**: every chain is cut into two halves, giving 2C sequences of length
  n = floor(T / 2); with W the mean within-sequence variance and B / n the variance of the
  sequence means, ``var+ = (n - 1) / n W + B / n`` and ``R-hat = sqrt(var+ / W)``. It is ~1
  when all sequences sample the same law and > 1 when they still drift (the halves differ) or
  have not yet forgotten their different starts. Even for stationary chains it is about
  1 + (tau - 1) / (2 n), tau the integrated autocorrelation time, so Vehtari et al.'s 1.01
  needs sequences of ~50 tau steps: affordable for long chains, not for the few hundred steps of
  a latent sampler whose energy trace has tau ~ 10 (MALA in 64 dimensions). We call chains
  mixed when R-hat < 1.05 (1 + (tau - 1) / (2 n) for tau = 10 and n = 100: 1.045) and
  their **drift** is small: the change of the cross-chain mean of the statistic from the
  window's first to its last step, in units of its standard error sqrt((v_first + v_last) / C)
  (conservative: it ignores the positive correlation of the two times), below 4 in absolute
  value. Chains that have not reached the target fail both (the papers' 100 Langevin steps of
  h = 0.01 on a trained 64 x 64 GRBM: R-hat ~ 3.6).
- **ESS**: ``C n / (1 + 2 sum_t rho_t)`` with the multi-chain autocorrelation
  ``rho_t = 1 - (W - mean_c acov_c(t)) / var+`` summed in pairs until the first negative pair
  (Geyer's initial positive sequence, made monotone).

``chain_diagnostics`` takes the statistics a sampler traced (``ChainTrace`` of
models/priors/ebm.py) and reports them on the last half of the post-warm-up trace: adaptive
steps are not stationary by design, and the first half of the rest is burn-in.
"""
from __future__ import annotations

import math

import torch

RHAT_MIXED = 1.05
DRIFT_MIXED = 4.0


def _as_trace(x) -> torch.Tensor:
    x = torch.as_tensor(x, dtype=torch.float64)
    if x.dim() != 2 or x.shape[0] < 4 or x.shape[1] < 1:
        raise ValueError(f"a trace is [steps >= 4, chains >= 1], got shape {tuple(x.shape)}")
    return x


def split_rhat(trace) -> float:
    """Split R-hat of a ``[T, C]`` trace (module docstring); nan if a statistic is constant."""
    x = _as_trace(trace)
    n = x.shape[0] // 2
    seqs = torch.cat([x[:n], x[x.shape[0] - n:]], 1)                 # [n, 2C]
    w = seqs.var(0, unbiased=True).mean()
    b_over_n = seqs.mean(0).var(unbiased=True) if seqs.shape[1] > 1 else torch.zeros((), dtype=x.dtype)
    var_plus = (n - 1) / n * w + b_over_n
    if w <= 0:
        return math.inf if b_over_n > 0 else math.nan
    return float(torch.sqrt(var_plus / w))


def _autocov(x: torch.Tensor) -> torch.Tensor:
    """Autocovariance of each column of ``[T, C]`` at lags 0..T-1 (biased, as in Stan), by FFT."""
    t = x.shape[0]
    xc = x - x.mean(0)
    f = torch.fft.rfft(xc, n=2 * t, dim=0)
    return torch.fft.irfft(f * f.conj(), n=2 * t, dim=0)[:t] / t


def effective_sample_size(trace) -> float:
    """Multi-chain ESS of a ``[T, C]`` trace (module docstring); nan if the statistic is constant."""
    x = _as_trace(trace)
    t, c = x.shape
    acov = _autocov(x)                                               # [T, C]
    w = acov[0].mean() * t / (t - 1)                                 # mean within-chain variance
    var_plus = w * (t - 1) / t + (x.mean(0).var(unbiased=True) if c > 1 else 0.0)
    if var_plus <= 0:
        return math.nan
    rho = 1 - (w - acov.mean(1)) / var_plus                          # rho_0 = 1 (up to rounding)
    rho[0] = 1.0
    pairs = rho[: (t // 2) * 2].reshape(-1, 2).sum(1)                # Gamma_k = rho_2k + rho_2k+1
    keep = torch.nonzero(pairs < 0)
    k = int(keep[0]) if len(keep) else len(pairs)
    gam = torch.cummin(pairs[:k], 0).values if k else pairs[:0]      # monotone sequence
    tau = -1 + 2 * float(gam.sum()) if k else 1.0
    return float(c * t / max(tau, 1.0 / math.log10(max(c * t, 10))))


def drift_z(trace) -> float:
    """(cross-chain mean at the last step - at the first) / sqrt((v_first + v_last) / C)."""
    x = _as_trace(trace)
    c = x.shape[1]
    if c < 2:
        return math.nan
    se = float(((x[0].var(unbiased=True) + x[-1].var(unbiased=True)) / c).sqrt())
    d = float(x[-1].mean() - x[0].mean())
    return d / se if se > 0 else (0.0 if d == 0 else math.inf)


def chain_diagnostics(stats: dict[str, torch.Tensor], warmup: int = 0) -> dict:
    """Split R-hat, ESS and drift of every traced statistic ``{name: [T, C]}`` on the last half
    of the post-warm-up steps, with ``rhat_max``, ``ess_min``, ``drift_max`` (absolute) and
    ``mixed`` (every R-hat < 1.05 and every |drift| < 4)."""
    out: dict = {}
    rhats, esss, drifts = [], [], []
    for name, tr in stats.items():
        t = tr.shape[0]
        window = tr[max(warmup, (warmup + t) // 2):]
        if window.shape[0] < 4:
            out[f"rhat_{name}"] = out[f"ess_{name}"] = out[f"drift_{name}"] = math.nan
            continue
        r, e, d = split_rhat(window), effective_sample_size(window), drift_z(window)
        out[f"rhat_{name}"], out[f"ess_{name}"], out[f"drift_{name}"] = r, e, d
        rhats.append(r)
        esss.append(e)
        drifts.append(abs(d))

    def pick(f, xs):
        xs = [x for x in xs if not math.isnan(x)]
        return f(xs) if xs else math.nan

    out["rhat_max"], out["ess_min"], out["drift_max"] = pick(max, rhats), pick(min, esss), pick(max, drifts)
    finite = [torch.isfinite(tr).all() for tr in stats.values()]
    # mixed: every statistic finite, every R-hat below the threshold (a constant statistic, whose
    # R-hat is nan, counts only if another one is informative), every |drift| below its own
    out["mixed"] = bool(all(finite) and len(rhats) == len(stats) and rhats
                        and not math.isnan(out["rhat_max"]) and out["rhat_max"] < RHAT_MIXED
                        and all(d < DRIFT_MIXED for d in drifts if not math.isnan(d))
                        and not any(math.isinf(r) for r in rhats))
    return out
