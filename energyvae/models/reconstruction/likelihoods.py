"""Decoder likelihoods of the baseline VAE family: Bernoulli, Gaussian and Laplace.

Gaussian and Laplace scales are ``fixed`` (a config value), ``learned`` (one global
ln-scale trained with the ELBO) or ``calibrated`` (Rybkin et al. 2021, "sigma-VAE"): the
scale is set to its maximum-likelihood value given the current reconstructions, a shared
scalar sigma^2 = mean (x - x_hat)^2 (Gaussian) or b = mean |x - x_hat| (Laplace) over the
batch, floored at ``min_scale``. In training the batch value is used and a running average
(momentum 0.99) is kept; evaluation uses the running average, so a test likelihood does not
depend on the batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ...registry import check
from ..base import RECONSTRUCTIONS
from .base import Reconstruction, flat_sum

LOG_2PI = math.log(2 * math.pi)


class Bernoulli(Reconstruction):
    """p(x|z) = prod Bernoulli(x; sigmoid(logits)); x in [0, 1] (binary or grey levels).

    On grey levels the cross-entropy is a training loss, not a normalised likelihood."""
    support = "binary"

    def log_prob(self, x, out):
        return -flat_sum(F.binary_cross_entropy_with_logits(out, x, reduction="none"))

    def mean(self, out):
        return torch.sigmoid(out)


class LocationScale(Reconstruction):
    """A factorised location-scale likelihood with a fixed, learned or calibrated scale."""

    def __init__(self, scale: str, init_scale: float, min_scale: float):
        super().__init__()
        self.mode, self.min_scale = scale, min_scale
        if scale == "learned":
            self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        else:
            self.register_buffer("running_scale", torch.tensor(float(init_scale)))

    def _batch_scale(self, residual: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _log_density(self, residual: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def scale(self, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.mode == "learned":
            return self.log_scale.exp().clamp_min(self.min_scale)
        if self.mode == "calibrated" and self.training and residual is not None:
            s = self._batch_scale(residual).clamp_min(self.min_scale)
            with torch.no_grad():
                self.running_scale.lerp_(s.detach(), 0.01)
            return s
        return self.running_scale.clamp_min(self.min_scale)

    def log_prob(self, x, out):
        residual = x - out
        return flat_sum(self._log_density(residual, self.scale(residual)))

    def residual_scale(self) -> float:
        return float(self.scale())


class Gaussian(LocationScale):
    """p(x|z) = N(x; g(z), sigma^2 I)."""

    def _batch_scale(self, residual):
        return residual.pow(2).mean().sqrt()

    def _log_density(self, residual, scale):
        return -0.5 * (residual / scale).pow(2) - scale.log() - 0.5 * LOG_2PI


class Laplace(LocationScale):
    """p(x|z) = Laplace(x; g(z), b)."""

    def _batch_scale(self, residual):
        return residual.abs().mean()

    def _log_density(self, residual, scale):
        return -residual.abs() / scale - scale.log() - math.log(2.0)


@dataclass
class ScaleParams:
    scale: Literal["fixed", "learned", "calibrated"] = "calibrated"
    init_scale: float = 1.0      # the fixed scale, or the initial learned/running scale
    min_scale: float = 1e-3

    def __post_init__(self):
        check(self.init_scale > 0, f"init_scale must be > 0, got {self.init_scale}")
        check(self.min_scale > 0, f"min_scale must be > 0, got {self.min_scale}")


@RECONSTRUCTIONS.register("bernoulli")
def _bernoulli(p, *, value_range=None, **_):
    if value_range is None or value_range[0] < 0 or value_range[1] > 1:
        from ...errors import ConfigError
        raise ConfigError("model.reconstruction: bernoulli needs data in [0, 1] (set data.scale: '01')")
    return Bernoulli()


@RECONSTRUCTIONS.register("gaussian", ScaleParams)
def _gaussian(p: ScaleParams, **_):
    return Gaussian(p.scale, p.init_scale, p.min_scale)


@RECONSTRUCTIONS.register("laplace", ScaleParams)
def _laplace(p: ScaleParams, **_):
    return Laplace(p.scale, p.init_scale, p.min_scale)
