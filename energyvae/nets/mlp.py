"""Fully connected encoder / decoder (``name: mlp``), plain or DenseNet-style.

Both directions use one module, :class:`MLPNet`, which flattens its input to a vector, runs a
fully connected body and reshapes the result to the requested output shape:

- encoder ``[B, *in_shape] -> [B, out_features]`` (images are flattened, ``C*H*W`` inputs);
- decoder ``[B, latent_dim] -> [B, *out_shape]`` (the last Linear has ``prod(out_shape)``
  outputs, reshaped to ``(C, H, W)`` for images).

Layouts (``d_in`` = flattened input width, ``d_out`` = flattened output width):

- ``dense=False`` (default): ``Linear(d_in, h1) -> act -> Linear(h1, h2) -> act -> ...
  -> Linear(h_last, d_out)``; no activation after the last layer (raw outputs).
  ``hidden=[]`` is a single ``Linear(d_in, d_out)``.
- ``dense=True``: one fully connected DenseNet block followed by a linear head, as in the toy
  2-D nets of "Variational Inference with Unnormalized Priors" (paper 002: "fully connected
  DenseNet blocks with hidden size of 16 and depth size of 4 ... weight normalization applied
  to all layers", i.e. ``hidden=[16, 16, 16, 16], dense=True, weight_norm=True``).
  Layer ``i`` (0-based) maps the concatenation ``[x, y_0, ..., y_{i-1}]`` of the block input
  and all previous layer outputs to ``y_i = act(Linear(.))`` of width ``hidden[i]`` (the growth
  of layer ``i``), so its input width is ``d_in + sum(hidden[:i])``. The head is
  ``Linear(d_in + sum(hidden), d_out)`` applied to the concatenation of the block input and
  every layer output. ``hidden=[16]*4`` thus means one dense block of depth 4 and growth 16;
  layer input widths ``d_in, d_in+16, d_in+32, d_in+48``, head input ``d_in+64``.

``weight_norm=True`` wraps every ``nn.Linear`` (head included) with
``torch.nn.utils.parametrizations.weight_norm`` (weight = g * v / ||v||, per output unit).

Activations: ``elu``, ``relu``, ``leaky_relu`` (negative slope 0.2), ``silu``, ``tanh``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Literal, Sequence

import torch
from torch import nn

from ..registry import check
from .base import DECODERS, ENCODERS

Activation = Literal["elu", "relu", "leaky_relu", "silu", "tanh"]

ACTIVATIONS = {
    "elu": nn.ELU,
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module for one of :data:`ACTIVATIONS`' names."""
    return ACTIVATIONS[name]()


def check_activation(name: object) -> None:
    check(name in ACTIVATIONS,
          f"activation: unknown {name!r} (choose from: {', '.join(ACTIVATIONS)})")


@dataclasses.dataclass
class MLPParams:
    """Parameters of the ``mlp`` encoder and decoder (see the module docstring for layouts).

    hidden: widths of the hidden layers (with ``dense=True``: the growth of each dense layer).
    activation: nonlinearity after every hidden layer.
    weight_norm: weight-normalize every Linear layer.
    dense: one DenseNet block (each layer sees the block input and all previous outputs).
    """

    hidden: list[int] = dataclasses.field(default_factory=lambda: [256, 256])
    activation: Activation = "elu"
    weight_norm: bool = False
    dense: bool = False

    def __post_init__(self):
        check(isinstance(self.hidden, (list, tuple)),
              f"hidden: expected a list of positive ints, got {self.hidden!r}")
        self.hidden = list(self.hidden)
        check(all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in self.hidden),
              f"hidden: every width must be a positive int, got {self.hidden!r}")
        check_activation(self.activation)
        check(not self.dense or len(self.hidden) > 0,
              "hidden: dense=True needs at least one layer (e.g. hidden: [16, 16, 16, 16])")


def _linear(d_in: int, d_out: int, weight_norm: bool) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    if weight_norm:
        layer = nn.utils.parametrizations.weight_norm(layer)
    return layer


class DenseBlock(nn.Module):
    """Fully connected DenseNet block: ``[B, d_in] -> [B, d_in + sum(growths)]``.

    Layer ``i`` takes ``cat([x, y_0, ..., y_{i-1}])`` (width ``d_in + sum(growths[:i])``) and
    outputs ``y_i = act(Linear(.))`` of width ``growths[i]``; the block returns
    ``cat([x, y_0, ..., y_last])``.
    """

    def __init__(self, d_in: int, growths: Sequence[int], activation: str, weight_norm: bool):
        super().__init__()
        self.in_widths = [d_in + sum(growths[:i]) for i in range(len(growths))]
        self.out_width = d_in + sum(growths)
        self.layers = nn.ModuleList(
            _linear(w, g, weight_norm) for w, g in zip(self.in_widths, growths))
        self.acts = nn.ModuleList(make_activation(activation) for _ in growths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for layer, act in zip(self.layers, self.acts):
            feats.append(act(layer(torch.cat(feats, dim=-1))))
        return torch.cat(feats, dim=-1)


def _shape(shape: Sequence[int], what: str) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    check(len(shape) in (1, 3) and all(s > 0 for s in shape),
          f"mlp: {what} must be (D,) or (C, H, W) with positive sizes, got {shape}")
    return shape


class MLPNet(nn.Module):
    """``[B, *in_shape] -> [B, *out_shape]``: flatten, fully connected body, reshape."""

    def __init__(self, params: MLPParams, in_shape: Sequence[int], out_shape: Sequence[int]):
        super().__init__()
        self.in_shape = _shape(in_shape, "input shape")
        self.out_shape = _shape(out_shape, "output shape")
        d_in, d_out = math.prod(self.in_shape), math.prod(self.out_shape)
        wn = params.weight_norm
        if params.dense:
            block = DenseBlock(d_in, params.hidden, params.activation, wn)
            self.body = nn.Sequential(block, _linear(block.out_width, d_out, wn))
        else:
            layers: list[nn.Module] = []
            width = d_in
            for h in params.hidden:
                layers += [_linear(width, h, wn), make_activation(params.activation)]
                width = h
            layers.append(_linear(width, d_out, wn))
            self.body = nn.Sequential(*layers)

    @property
    def block(self) -> DenseBlock | None:
        """The dense block when ``dense=True``, else None."""
        first = self.body[0]
        return first if isinstance(first, DenseBlock) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x.flatten(start_dim=1))
        return y.reshape(y.shape[0], *self.out_shape)


@ENCODERS.register("mlp", MLPParams)
def mlp_encoder(params: MLPParams, *, in_shape: Sequence[int], out_features: int) -> MLPNet:
    """Encoder ``[B, *in_shape] -> [B, out_features]`` (images are flattened)."""
    return MLPNet(params, in_shape, (out_features,))


@DECODERS.register("mlp", MLPParams)
def mlp_decoder(params: MLPParams, *, latent_dim: int, out_shape: Sequence[int]) -> MLPNet:
    """Decoder ``[B, latent_dim] -> [B, *out_shape]`` (raw outputs, reshaped to images)."""
    return MLPNet(params, (latent_dim,), out_shape)
