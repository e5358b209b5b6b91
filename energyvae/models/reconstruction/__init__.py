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
from ..base import RECONSTRUCTIONS  # noqa: F401
from .base import Decode, Reconstruction, flat_sum  # noqa: F401
from . import baselines, energy_score, likelihoods  # noqa: E402,F401  (register the built-ins)
