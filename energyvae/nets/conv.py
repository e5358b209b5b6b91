"""Convolutional encoder / decoder (``name: conv``), the CIFAR-10 net of paper 002.

Paper 002 (CIFAR-10): encoder = four ``Conv2d(4x4, stride 2, padding 1)`` with 32, 64, 128,
256 channels, ReLU after each, then one Linear to the posterior parameters; decoder = four
``ConvTranspose2d(4x4, stride 2, padding 1)`` with 128, 64, 32, 3 channels, ReLU after all but
the last. Here the same net works for any square image of size 8..64 with any channel count:

Stage plan (:func:`spatial_sizes`). A ``Conv2d(k=4, s=2, p=1)`` maps a side ``n`` to
``floor(n / 2)``. The encoder halves the map once per entry of ``channels`` but stops early so
that the smallest map is at least 2x2::

    n_stages = min(len(channels), number of halvings n -> floor(n/2) that keep n >= 2)

e.g. 8: 8-4-2 (2 stages), 10: 10-5-2 (2), 16: 16-8-4-2 (3), 28: 28-14-7-3 (3),
32: 32-16-8-4-2 (4), 64: 64-32-16-8-4 (4 with the default 4 channels). Only the first
``n_stages`` entries of ``channels`` are used. The recorded sizes ``[H, s_1, ..., s_k]`` are
mirrored by the decoder: ``ConvTranspose2d(k=4, s=2, p=1, output_padding=op)`` maps ``n`` to
``2n + op``, with ``op = s_{i-1} - 2 s_i`` in {0, 1}, so the output is exactly H x W.

Encoder ``[B, C, H, W] -> [B, out_features]``::

    Conv(C -> c_1) act, Conv(c_1 -> c_2) act, ..., Conv(c_{k-1} -> c_k) act,
    flatten (c_k * s_k^2), [Linear(-> hidden) act,] Linear(-> out_features)

Decoder ``[B, latent_dim] -> [B, C_out, H, W]`` (``C_out`` = ``out_shape[0]``, any value,
e.g. ``2C`` for mean + scale)::

    [Linear(latent_dim -> hidden) act,] Linear(-> c_k * s_k^2) act, reshape (c_k, s_k, s_k),
    ConvT(c_k -> c_{k-1}) act, ..., ConvT(c_2 -> c_1) act, ConvT(c_1 -> C_out)

(the activation after the decoder's first Linear is our choice: the paper does not say). With
the defaults and a 3x32x32 input this is exactly the paper's net. Outputs are raw (logits,
means, ...). ``hidden`` (default None) adds one fully connected hidden layer on each side.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import torch
from torch import nn

from ..registry import check
from .base import DECODERS, ENCODERS
from .mlp import Activation, check_activation, make_activation

MIN_SIZE, MAX_SIZE = 8, 64


@dataclasses.dataclass
class ConvParams:
    """Parameters of the ``conv`` encoder and decoder (see the module docstring).

    channels: encoder channels per stride-2 stage (the decoder mirrors them); at most
        ``len(channels)`` stages are used, fewer for small images.
    activation: nonlinearity after every convolution (and hidden Linear).
    hidden: width of an optional extra fully connected layer (None: none).
    """

    channels: list[int] = dataclasses.field(default_factory=lambda: [32, 64, 128, 256])
    activation: Activation = "relu"
    hidden: int | None = None

    def __post_init__(self):
        check(isinstance(self.channels, (list, tuple)) and len(self.channels) > 0,
              f"channels: expected a non-empty list of positive ints, got {self.channels!r}")
        self.channels = list(self.channels)
        check(all(isinstance(c, int) and not isinstance(c, bool) and c > 0
                  for c in self.channels),
              f"channels: every entry must be a positive int, got {self.channels!r}")
        check_activation(self.activation)
        check(self.hidden is None or (isinstance(self.hidden, int)
                                      and not isinstance(self.hidden, bool) and self.hidden > 0),
              f"hidden: expected a positive int or null, got {self.hidden!r}")


def _image_shape(shape: Sequence[int], what: str) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    ok = (len(shape) == 3 and shape[0] > 0 and shape[1] == shape[2]
          and MIN_SIZE <= shape[1] <= MAX_SIZE)
    check(ok, f"conv {what}: needs a square image (C, H, W) with H = W in "
              f"{MIN_SIZE}..{MAX_SIZE}, got shape {shape}")
    return shape  # type: ignore[return-value]


def spatial_sizes(size: int, max_stages: int) -> list[int]:
    """``[size, s_1, ..., s_k]``: map sides after each ``Conv2d(4, 2, 1)`` stage (all >= 2)."""
    sizes = [size]
    while len(sizes) - 1 < max_stages and sizes[-1] // 2 >= 2:
        sizes.append(sizes[-1] // 2)
    return sizes


class ConvEncoder(nn.Module):
    """``[B, C, H, W] -> [B, out_features]``; ``self.sizes`` are the map sides per stage."""

    def __init__(self, params: ConvParams, in_shape: Sequence[int], out_features: int):
        super().__init__()
        c_in, size, _ = self.in_shape = _image_shape(in_shape, "encoder input")
        self.sizes = spatial_sizes(size, len(params.channels))
        chans = [c_in] + params.channels[: len(self.sizes) - 1]
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(a, b, 4, stride=2, padding=1), make_activation(params.activation)]
        layers.append(nn.Flatten())
        width = chans[-1] * self.sizes[-1] ** 2
        if params.hidden is not None:
            layers += [nn.Linear(width, params.hidden), make_activation(params.activation)]
            width = params.hidden
        layers.append(nn.Linear(width, int(out_features)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvDecoder(nn.Module):
    """``[B, latent_dim] -> [B, *out_shape]``, mirroring :class:`ConvEncoder`'s stages."""

    def __init__(self, params: ConvParams, latent_dim: int, out_shape: Sequence[int]):
        super().__init__()
        c_out, size, _ = self.out_shape = _image_shape(out_shape, "decoder output")
        self.sizes = spatial_sizes(size, len(params.channels))
        chans = [c_out] + params.channels[: len(self.sizes) - 1]
        act = params.activation
        self.start = (chans[-1], self.sizes[-1], self.sizes[-1])
        layers: list[nn.Module] = []
        width = int(latent_dim)
        if params.hidden is not None:
            layers += [nn.Linear(width, params.hidden), make_activation(act)]
            width = params.hidden
        layers += [nn.Linear(width, math.prod(self.start)), make_activation(act),
                   nn.Unflatten(1, self.start)]
        # stage i (deepest first) maps side sizes[i] -> sizes[i-1] and chans[i] -> chans[i-1]
        for i in range(len(self.sizes) - 1, 0, -1):
            op = self.sizes[i - 1] - 2 * self.sizes[i]
            layers.append(nn.ConvTranspose2d(chans[i], chans[i - 1], 4, stride=2, padding=1,
                                             output_padding=op))
            if i > 1:
                layers.append(make_activation(act))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


@ENCODERS.register("conv", ConvParams)
def conv_encoder(params: ConvParams, *, in_shape: Sequence[int],
                 out_features: int) -> ConvEncoder:
    """Encoder ``[B, C, H, W] -> [B, out_features]`` for square images of side 8..64."""
    return ConvEncoder(params, in_shape, out_features)


@DECODERS.register("conv", ConvParams)
def conv_decoder(params: ConvParams, *, latent_dim: int,
                 out_shape: Sequence[int]) -> ConvDecoder:
    """Decoder ``[B, latent_dim] -> [B, *out_shape]`` for square images of side 8..64."""
    return ConvDecoder(params, latent_dim, out_shape)
