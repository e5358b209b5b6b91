"""Energy-score reconstruction objectives: EnVAE (``energy_score``) and FEnVAE (``fast_energy_score``).

Paper 000 ("Likelihood-Free VAEs"; see docs/methods.md §1 for the clean formulas). The
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
  there instead of 0 * inf = nan. A NaN decoding gives a NaN loss (it is not masked).

EnVAE (paper 000, Eqs. 3 and 5, docs/methods.md §1), M >= 2 samples
x_i = g(z_i), z_i ~ q(z|x) (reparameterised, all M drawn at once, decoded in chunks, below):

    L = 1/M sum_i ||x_i - x||^beta - 1/(2 M (M-1)) sum_i sum_{j != i} ||x_i - x_j||^beta.

The pairwise term uses the unbiased U-statistic denominator M(M-1) (``scoringrules``'
``estimator="fair"``), so E[L] = S(P, x) exactly for every M >= 2. The biased M^2 version
(``estimator="nrg"``) over-estimates S by 1/(2M) E||X - X'||^beta. Note for beta = 2 the
unbiased estimator is ||xbar - x||^2 - tr(C)/M (xbar the sample mean, C the unbiased sample
covariance), whose expectation is ||E X - x||^2; the *biased* one is exactly ||xbar - x||^2
(the paper's Appendix 6.3 states the MSE form for Eq. 5; exact only in expectation).
Pairwise term (``pairwise_mean``): float64 Gram form. Per example, the samples are centred on
their mean (distances are shift-invariant) and converted to float64, a_i = x_i - xbar; then
s_ij = |a_i|^2 + |a_j|^2 - 2 a_i.a_j for the pairs i < j (one batched matmul, each pair counted
twice), and ||x_i - x_j||^beta = s_ij^(beta/2) with value and gradient 0 where s_ij = 0. The
backward is analytic: d/da_i = 4 sum_j S_ij (a_i - a_j) with S_ij = w_ij + w_ji,
w_ij = d s^(beta/2)/ds, computed as one matmul (diag(S 1) - S) a. Output and gradient are
returned in the input dtype (float32 in training).
Precision. float32 inputs are exact in float64, so only float64 rounding enters: s_ij is off
by a few eps64 (|a_i|^2 + |a_j|^2) (eps64 = 2.2e-16; measured <= 0.4 sqrt(D) eps64 (...) for an
exact duplicate, D = 16 ... 12288), a relative error eps64 (|a_i|^2 + |a_j|^2) / s_ij that the
power s^(beta/2) scales by beta/2 and its gradient by |beta/2 - 1|. Centring keeps that ratio
O(1) for a cloud of near-identical samples (uncentred, samples = base + 1e-6 noise lose 1e-5;
centred, 1e-16). What remains are *isolated* near pairs in a spread cloud and exact duplicates
(s_ij should be 0): left to the Gram form, their gradients err by up to 2e-4 relative
(beta = 0.5). Two corrections, both free of host synchronisation, remove that:
(1) s_ij <= GRAM_FLOOR sqrt(D) eps64 (|a_i|^2 + |a_j|^2), within its rounding bound of 0, is
taken as 0; (2) in each row chunk the ceil(NEAR_PAIRS * rows) pairs (M/2 per example by
default) with the smallest s_ij / (|a_i|^2 + |a_j|^2) are recomputed from direct differences
(a fixed-size top-k, substituted by scatter). Measured against the direct-difference form
evaluated in float64 on the same values (B = 8, M = 20, D = 784, beta in {0.5, 1, 1.5, 2},
relative norm of the difference, value and gradient w.r.t. the samples): float64 inputs agree
within 1e-15 (spread, offset by 100, clouds with 1e-4 or 1e-6 noise, duplicates; all
identical: exactly 0), 4e-11 for an isolated pair 1e-6 apart (the centring's own rounding of
a_i - a_j); float32 inputs within 6e-8 (the float32 rounding of the result); the hardest case
we found, two tight clusters (spread 1e-5 around centres ~40 apart), within 5e-7.
``tests/models/test_energy_score.py`` asserts 1e-12 (float64) and 1e-6 (float32) on such cases. The
float32 direct-difference form (``torch.cdist``, used before) is itself off by up to 3e-6 on
near-identical float32 samples (conv-net decodings of Fashion-MNIST with sigma shrunk 1000x).
Memory: rows i come in chunks (``chunk``; automatic: ``auto_chunk`` keeps a chunk's float64
temporaries under PAIRWISE_BUDGET_BYTES); the backward keeps the centred float64 samples and
the B x M x M weights w_ij.
Speed (B = 64, M = 50, n = 784, float32, 1 thread, forward + backward, interleaved medians of
11, two runs on a shared 2-core machine): the torch.cdist direct differences 238 / 237 ms, this
form 71 / 80 ms (3.0-3.4x faster; the near-pair recomputation is 10-30 % of it).

Decoding. The M x B latents are decoded in calls of ``decode_chunk`` posterior samples (B
latents each); the draws of z are made once, before, so the result equals one call up to float
rounding (for decoders without batch-coupled layers such as train-mode BatchNorm; the shipped
nets have none). Automatic (None): on CPU at most DECODE_LATENTS = 320 latents per call
(``auto_decode_chunk``: 5 samples at B = 64, 2 at B = 128), from a 1-thread measurement of
EnergyScore.loss forward + backward with the conv net of ``configs/fashion_vae.yaml``, M = 50:
per step, 256-384 latents per call were fastest at both B = 64 and B = 128; one call on all
M x B latents was 1.28-1.36x (B = 64) and 1.18-1.61x (B = 128; two runs) slower per step
than the automatic chunks, and 64-128 latents per call 1.1-1.25x slower than 256-384. With
more threads larger calls may pay; on other devices the default is one call (a GPU's
per-image cost falls with the batch; not measured).

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
at its clamp; ``benchmarks/results/envae_table1_*.md``), whereas the exact score is >= 0.
The conditions under which the paper may have trained it were tested one at a time, 3 seeds,
2000 steps on digits (``benchmarks/fenvae_eq14.py``, ``results/fenvae_eq14_digits.md``): KL
weight 1, the posterior log-variance clamped at 0 (sigma <= 1) and lr 1e-4 all still diverge
(every seed; with sigma clamped the decoder alone drives it down); the "double" noise of Table 5
diverges like "single". Only a sigmoid output (a bounded decoder bounds Eq. 14 below) keeps it
finite, and there it settles below 0 with reconstructions far worse than the antithetic
variant's (its optimum spreads the decodes rather than fitting x). We found no setting where
Eq. 14 as printed is a usable objective for these nets; the paper does not say which it used. Our
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
from ..base import RECONSTRUCTIONS
from .base import Decode, Reconstruction

SQRT2 = math.sqrt(2.0)
#: automatic pairwise chunking keeps a chunk's float64 temporaries (``auto_chunk``) under this
PAIRWISE_BUDGET_BYTES = 256 * 2 ** 20
#: pairs i < j per sample (per example: NEAR_PAIRS * M) recomputed from direct differences
NEAR_PAIRS = 0.5
#: Gram-form s_ij <= GRAM_FLOOR sqrt(D) eps64 (|a_i|^2 + |a_j|^2) is taken as 0 (its rounding bound)
GRAM_FLOOR = 4.0
#: automatic decoding on CPU: at most this many latents per decoder call (``auto_decode_chunk``)
DECODE_LATENTS = 320


class StochasticPosteriorRequired(ConfigError, ValueError):
    """An objective that needs q(z|x)'s standard deviation got a point-mass posterior."""


