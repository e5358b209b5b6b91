"""The reconstruction objective's contract (documented in :mod:`energyvae.models.reconstruction`)."""
from __future__ import annotations

from abc import ABC
from typing import Callable

import torch

from ..base import Component
from ..posterior import DiagGaussian

Decode = Callable[[torch.Tensor], torch.Tensor]


class Reconstruction(Component, ABC):
    """The contract of a reconstruction objective (see :mod:`energyvae.models.reconstruction`)."""
    likelihood: bool = True
    support: str = "real"          # "real" (a density) or "binary" (a probability mass on {0,1})

    def decoder_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(data_shape)

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} is not a likelihood (its `likelihood` is False): no log_prob")

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out

    def residual_scale(self) -> float | None:
        """One scale s of the residuals x - x_hat (a calibrated Gaussian's sigma), for the
        normalised-residual figure; None when the objective has none."""
        return None

    def loss(self, x: torch.Tensor, q: DiagGaussian, decode: Decode) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Default for likelihoods: one reparameterised sample, -ln p(x|z). Returns (loss, z, logs)."""
        z = q.rsample()
        return -self.log_prob(x, decode(z)), z, {}


def flat_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension but the first."""
    return t.flatten(1).sum(1)

