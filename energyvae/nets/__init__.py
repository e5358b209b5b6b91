"""Encoder and decoder networks, chosen by name.

Interface (every registered builder follows it):
- encoder: ``ENCODERS.build(spec, in_shape=(C, H, W) or (D,), out_features=F)`` returns an
  ``nn.Module`` mapping ``[B, *in_shape] -> [B, F]``;
- decoder: ``DECODERS.build(spec, latent_dim=m, out_shape=(C, H, W) or (D,))`` returns an
  ``nn.Module`` mapping ``[B, m] -> [B, *out_shape]`` (raw outputs: logits, means, ...).
"""
from .base import DECODERS, ENCODERS  # noqa: F401
from . import conv, ecvae_nets, energy, mlp, msresnet  # noqa: E402,F401  (registers the built-in networks)
