"""Energy-score reconstruction objectives: EnVAE (``energy_score``) and FEnVAE (``fast_energy_score``).

Paper 000 ("Likelihood-Free VAEs"; see ``METHODS.md`` section 1 for the clean formulas). The
decoder g is deterministic and the reconstruction term is the energy score of the push-forward
P = g_# q(z|x) at the data point x (Gneiting & Raftery 2007), a proper scoring rule:

    S(P, x) = E||X - x||^beta - 1/2 E||X - X'||^beta,      X, X' iid ~ P,   beta in (0, 2]
                                                                       (paper Eqs. 1-2).

Conventions (both objectives):

- ``||.||`` is the Euclidean norm over *all* data dimensions of one example (an image
  [C, H, W] is flattened to n = C*H*W values); the loss is one number per example.
- ``beta`` must lie in (0, 2]: the score is strictly proper for beta in (0, 2) and proper for
  beta = 2, where it reduces to ||E X - x||^2 and carries no information about the spread.
- ``es_fit`` logs the (batch mean of the) estimate of E||X - x||^beta and ``es_spread`` that of
  1/2 E||X - X'||^beta, so ``recon = es_fit - es_spread``.
- Gradients stay finite where a distance is exactly 0 (the i == j pairs, or two identical
  decodings): such pairs are masked out *before* the power, so d||.||^beta / d. is taken as 0
  there instead of 0 * inf = nan.

EnVAE (paper 000, Eqs. 3 and 5, ``METHODS.md`` section 1), M >= 2 samples
x_i = g(z_i), z_i ~ q(z|x) (reparameterised, decoded in one batched call):

    L = 1/M sum_i ||x_i - x||^beta - 1/(2 M (M-1)) sum_i sum_{j != i} ||x_i - x_j||^beta.

The pairwise term uses the unbiased U-statistic denominator M(M-1) (``scoringrules``'
``estimator="fair"``), so E[L] = S(P, x) exactly for every M >= 2. The biased M^2 version
(``estimator="nrg"``) over-estimates S by 1/(2M) E||X - X'||^beta. Note for beta = 2 the
unbiased estimator is ||xbar - x||^2 - tr(C)/M (xbar the sample mean, C the unbiased sample
covariance), whose expectation is ||E X - x||^2; the *biased* one is exactly ||xbar - x||^2
(the paper's Appendix 6.3 states the MSE form for Eq. 5; exact only in expectation).
Pairwise distances come from ``torch.cdist`` (direct differences, not the Gram-matrix form,
which loses precision for close samples), in chunks of rows i so that at most
B x chunk x M x n difference values exist at once (the CUDA backward of ``cdist`` forms such
a buffer; the CPU one does not). Autograd still keeps the B x M x M distances for backward.

FEnVAE (paper 000, Eq. 14, from the linearisation of Eqs. 10-11), one sample: eps ~ N(0, I),
z* = mu + sigma * eps,

    L* = ||g(z*) - x||^beta - 1/2 ||g(mu + sqrt(2) (z* - mu)) - g(mu)||^beta.

Why sqrt(2): with g(z) ~ g(mu) + J (z - mu), two independent draws differ by
X - X' = J sigma (eps - eps') and eps - eps' ~ N(0, 2 I) ~ sqrt(2) eps; hence
g(mu + sqrt(2) sigma eps) - g(mu) = sqrt(2) J sigma eps has the law of X - X', and for a
linear decoder the second term has exactly the expectation of the EnVAE pairwise term
(tested). The three latents z*, mu, mu + sqrt(2) sigma eps are stacked and decoded in one call.
``variant: double`` (paper Table 5) draws an independent eps' for the dispersion term.
FEnVAE needs a stochastic posterior (sigma); with a point-mass posterior it raises.

Eq. 14 is not bounded below for a nonlinear decoder: its fit is taken at radius sigma and its
spread at radius sqrt(2) sigma around a different centre, so a decoder that is flat near mu and
steep further out (with sigma growing, which the spread rewards) drives it to -infinity. We saw
exactly that on digits and Fashion-MNIST (loss ~ -1e8 within 3000 steps, posterior log-variance
at its clamp; ``benchmarks/results/envae_table1_*.md``), whereas the exact score is >= 0. Our
library therefore adds ``variant: antithetic``, a one-sample local-linear surrogate that keeps
the triangle-inequality bound. With the antithetic pair X+ = g(mu + sigma eps),
X- = g(mu - sigma eps) (two decodes, one call):

    L_a = 1/2 (||X+ - x||^beta + ||X- - x||^beta) - 2^(-1 - beta/2) ||X+ - X-||^beta.

- Fit: -eps has the law of eps, so its expectation is E||X - x||^beta exactly, for any g.
- Spread: for a linear g, X+ - X- = 2 J sigma eps whereas X - X' has the law of
  sqrt(2) J sigma eps, so E||X+ - X-||^beta = 2^(beta/2) E||X - X'||^beta and the coefficient
  2^(-1-beta/2) makes it 1/2 E||X - X'||^beta: unbiased under the paper's linearisation.
- Bound: ||a - b||^beta <= c_beta (||a||^beta + ||b||^beta) with c_beta = max(1, 2^(beta-1)),
  and 2^(-1-beta/2) c_beta <= 1/2 for beta in (0, 2], so L_a >= 0 for every decoder.
It costs two decodes per example, like EnVAE with M = 2 (which is exactly unbiased for any g).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from ...errors import ConfigError
from ...registry import check
from ..posterior import DiagGaussian
from . import RECONSTRUCTIONS, Decode, Reconstruction

SQRT2 = math.sqrt(2.0)
#: automatic chunking keeps B x chunk x M x n difference values under this many bytes
PAIRWISE_BUDGET_BYTES = 256 * 2 ** 20


class StochasticPosteriorRequired(ConfigError, ValueError):
    """An objective that needs q(z|x)'s standard deviation got a point-mass posterior."""


