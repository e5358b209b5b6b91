"""Reconstruction objectives: the term that compares a decoded latent with the data.

Interface of every objective (subclass :class:`Reconstruction`, register with
``RECONSTRUCTIONS.register``):

- ``likelihood``: True when ``loss`` is -ln p(x|z) in nats (the ELBO and IW bounds then hold);
  False for scoring-rule objectives such as the energy score;
- ``support``: "real" for densities, "binary" for masses on {0, 1} (decides when bits/dim
  is meaningful);
- ``decoder_shape(data_shape)``: the shape the decoder must output (e.g. 2C channels for a
  location-scale decoder with per-pixel scales);
- ``loss(x, q, decode)``: per-example loss [B] and the latent samples used ([B, m]); the
  objective draws its own samples from ``q`` (the energy score draws several) and calls
  ``decode`` on batches of latents, not one latent set at a time (EnVAE splits its M x B
  latents into calls of ``decode_chunk`` samples, faster on CPU than one huge call);
- ``log_prob(x, out)``: ln p(x | decoder output) per example (likelihood objectives);
- ``mean(out)``: the decoder output as a data-space point (for samples and reconstructions).
"""
from __future__ import annotations

from typing import Callable

import torch

from ..base import RECONSTRUCTIONS, Component
from ..posterior import DiagGaussian

Decode = Callable[[torch.Tensor], torch.Tensor]


class Reconstruction(Component):
    likelihood: bool = True
    support: str = "real"          # "real" (a density) or "binary" (a probability mass on {0,1})

    def decoder_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(data_shape)

    def log_prob(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} is not a likelihood")

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out

    def loss(self, x: torch.Tensor, q: DiagGaussian, decode: Decode) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Default for likelihoods: one reparameterised sample, -ln p(x|z). Returns (loss, z, logs)."""
        z = q.rsample()
        return -self.log_prob(x, decode(z)), z, {}


def flat_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension but the first."""
    return t.flatten(1).sum(1)


from . import baselines, energy_score, likelihoods  # noqa: E402,F401  (register the built-ins)