def _check_beta(beta: float) -> None:
    if not 0 < beta <= 2:
        raise ValueError(f"beta must be in (0, 2], got {beta}")


def _norm_pow(diff: torch.Tensor, beta: float) -> torch.Tensor:
    """||diff||^beta over the last dimension, with a finite gradient at diff = 0 (NaN stays NaN)."""
    sq = diff.pow(2).sum(-1)
    pos = ~(sq <= 0)
    safe = torch.where(pos, sq, torch.ones_like(sq))
    return torch.where(pos, safe.pow(0.5 * beta), torch.zeros_like(sq))


def auto_chunk(batch: int, m: int, dim: int, near: float = NEAR_PAIRS,
               budget: int = PAIRWISE_BUDGET_BYTES) -> int:
    """Rows i per pairwise chunk so that a chunk's float64 temporaries, about
    8 batch chunk (6 m + 2 near dim) bytes (the [B, chunk, M] Gram-form buffers and the
    [B, near chunk, D] direct differences), fit in ``budget`` bytes."""
    per_row = max(1, int(8 * batch * (6 * m + 2 * near * dim)))
    return int(min(m, max(1, budget // per_row)))


def auto_decode_chunk(batch: int, samples: int, device: torch.device | str = "cpu") -> int:
    """Posterior samples per decoder call: on CPU at most ``DECODE_LATENTS`` latents per call
    (at least one sample), elsewhere all ``samples`` in one call (see the module docstring)."""
    if torch.device(device).type != "cpu":
        return samples
    return int(min(samples, max(1, DECODE_LATENTS // max(1, batch))))


def _near_count(near: float, m: int, start: int, stop: int) -> int:
    """Pairs recomputed in the row chunk [start, stop): ceil(near * rows), at most its pairs j > i."""
    pairs = sum(m - 1 - i for i in range(start, stop))
    return int(min(pairs, math.ceil(near * (stop - start))))


class _PairwiseSum(torch.autograd.Function):
    """sum_{i != j} ||a_i - a_j||^beta per example of ``samples`` [B, M, D] (see the module
    docstring): float64 Gram form over the pairs i < j, the worst-conditioned of them recomputed
    by direct differences, an analytic backward; output and gradient in the input dtype."""

    @staticmethod
    def forward(ctx, samples: torch.Tensor, beta: float, chunk: int, near: float) -> torch.Tensor:
        b, m, d = samples.shape
        dev = samples.device
        want_grad = ctx.needs_input_grad[0]
        with torch.autocast(dev.type, enabled=False):
            # centred on the sample mean (distances are shift-invariant, see the module docstring)
            a = samples.detach().to(torch.float64, memory_format=torch.contiguous_format, copy=True)
            a.sub_(a.mean(1, keepdim=True))
            sq = torch.linalg.vecdot(a, a)                                     # |a_i|^2 [B, M]
            flat = a.view(b * m, d)
            base = (torch.arange(b, device=dev) * m).view(b, 1)
            floor = GRAM_FLOOR * math.sqrt(d) * torch.finfo(torch.float64).eps
            total = a.new_zeros(b)
            w_all = a.new_zeros(b, m, m) if want_grad else None               # upper triangle
            saved = []
            for start in range(0, m, chunk):
                stop = min(m, start + chunk)
                c, ncol = stop - start, m - start
                rows = a[:, start:stop]
                # s_ij = |a_i|^2 + |a_j|^2 - 2 a_i.a_j for rows i in the chunk, columns j >= start
                s = torch.baddbmm(sq[:, start:stop, None] + sq[:, None, start:], rows,
                                  a[:, start:].transpose(1, 2), alpha=-2.0)        # [B, c, ncol]
                upper = (torch.arange(ncol, device=dev)[None, :]
                         > torch.arange(c, device=dev)[:, None])                  # j > i
                # s_ij within the Gram form's rounding bound of 0 (or below 0) is taken as 0;
                # NaN stays NaN
                scale = sq[:, start:stop, None] + sq[:, None, start:]
                s = torch.where(s <= floor * scale, torch.zeros_like(s), s)
                k = _near_count(near, m, start, stop)
                if k > 0:
                    # the k pairs with the smallest s_ij / (|a_i|^2 + |a_j|^2) (largest relative
                    # error of the Gram form), recomputed from direct differences
                    key = (s / scale.clamp_min(1e-300)).masked_fill_(~upper, math.inf).view(b, -1)
                    idx = key.topk(k, -1, largest=False).indices                   # [B, k]
                    gi = base + start + idx // ncol
                    gj = base + start + idx % ncol
                    diff = flat.index_select(0, gi.view(-1)).sub_(flat.index_select(0, gj.view(-1)))
                    s.view(b, -1).scatter_(-1, idx, torch.linalg.vecdot(diff, diff).view(b, k))
                    if want_grad:
                        saved += [gi, gj, diff]
                s.masked_fill_(~upper, 0.0)
                pos = ~(s <= 0)                                      # NaN propagates; 0 is masked
                safe = torch.where(pos, s, torch.ones_like(s))
                r = safe if beta == 2 else safe.pow(0.5 * beta)
                total += torch.where(pos, r, torch.zeros_like(r)).sum((1, 2))
                if want_grad:                             # w_ij = d s^(beta/2) / d s, 0 at s = 0
                    w = torch.where(pos, (0.5 * beta) * r / safe, torch.zeros_like(r))
                    if k > 0:
                        saved.append(w.view(b, -1).gather(-1, idx))
                        w.view(b, -1).scatter_(-1, idx, 0.0)
                    w_all[:, start:stop, start:] = w
        if want_grad:
            ctx.save_for_backward(a, w_all, *saved)
            ctx.chunk, ctx.in_dtype = chunk, samples.dtype
        return (2.0 * total).to(samples.dtype)             # each unordered pair counts twice

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        a, w_all, *saved = ctx.saved_tensors
        b, m, d = a.shape
        with torch.autocast(a.device.type, enabled=False):
            # d/da_i of 2 sum_{i<j} s_ij^(beta/2) = 4 sum_j S_ij (a_i - a_j), S = W + W^T: one
            # matmul with (diag(S 1) - S), per row chunk
            g4 = 4.0 * grad_out.detach().to(torch.float64).view(b, 1, 1)
            grad = a.new_empty(b, m, d)
            for start in range(0, m, ctx.chunk):
                stop = min(m, start + ctx.chunk)
                t = (w_all[:, start:stop] + w_all[:, :, start:stop].transpose(1, 2)).mul_(-g4)
                t.diagonal(start, 1, 2).sub_(t.sum(-1))      # t[:, i, start + i], the i == j entries
                grad[:, start:stop] = torch.bmm(t, a)
            flat_grad = grad.view(b * m, d)
            for n in range(0, len(saved), 4):             # recomputed pairs: +-4 w (a_i - a_j)
                gi, gj, diff, w = saved[n:n + 4]
                contrib = diff * (g4.view(b, 1) * w).view(-1, 1)
                flat_grad.index_add_(0, gi.view(-1), contrib)
                flat_grad.index_add_(0, gj.view(-1), contrib, alpha=-1.0)
        return grad.to(ctx.in_dtype), None, None, None


def pairwise_mean(samples: torch.Tensor, beta: float = 1.0, chunk: int | None = None,
                  near: float = NEAR_PAIRS) -> torch.Tensor:
    """1/(M(M-1)) sum_{i != j} ||x_i - x_j||^beta per example; ``samples`` is [B, M, D]
    (float64 Gram form, ``near`` x M pairs per example recomputed by direct differences; output
    in the input dtype)."""
    b, m, d = samples.shape
    if m < 2:
        raise ValueError(f"the pairwise term needs M >= 2 samples, got {m}")
    c = chunk or auto_chunk(b, m, d, near)
    if not torch.is_grad_enabled():                  # no backward: keep no weights for one
        samples = samples.detach()
    return _PairwiseSum.apply(samples, float(beta), int(c), float(near)) / (m * (m - 1))


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
                 output: str = "identity", value_range=None, decode_chunk: int | None = None):
        super().__init__(output, value_range)
        if samples < 2:
            raise ValueError(f"samples must be >= 2, got {samples}")
        if decode_chunk is not None and decode_chunk < 1:
            raise ValueError(f"decode_chunk must be >= 1 or None, got {decode_chunk}")
        _check_beta(beta)
        self.samples, self.beta, self.chunk, self.decode_chunk = samples, beta, chunk, decode_chunk

    def decode_samples(self, z: torch.Tensor, decode: Decode) -> torch.Tensor:
        """g(z) for z [M, B, m], ``decode_chunk`` samples (of B latents each) per decoder call."""
        c = self.decode_chunk or auto_decode_chunk(z.shape[1], z.shape[0], z.device)
        if c >= z.shape[0]:
            return decode(z)
        return torch.cat([decode(part) for part in z.split(c)])

    def loss(self, x, q, decode):
        z = q.rsample(self.samples)                      # [M, B, m], one draw for all chunks
        out = self.mean(self.decode_samples(z, decode))  # [M, B, ...]
        fit, spread = energy_score_terms(out.flatten(2), x.flatten(1), self.beta, self.chunk)
        return fit - spread, z[0], _logs(fit, spread)

    def extra_repr(self):
        return (f"samples={self.samples}, beta={self.beta}, chunk={self.chunk}, "
                f"decode_chunk={self.decode_chunk}")


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
    # posterior samples (of B latents each) per decoder call; None: automatic (CPU: at most
    # DECODE_LATENTS = 320 latents per call, measured fastest for the conv net; other devices:
    # one call); results equal one call up to float rounding (the same draws of z)
    decode_chunk: int | None = None

    def __post_init__(self):
        check(self.samples >= 2, f"samples must be >= 2 (the pairwise term needs two draws), "
                                 f"got {self.samples}")
        _check_beta_param(self.beta)
        check(self.chunk is None or self.chunk > 0, f"chunk must be > 0 or null, got {self.chunk}")
        check(self.decode_chunk is None or self.decode_chunk > 0,
              f"decode_chunk must be > 0 or null, got {self.decode_chunk}")


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
    return EnergyScore(p.samples, p.beta, p.chunk, p.output, _range(p.output, value_range),
                       p.decode_chunk)


@RECONSTRUCTIONS.register("fast_energy_score", FastEnergyScoreParams)
def _fast_energy_score(p: FastEnergyScoreParams, *, value_range=None, **_):
    return FastEnergyScore(p.beta, p.variant, p.output, _range(p.output, value_range))
