"""Baseline reconstruction objectives of the EnVAE paper's Table 1 (paper 000, App. "baselines").

Same encoder/decoder, only the reconstruction term changes. The cross-entropy baseline ("CE")
is the existing ``bernoulli`` objective; InfoVAE is a latent regulariser, see
:mod:`energyvae.models.regularizers` (calibrator ``mmd``). Registered here:

``l2``  (``weight=1.0``): ``weight * ||x - g(z)||_2^2`` per example (sum over every data
    dimension). Deterministic decoder, ``likelihood = False``. Equal to a fixed-scale Gaussian
    NLL up to constants, but kept as the paper's plain loss (Eq. 19).
``l1``  (``weight=1.0``): ``weight * ||x - g(z)||_1`` per example (Eq. 20).
``ssim`` (``weight=1.0``): ``weight * (1 - SSIM(g(z), x))`` per example (Eq. 23), images with a
    bounded value range [lo, hi] only. The decoder output is a LOGIT: the reconstruction is
    ``g(z) = lo + (hi - lo) sigmoid(out)`` (``mean``), and SSIM is computed on the unit-range
    images ``sigmoid(out)`` and ``(x - lo) / (hi - lo)`` with data_range 1 (the restoration
    metric's default space). Why squash: SSIM = luminance * contrast-structure, and both factors
    flip sign when an image is negated, so SSIM(-x, x) ~ 1; with a raw decoder the loss found
    inverted, negative reconstructions on digits (SSIM 0.79 at a per-pixel MSE of 0.89). A
    sigmoid output, as in SSIM-trained autoencoders, rules that out. SSIM is
    :func:`energyvae.imaging.quality.ssim` (torchmetrics, Gaussian window, k1 = 0.01,
    k2 = 0.03, reflect padding, no clamping: differentiable everywhere), including its
    small-image window rule (side = largest odd number <= the shortest image side, sigma =
    1.5 side / 11; 7x7 on 8x8 digits). The paper gives no weight: 1 - SSIM lies in [0, 2] while
    the KL is O(latent_dim) nats, so a weight of the order of the number of pixels keeps the
    balance of a summed pixel loss.
``ffl`` (``weight=1.0, alpha=1.0, base="l2", reduction="mean"``): focal frequency loss (Jiang et
    al., ICCV 2021) added to a pixel loss: ``base(x, g(z)) + weight * FFL``, with
    ``FFL = reduce_{c,u,v} w(c,u,v) |F_rec(c,u,v) - F_real(c,u,v)|^2``: F the orthonormal 2-D
    DFT (``torch.fft.fft2(norm="ortho")``, full spectrum) of each channel, and the spectrum
    weight ``w = |F_rec - F_real|^alpha`` divided by its maximum over the frequencies of each
    image and channel (as in the authors' code; so w in [0, 1]) and DETACHED (no gradient
    flows through w; a perfect match gives w = 0 and FFL = 0). The authors' defaults are kept:
    no patches, no log(1 + w), per-image (not per-batch) normalisation. ``reduction="mean"``
    averages over channels and frequencies (the authors' reduction); since the orthonormal DFT
    preserves sums of squares (Parseval), ``FFL <= mean squared pixel error``, so next to the
    SUMMED ``l2`` base it is a term ~D times smaller than in the FFL paper, where it sits next
    to a mean pixel loss. ``reduction="sum"`` (or ``weight = D``) restores that balance.
    ``base`` is ``l2``, ``l1`` (both summed as above) or ``none``. Images only.
``student_t`` (``min_scale=1e-3, min_dof=2.0``): Student-t decoder likelihood (Takahashi et
    al., IJCAI 2018: the Gaussian decoder's precision is given a Gamma prior and integrated out,
    which gives a Student-t). The decoder outputs 3 numbers per data dimension (3C channels for
    images, 3D features for vectors; parameter-major: channels [0:C] location, [C:2C] raw
    log-scale, [2C:3C] raw dof): ``scale = min_scale + exp(raw)``, ``dof = min_dof +
    softplus(raw)`` (dof > 2, so the variance exists and the decoder has a finite second
    moment; the scale floor keeps the density bounded). ``log_prob`` is
    ``torch.distributions.StudentT``; ``likelihood = True`` (ELBO / IW bounds apply);
    ``mean`` = location.
``distvae`` (``segments=16, spline="monotone"``): DistVAE (An & Jeon, NeurIPS 2023): each data
    dimension's conditional quantile function Q(alpha | z) is a monotone piecewise-linear
    spline on the knots a_k = k/K, k = 0..K (K = ``segments``), and the reconstruction loss is
    the CRPS of that distribution at x, summed over dimensions (``likelihood = False``). The
    decoder outputs K + 1 numbers per dimension ((K+1)C channels, parameter-major): a base
    value b and K raw increments r_k, with d_k = softplus(r_k) >= 0.

    - ``spline="monotone"`` (default): d_k is the SLOPE of segment k, i.e. the value increment
      is d_k / K: Q(a_0) = b, Q(a_k) = b + (d_1 + ... + d_k) / K: any non-decreasing
      piecewise-linear quantile function on the grid. (Slopes rather than raw value increments
      keep the initial spread, ~softplus(0) = 0.69, independent of K.)
    - ``spline="convex"``: the authors' form Q(alpha) = b + sum_{l<K} d_l (alpha - a_l)_+
      (their beta_l >= 0 are SLOPE increments, so Q is convex: a non-increasing density on its
      support). The authors place 17 non-uniform knots (finer in the tails); here the grid is
      uniform.

    CRPS in closed form: CRPS(F, x) = 2 int_0^1 rho_alpha(x - Q(alpha)) d alpha with the pinball
    loss rho_alpha(u) = u (alpha - 1{u < 0}) = alpha u + (-u)_+, so
    CRPS = 2 [ x/2 - int alpha Q(alpha) d alpha + int (Q(alpha) - x)_+ d alpha ].
    On a segment [a0, a1] (width h) with Q linear from q0 to q1: int alpha Q = h/6 [a0 q0 +
    (a0 + a1)(q0 + q1) + a1 q1] (Simpson, exact for a quadratic) and, with the crossing fraction
    f = clip((x - q0) / (q1 - q0), 0, 1), int (Q - x)_+ = h (1 - f) ((q0 + f (q1 - q0) + q1)/2 - x).
    Both are exact. f is computed without gradient: d/df of the second integral is
    -h (Q(alpha*) - x) = 0 at an interior crossing alpha* and f is locally constant when
    clipped, so the gradient stays exact and flat segments (q1 = q0) cause no 0/0.
    ``mean`` = int_0^1 Q = sum_k h (q0 + q1)/2 (the distribution's mean: used for samples and
    reconstructions).

Design: every non-likelihood objective here scores ONE reparameterised decoded sample per
example (:class:`ScoreLoss`); ``ssim``, ``ffl`` reject vector data with a ConfigError. Decoder
outputs are raw (the reconstruction itself) except for ``ssim`` (logits), ``student_t`` and
``distvae`` (parameter groups): use ``mean(out)`` for the data-space point.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ...errors import ConfigError
from ...registry import check
from ..base import RECONSTRUCTIONS
from .base import Reconstruction, flat_sum

__all__ = ["ScoreLoss", "PixelLoss", "SSIMLoss", "FocalFrequencyLoss", "StudentT", "QuantileSpline",
           "squared_error", "absolute_error", "focal_weights", "focal_frequency_loss",
           "piecewise_linear_crps"]


# -- shared pieces -------------------------------------------------------------------------------

def squared_error(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """||x - out||_2^2 per example [B]."""
    return flat_sum((x - out).pow(2))


def absolute_error(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """||x - out||_1 per example [B]."""
    return flat_sum((x - out).abs())


_PIXEL = {"l2": squared_error, "l1": absolute_error}


def _split(out: torch.Tensor, n: int) -> torch.Tensor:
    """[B, n*C, ...] -> [B, n, C, ...] (the decoder's parameter-major channel groups)."""
    return out.unflatten(1, (n, out.shape[1] // n))


def _grouped_shape(data_shape: tuple[int, ...], n: int) -> tuple[int, ...]:
    return (n * data_shape[0], *data_shape[1:])


def _require_image(name: str, data_kind: str | None, data_shape) -> None:
    if data_kind != "image" or data_shape is None or len(data_shape) != 3:
        raise ConfigError(f"model.reconstruction: {name} needs image data [C, H, W], got "
                          f"{data_kind or 'unknown'} data of shape {tuple(data_shape or ())}")


class ScoreLoss(Reconstruction):
    """A non-likelihood objective that scores one reparameterised decoded sample per example:
    ``loss = score(x, decode(z))``, z ~ q(z|x)."""
    likelihood = False

    def score(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, x, q, decode):
        z = q.rsample()
        return self.score(x, decode(z)), z, {}


# -- L2 / L1 -------------------------------------------------------------------------------------

class PixelLoss(ScoreLoss):
    """``weight * ||x - g(z)||_p^p`` with p = 2 (``l2``) or 1 (``l1``), summed per example."""

    def __init__(self, kind: str, weight: float = 1.0):
        super().__init__()
        self.kind, self.weight, self._fn = kind, weight, _PIXEL[kind]

    def score(self, x, out):
        return self.weight * self._fn(x, out)


@dataclass
class WeightParams:
    weight: float = 1.0

    def __post_init__(self):
        check(self.weight > 0, f"weight must be > 0, got {self.weight}")


@RECONSTRUCTIONS.register("l2", WeightParams)
def _l2(p: WeightParams, **_):
    return PixelLoss("l2", p.weight)


@RECONSTRUCTIONS.register("l1", WeightParams)
def _l1(p: WeightParams, **_):
    return PixelLoss("l1", p.weight)


# -- SSIM ----------------------------------------------------------------------------------------

class SSIMLoss(ScoreLoss):
    """``weight * (1 - SSIM)`` on unit-range images; the decoder outputs logits."""

    def __init__(self, weight: float, value_range: tuple[float, float]):
        super().__init__()
        self.weight, (self.lo, self.hi) = weight, (float(value_range[0]), float(value_range[1]))

    def mean(self, out):
        return self.lo + (self.hi - self.lo) * torch.sigmoid(out)

    def score(self, x, out):
        from ...imaging.quality import ssim   # lazy: torchmetrics is slow to import
        x01 = (x - self.lo) / (self.hi - self.lo)
        return self.weight * (1 - ssim(torch.sigmoid(out), x01, 1.0))


@RECONSTRUCTIONS.register("ssim", WeightParams)
def _ssim(p: WeightParams, *, data_kind=None, data_shape=None, value_range=None, **_):
    _require_image("ssim", data_kind, data_shape)
    if min(data_shape[1:]) < 3:
        raise ConfigError(f"model.reconstruction: ssim needs images of at least 3x3 pixels, got "
                          f"{data_shape[1]}x{data_shape[2]}")
    if value_range is None:
        raise ConfigError("model.reconstruction: ssim needs images with a bounded value range "
                          "(data.scale '01' or 'pm1', not logit-dequantized data)")
    return SSIMLoss(p.weight, value_range)


# -- focal frequency loss ------------------------------------------------------------------------

def _spectral_sq_distance(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """|F_out - F_x|^2 per channel and frequency, orthonormal 2-D DFT over the last two dims."""
    d = torch.fft.fft2(out, norm="ortho") - torch.fft.fft2(x, norm="ortho")
    return d.real.pow(2) + d.imag.pow(2)          # smooth at d = 0 (|d| is not)


def focal_weights(x: torch.Tensor, out: torch.Tensor, alpha: float = 1.0,
                  sq_distance: torch.Tensor | None = None) -> torch.Tensor:
    """The FFL spectrum weight w = |F_out - F_x|^alpha / max_{u,v}(...), per image and channel,
    in [0, 1], detached. (alpha = 0 gives w = 1: a plain frequency-domain L2.)"""
    with torch.no_grad():
        d2 = _spectral_sq_distance(x, out) if sq_distance is None else sq_distance.detach()
        w = d2.sqrt().pow(alpha)
        top = w.amax(dim=(-2, -1), keepdim=True)
        return (w / top.clamp_min(torch.finfo(w.dtype).tiny)).clamp(0.0, 1.0)


def focal_frequency_loss(x: torch.Tensor, out: torch.Tensor, alpha: float = 1.0,
                         reduction: str = "mean") -> torch.Tensor:
    """FFL per example [B]: reduce_{c,u,v} sg(w) |F_out - F_x|^2 (``reduction`` "mean" or "sum")."""
    d2 = _spectral_sq_distance(x, out)
    term = focal_weights(x, out, alpha, sq_distance=d2) * d2
    return term.flatten(1).mean(1) if reduction == "mean" else flat_sum(term)


class FocalFrequencyLoss(ScoreLoss):
    """``base(x, g(z)) + weight * FFL(x, g(z))`` (see the module docstring)."""

    def __init__(self, weight: float, alpha: float, base: str, reduction: str):
        super().__init__()
        self.weight, self.alpha, self.base, self.reduction = weight, alpha, base, reduction

    def score(self, x, out):
        loss = self.weight * focal_frequency_loss(x, out, self.alpha, self.reduction)
        if self.base != "none":
            loss = loss + _PIXEL[self.base](x, out)
        return loss


@dataclass
class FFLParams:
    weight: float = 1.0                                   # weight of the FFL term
    alpha: float = 1.0                                    # focusing exponent of w
    base: Literal["l2", "l1", "none"] = "l2"              # the pixel loss it is added to
    reduction: Literal["mean", "sum"] = "mean"            # over channels and frequencies

    def __post_init__(self):
        check(self.weight >= 0, f"weight must be >= 0, got {self.weight}")
        check(self.alpha >= 0, f"alpha must be >= 0, got {self.alpha}")
        check(self.weight > 0 or self.base != "none", "weight = 0 with base 'none' is no loss")


@RECONSTRUCTIONS.register("ffl", FFLParams)
def _ffl(p: FFLParams, *, data_kind=None, data_shape=None, **_):
    _require_image("ffl", data_kind, data_shape)
    return FocalFrequencyLoss(p.weight, p.alpha, p.base, p.reduction)


# -- Student-t decoder ---------------------------------------------------------------------------

class StudentT(Reconstruction):
    """p(x|z) = prod_i StudentT(x_i; dof_i, loc_i, scale_i), all three from the decoder."""
    likelihood = True
    support = "real"

    def __init__(self, min_scale: float = 1e-3, min_dof: float = 2.0):
        super().__init__()
        self.min_scale, self.min_dof = min_scale, min_dof

    def decoder_shape(self, data_shape):
        return _grouped_shape(tuple(data_shape), 3)

    def parameters_of(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(dof, loc, scale) from the raw decoder output [B, 3C, ...]."""
        loc, raw_scale, raw_dof = _split(out, 3).unbind(1)
        return self.min_dof + F.softplus(raw_dof), loc, self.min_scale + raw_scale.exp()

    def distribution(self, out: torch.Tensor) -> torch.distributions.StudentT:
        dof, loc, scale = self.parameters_of(out)
        return torch.distributions.StudentT(dof, loc, scale, validate_args=False)

    def log_prob(self, x, out):
        return flat_sum(self.distribution(out).log_prob(x))

    def mean(self, out):
        return _split(out, 3)[:, 0]


@dataclass
class StudentTParams:
    min_scale: float = 1e-3
    min_dof: float = 2.0       # dof = min_dof + softplus(.) > 2: the variance exists

    def __post_init__(self):
        check(self.min_scale > 0, f"min_scale must be > 0, got {self.min_scale}")
        check(self.min_dof > 0, f"min_dof must be > 0, got {self.min_dof}")


@RECONSTRUCTIONS.register("student_t", StudentTParams)
def _student_t(p: StudentTParams, **_):
    return StudentT(p.min_scale, p.min_dof)


# -- DistVAE: CRPS of a piecewise-linear quantile function ---------------------------------------

def _knot_view(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """[K] -> [1, K, 1, ..., 1] broadcasting against [B, K, *data] (``ndim`` = its dims)."""
    return t.view(1, -1, *([1] * (ndim - 2)))


def piecewise_linear_crps(x: torch.Tensor, q: torch.Tensor, knots: torch.Tensor) -> torch.Tensor:
    """Exact CRPS of the distribution with quantile function linear between (knots[k], q[:, k]).

    ``x`` [B, *data], ``q`` [B, K+1, *data] non-decreasing along dim 1, ``knots`` [K+1]
    increasing from 0 to 1. Returns the elementwise CRPS [B, *data] (see the module docstring).
    """
    q0, q1 = q[:, :-1], q[:, 1:]
    a0, a1 = _knot_view(knots[:-1], q.dim()), _knot_view(knots[1:], q.dim())
    h, xs = a1 - a0, x.unsqueeze(1)
    alpha_q = (h / 6 * (a0 * q0 + (a0 + a1) * (q0 + q1) + a1 * q1)).sum(1)   # int alpha Q(alpha)
    with torch.no_grad():
        gap = (q1 - q0).clamp_min(torch.finfo(q.dtype).tiny)
        f = ((xs - q0) / gap).clamp(0.0, 1.0)                                # crossing fraction
    above = (h * (1 - f) * ((q0 + f * (q1 - q0) + q1) / 2 - xs)).sum(1)      # int (Q - x)_+
    return 2 * (x / 2 - alpha_q + above)


class QuantileSpline(ScoreLoss):
    """DistVAE reconstruction: CRPS of a per-dimension piecewise-linear quantile function."""

    def __init__(self, segments: int = 16, spline: str = "monotone"):
        super().__init__()
        self.segments, self.spline = segments, spline
        knots = torch.linspace(0.0, 1.0, segments + 1)
        self.register_buffer("knots", knots, persistent=False)
        if spline == "convex":   # basis[l, k] = (a_k - a_l)_+, l = 0..K-1 (slope-increment form)
            self.register_buffer("basis", (knots[None, :] - knots[:-1, None]).clamp_min(0),
                                 persistent=False)

    def decoder_shape(self, data_shape):
        return _grouped_shape(tuple(data_shape), self.segments + 1)

    def knot_values(self, out: torch.Tensor) -> torch.Tensor:
        """Q at the knots, [B, K+1, *data], non-decreasing along dim 1."""
        p = _split(out, self.segments + 1)
        base, inc = p[:, :1], F.softplus(p[:, 1:])
        if self.spline == "convex":
            basis = self.basis.to(out.dtype)
            return base + torch.einsum("bl...,lk->bk...", inc, basis)
        h = _knot_view(self.knots[1:] - self.knots[:-1], out.dim() + 1).to(out.dtype)
        return torch.cat([base, base + (h * inc).cumsum(1)], 1)

    def quantile(self, out: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """Q(alpha) for levels ``alpha`` [N] in [0, 1]: [B, N, *data]."""
        q, knots, alpha = self.knot_values(out), self.knots.to(out.dtype), alpha.to(out.dtype)
        idx = (torch.searchsorted(knots, alpha, right=True) - 1).clamp(0, self.segments - 1)
        t = _knot_view((alpha - knots[idx]) / (knots[idx + 1] - knots[idx]), q.dim())
        return q[:, idx] + t * (q[:, idx + 1] - q[:, idx])

    def crps(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Elementwise CRPS [B, *data]."""
        return piecewise_linear_crps(x, self.knot_values(out), self.knots.to(out.dtype))

    def score(self, x, out):
        return flat_sum(self.crps(x, out))

    def mean(self, out):
        q, knots = self.knot_values(out), self.knots.to(out.dtype)
        h = _knot_view(knots[1:] - knots[:-1], q.dim())
        return (h * (q[:, :-1] + q[:, 1:]) / 2).sum(1)


@dataclass
class DistVAEParams:
    segments: int = 16                                   # K linear pieces, K + 1 knots k/K
    spline: Literal["monotone", "convex"] = "monotone"   # value or slope (authors') increments

    def __post_init__(self):
        check(self.segments >= 1, f"segments must be >= 1, got {self.segments}")


@RECONSTRUCTIONS.register("distvae", DistVAEParams)
def _distvae(p: DistVAEParams, **_):
    return QuantileSpline(p.segments, p.spline)