def _check_beta(beta: float) -> None:
    if not 0 < beta <= 2:
        raise ValueError(f"beta must be in (0, 2], got {beta}")


def _pow_masked(r: torch.Tensor, beta: float, keep: torch.Tensor | None = None) -> torch.Tensor:
    """r^beta for distances r >= 0, with 0 (and a zero gradient) where r == 0 or ~keep."""
    pos = r > 0
    if keep is not None:
        pos = pos & keep
    safe = torch.where(pos, r, torch.ones_like(r))
    return torch.where(pos, safe if beta == 1 else safe.pow(beta), torch.zeros_like(r))


def _norm_pow(diff: torch.Tensor, beta: float) -> torch.Tensor:
    """||diff||^beta over the last dimension, with a finite gradient at diff = 0."""
    sq = diff.pow(2).sum(-1)
    pos = sq > 0
    safe = torch.where(pos, sq, torch.ones_like(sq))
    return torch.where(pos, safe.pow(0.5 * beta), torch.zeros_like(sq))


def auto_chunk(batch: int, m: int, dim: int, itemsize: int = 4,
               budget: int = PAIRWISE_BUDGET_BYTES) -> int:
    """Rows i per pairwise chunk so that batch * chunk * m * dim values fit in ``budget`` bytes."""
    per_row = max(1, batch * m * dim * itemsize)
    return int(min(m, max(1, budget // per_row)))


def pairwise_mean(samples: torch.Tensor, beta: float = 1.0, chunk: int | None = None) -> torch.Tensor:
    """1/(M(M-1)) sum_{i != j} ||x_i - x_j||^beta per example; ``samples`` is [B, M, D]."""
    b, m, d = samples.shape
    if m < 2:
        raise ValueError(f"the pairwise term needs M >= 2 samples, got {m}")
    c = chunk or auto_chunk(b, m, d, samples.element_size())
    cols = torch.arange(m, device=samples.device)
    total = samples.new_zeros(b)
    for start in range(0, m, c):                        # loop over chunks of rows, not samples
        stop = min(m, start + c)
        r = torch.cdist(samples[:, start:stop], samples, p=2.0,
                        compute_mode="donot_use_mm_for_euclid_dist")        # [B, c, M]
        keep = cols[start:stop, None] != cols[None, :]                       # drop i == j
        total = total + _pow_masked(r, beta, keep).sum((1, 2))
    return total / (m * (m - 1))


def energy_score_terms(samples: torch.Tensor, x: torch.Tensor, beta: float = 1.0,
                       chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit, spread) per example, fit = 1/M sum_i ||x_i - x||^beta and
    spread = 1/(2M(M-1)) sum_{i != j} ||x_i - x_j||^beta; ``samples`` [M, B, D], ``x`` [B, D]."""
    _check_beta(beta)
    if samples.dim() != 3 or x.dim() != 2 or samples.shape[1:] != x.shape:
        raise ValueError(f"expected samples [M, B, D] and x [B, D], got {tuple(samples.shape)} "
                         f"and {tuple(x.shape)}")
    fit = _norm_pow(samples - x, beta).mean(0)
    spread = 0.5 * pairwise_mean(samples.transpose(0, 1), beta, chunk)
    return fit, spread


def energy_score(samples: torch.Tensor, x: torch.Tensor, beta: float = 1.0,
                 chunk: int | None = None) -> torch.Tensor:
    """Unbiased energy-score estimate [B] of the ensemble ``samples`` [M, B, D] at ``x`` [B, D]."""
    fit, spread = energy_score_terms(samples, x, beta, chunk)
    return fit - spread


def fast_energy_score_terms(x: torch.Tensor, q: DiagGaussian, decode: Decode, beta: float = 1.0,
                            variant: str = "single") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FEnVAE (Eq. 14): (fit [B], spread [B], z* [B, m]) with fit = ||g(z*) - x||^beta and
    spread = 1/2 ||g(mu + sqrt2 sigma eps') - g(mu)||^beta (eps' = eps unless ``double``);
    ``antithetic``: the bounded two-decode variant of the module docstring."""
    _check_beta(beta)
    if variant not in ("single", "double", "antithetic"):
        raise ValueError(f"variant must be 'single', 'double' or 'antithetic', got {variant!r}")
    if q.deterministic:
        raise StochasticPosteriorRequired(
            "fast_energy_score needs a stochastic posterior (its dispersion term uses sigma); "
            "got a point mass (posterior: delta): use posterior gaussian/fixed or energy_score")
    mu, sigma = q.mean, q.std
    eps = torch.randn_like(mu)
    z_star = mu + sigma * eps
    if variant == "antithetic":
        g_plus, g_minus = decode(torch.stack([z_star, mu - sigma * eps])).flatten(2).unbind(0)
        xf = x.flatten(1)
        fit = 0.5 * (_norm_pow(g_plus - xf, beta) + _norm_pow(g_minus - xf, beta))
        spread = 2.0 ** (-1.0 - 0.5 * beta) * _norm_pow(g_plus - g_minus, beta)
        return fit, spread, z_star
    eps2 = eps if variant == "single" else torch.randn_like(mu)
    z_wide = mu + SQRT2 * sigma * eps2                   # = mu + sqrt2 (z* - mu) for "single"
    out = decode(torch.stack([z_star, mu, z_wide]))      # one decoder call: [3, B, ...]
    g_star, g_mu, g_wide = out.flatten(2).unbind(0)
    fit = _norm_pow(g_star - x.flatten(1), beta)
    spread = 0.5 * _norm_pow(g_wide - g_mu, beta)
    return fit, spread, z_star


def _logs(fit: torch.Tensor, spread: torch.Tensor) -> dict:
    return {"es_fit": fit.mean().detach(), "es_spread": spread.mean().detach()}


class _DeterministicDecoder(Reconstruction):
    """A decoder read as a point in data space: its raw output (``output: identity``) or a
    sigmoid mapped onto the data's value range (``output: sigmoid``). The sigmoid keeps the
    FEnVAE surrogate bounded below: Eq. 14 compares a spread at radius sqrt(2) sigma with a fit
    at radius sigma, so an unbounded decoder that is flat near mu and steep further out drives
    it to -infinity (seen on digits: loss -1e8 within 3000 steps), whereas the exact energy
    score is >= 0 by the triangle inequality."""
    likelihood = False

    def __init__(self, output: str = "identity", value_range: tuple[float, float] | None = None):
        super().__init__()
        self.output = output
        self.lo, self.hi = (float(value_range[0]), float(value_range[1])) if value_range else (0.0, 1.0)

    def mean(self, out):
        return out if self.output == "identity" else self.lo + (self.hi - self.lo) * torch.sigmoid(out)


class EnergyScore(_DeterministicDecoder):
    """EnVAE: the M-sample unbiased energy score of g_# q(z|x) at x (see the module docstring)."""

    def __init__(self, samples: int = 50, beta: float = 1.0, chunk: int | None = None,
                 output: str = "identity", value_range=None):
        super().__init__(output, value_range)
        if samples < 2:
            raise ValueError(f"samples must be >= 2, got {samples}")
        _check_beta(beta)
        self.samples, self.beta, self.chunk = samples, beta, chunk

    def loss(self, x, q, decode):
        z = q.rsample(self.samples)                      # [M, B, m]
        out = self.mean(decode(z))                       # one decoder call: [M, B, ...]
        fit, spread = energy_score_terms(out.flatten(2), x.flatten(1), self.beta, self.chunk)
        return fit - spread, z[0], _logs(fit, spread)

    def extra_repr(self):
        return f"samples={self.samples}, beta={self.beta}, chunk={self.chunk}"


class FastEnergyScore(_DeterministicDecoder):
    """FEnVAE: the one-sample local-linear energy score (paper 000, Eq. 14, or the bounded
    ``antithetic`` variant, the default)."""

    def __init__(self, beta: float = 1.0, variant: str = "antithetic", output: str = "identity",
                 value_range=None):
        super().__init__(output, value_range)
        _check_beta(beta)
        self.beta, self.variant = beta, variant

    def loss(self, x, q, decode):
        fit, spread, z = fast_energy_score_terms(x, q, lambda t: self.mean(decode(t)), self.beta,
                                                 self.variant)
        return fit - spread, z, _logs(fit, spread)

    def extra_repr(self):
        return f"beta={self.beta}, variant={self.variant}"


def _check_beta_param(beta: float) -> None:
    check(0 < beta <= 2, f"beta must be in (0, 2], got {beta}")


@dataclass
class EnergyScoreParams:
    samples: int = 50                 # M decoded posterior samples per example (>= 2)
    beta: float = 1.0                 # exponent of the norm, in (0, 2]
    chunk: int | None = None          # rows i per pairwise chunk; None: from PAIRWISE_BUDGET_BYTES
    output: Literal["identity", "sigmoid"] = "identity"   # sigmoid: onto the data's value range

    def __post_init__(self):
        check(self.samples >= 2, f"samples must be >= 2 (the pairwise term needs two draws), "
                                 f"got {self.samples}")
        _check_beta_param(self.beta)
        check(self.chunk is None or self.chunk > 0, f"chunk must be > 0 or null, got {self.chunk}")


@dataclass
class FastEnergyScoreParams:
    beta: float = 1.0
    # Eq. 14 ("single", paper Table 5 "double") or the bounded two-decode "antithetic" (default:
    # Eq. 14 diverges with our nets, see the module docstring)
    variant: Literal["single", "double", "antithetic"] = "antithetic"
    output: Literal["identity", "sigmoid"] = "identity"   # sigmoid: onto the data's value range

    def __post_init__(self):
        _check_beta_param(self.beta)


def _range(output: str, value_range):
    if output == "sigmoid" and value_range is None:
        raise ConfigError("model.reconstruction.output: sigmoid needs data with a bounded value range")
    return value_range


@RECONSTRUCTIONS.register("energy_score", EnergyScoreParams)
def _energy_score(p: EnergyScoreParams, *, value_range=None, **_):
    return EnergyScore(p.samples, p.beta, p.chunk, p.output, _range(p.output, value_range))


@RECONSTRUCTIONS.register("fast_energy_score", FastEnergyScoreParams)
def _fast_energy_score(p: FastEnergyScoreParams, *, value_range=None, **_):
    return FastEnergyScore(p.beta, p.variant, p.output, _range(p.output, value_range))
