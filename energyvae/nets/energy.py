"""Data-space energy networks E_w(x) -> [B] (``DATA_ENERGIES``; EC-VAE's E_w, paper 001).

Builders take ``data_shape`` ((C, H, W) or (D,)) and return an ``nn.Module`` mapping
``[B, *data_shape] -> [B]``.

- ``resnet`` (images, square side 8..64, any channel count): the single-scale ResNet of the
  EC-VAE authors' code (after CLEL):  Conv3x3(C -> c_1), then per stage i a 2x downsampling
  (stages after the first, while the map side is >= 4) and ``blocks`` pre-activation residual
  blocks  x + Conv3x3(act(Conv3x3(act(x))))  (1x1 shortcut when the width changes), then
  act, global mean (or sum) pool, Linear(c_k -> head) act Linear(head -> 1). The authors' demo
  uses channels (128, 256, 256, 256), 2 blocks per stage, head 2048, LeakyReLU(0.2) and spectral
  norm (these are the defaults); their ``MSResNet`` also runs copies at 1/2 and 1/4 scale and
  concatenates the pooled features: ``msresnet`` (``nets/msresnet.py``, any resolution).
  ``pool``: ``mean`` (the authors' global average) or ``sum`` over positions (both ResNet energies).
  ``downsample`` chooses the 2x reduction: ``avg`` (2x2 average pooling, the authors'), ``blur``
  (a [1, 2, 1] x [1, 2, 1] / 16 binomial low-pass, then every second pixel: Zhang 2019's BlurPool)
  or ``stride`` (a 3x3 convolution with stride 2). They were the suspects of the periodic grid
  that the EC chain painted into Fashion-MNIST samples; the diagnosis (``models/
  energy_calibration.py``) found the same grid with every one of them: its causes were the
  chain's step and the energy's free scale, not the downsampling.
- ``mlp`` (vectors or flattened images): Linear -> act -> ... -> Linear(-> 1).

``spectral_norm`` wraps every Conv2d / Linear in ``torch.nn.utils.parametrizations.spectral_norm``
(one power iteration per training-mode forward). Activations: ``leaky_relu`` (slope 0.2) or
``swish`` (SiLU).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Sequence

import torch
from torch import nn

from ..registry import Registry, check

DATA_ENERGIES = Registry("data energy")
Act = Literal["leaky_relu", "swish"]
MIN_SIZE, MAX_SIZE = 8, 64


def _act(name: str) -> nn.Module:
    return nn.LeakyReLU(0.2) if name == "leaky_relu" else nn.SiLU()


def _sn(layer: nn.Module, on: bool) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(layer) if on else layer


def _positive_ints(values, what: str) -> list[int]:
    check(isinstance(values, (list, tuple)) and len(values) > 0
          and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values),
          f"{what}: expected a non-empty list of positive ints, got {values!r}")
    return list(values)


@dataclass
class ResNetShapeParams:
    """What every ResNet energy shares (``resnet`` here, ``msresnet`` in msresnet.py)."""
    channels: list[int] = field(default_factory=lambda: [128, 256, 256, 256])   # width per stage
    blocks: int = 2                      # residual blocks per stage
    head: int = 2048                     # hidden width of the output MLP
    activation: Act = "leaky_relu"
    spectral_norm: bool = True
    pool: Literal["mean", "sum"] = "mean"

    def __post_init__(self):
        self.channels = _positive_ints(self.channels, "channels")
        check(1 <= self.blocks <= 256, f"blocks: must be in [1, 256], got {self.blocks}")
        check(self.head >= 1, f"head: must be >= 1, got {self.head}")


@dataclass
class ResNetEnergyParams(ResNetShapeParams):
    downsample: Literal["avg", "blur", "stride"] = "avg"


class ResBlock(nn.Module):
    """Pre-activation residual block: shortcut(x) + Conv3x3(act(Conv3x3(act(x))))."""

    def __init__(self, c_in: int, c_out: int, act: str, sn: bool):
        super().__init__()
        self.body = nn.Sequential(_act(act), _sn(nn.Conv2d(c_in, c_out, 3, padding=1), sn),
                                  _act(act), _sn(nn.Conv2d(c_out, c_out, 3, padding=1), sn))
        self.shortcut = nn.Identity() if c_in == c_out else _sn(nn.Conv2d(c_in, c_out, 1, bias=False), sn)

    def forward(self, x):
        return self.shortcut(x) + self.body(x)


class BlurPool(nn.Module):
    """Binomial low-pass [1, 2, 1] x [1, 2, 1] / 16 per channel (reflect padding), then stride 2."""

    def __init__(self, channels: int):
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", (torch.outer(k, k) / 16).expand(channels, 1, 3, 3).contiguous(),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        return nn.functional.conv2d(x, self.kernel.to(x.dtype), stride=2, groups=x.shape[1])


def _downsample(kind: str, channels: int, sn: bool) -> nn.Module:
    if kind == "avg":
        return nn.AvgPool2d(2)
    if kind == "blur":
        return BlurPool(channels)
    return _sn(nn.Conv2d(channels, channels, 3, stride=2, padding=1), sn)


class ResNetEnergy(nn.Module):
    def __init__(self, p: ResNetEnergyParams, data_shape: Sequence[int]):
        super().__init__()
        shape = tuple(int(s) for s in data_shape)
        check(len(shape) == 3 and shape[1] == shape[2] and MIN_SIZE <= shape[1] <= MAX_SIZE,
              f"resnet energy: needs square images (C, H, W) with H = W in {MIN_SIZE}..{MAX_SIZE}, "
              f"got shape {shape} (use energy.name: mlp for vectors)")
        sn, size, c = p.spectral_norm, shape[1], p.channels[0]
        layers: list[nn.Module] = [_sn(nn.Conv2d(shape[0], c, 3, padding=1), sn)]
        for i, width in enumerate(p.channels):
            if i > 0 and size >= 4:
                layers.append(_downsample(p.downsample, c, sn))
                size = (size + 1) // 2 if p.downsample != "avg" else size // 2
            for _ in range(p.blocks):
                layers.append(ResBlock(c, width, p.activation, sn))
                c = width
        layers.append(_act(p.activation))
        self.features, self.pool = nn.Sequential(*layers), p.pool
        self.head = nn.Sequential(_sn(nn.Linear(c, p.head), sn), _act(p.activation), _sn(nn.Linear(p.head, 1), sn))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        h = h.sum((2, 3)) if self.pool == "sum" else h.mean((2, 3))
        return self.head(h).squeeze(-1)


@dataclass
class MLPEnergyParams:
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    activation: Act = "leaky_relu"
    spectral_norm: bool = False

    def __post_init__(self):
        self.hidden = _positive_ints(self.hidden, "hidden")


class MLPEnergy(nn.Module):
    def __init__(self, p: MLPEnergyParams, data_shape: Sequence[int]):
        super().__init__()
        widths = [math.prod(int(s) for s in data_shape), *p.hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [_sn(nn.Linear(a, b), p.spectral_norm), _act(p.activation)]
        layers.append(_sn(nn.Linear(widths[-1], 1), p.spectral_norm))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


@DATA_ENERGIES.register("resnet", ResNetEnergyParams)
def _resnet(p: ResNetEnergyParams, *, data_shape, **_):
    return ResNetEnergy(p, data_shape)


@DATA_ENERGIES.register("mlp", MLPEnergyParams)
def _mlp(p: MLPEnergyParams, *, data_shape, **_):
    return MLPEnergy(p, data_shape)
