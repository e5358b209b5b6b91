"""The EC-VAE authors' multi-scale ResNet energy (``msresnet`` in ``DATA_ENERGIES``, paper 001).

Source: ``models/ebms.py`` (``MSResNet``, ``ResBlock``, ``get_mlp``; after CLEL's
``architectures.py``) and ``train_demo.py`` (``MSResNet([(128, 2), (256, 2), (256, 2), (256, 2)],
tau=1e-5)`` wrapped by ``utils.apply_sn``) of the authors' demo code, repository
``Luo-Yihong/EC-VAE``; written here from that structure. ``[B, C, H, W] -> [B]``::

    branch b = 1, 2, 3 on x_b = x, avgpool2(x), avgpool4(x) (own weights per branch):
        Conv3x3(C -> c_1), then per stage i: 2x2 average pooling (stages after the first),
        ``blocks`` pre-activation residual blocks  shortcut(h) + Conv3x3(act(Conv3x3(act(h))))
        (1x1 shortcut without bias when the width changes), then act, global mean (or sum) pool
    concatenate the three pooled vectors (3 c_k), Linear(-> head) act Linear(-> 1), divide by tau

With the defaults (channels 128, 256, 256, 256; 2 blocks; head 2048; LeakyReLU(0.2); spectral
norm on all 56 convolutions and Linear layers) and 3 channels this has the authors' 23,815,169
parameters at every resolution: nothing depends on H or W but the map sizes (32, 64 and 256 px
are tested). A stage's pooling is skipped once a branch's map is 1 x 1 (the authors' net at
32 px takes its 1/4 branch from 8 x 8 down to 1 x 1; inputs down to 4 x 4 work).

``tau``: the authors return E_net(x) / tau with tau = 1e-5 and run their chain on that. The
library's ``ec`` calibrator (``models/energy_calibration.py``) already folds tau into its
Langevin step and noise and expects E_net itself, as the ``resnet`` energy gives, so the default
here is tau = 1; ``tau: 1.0e-5`` returns the authors' scaled energy (for a chain written for it).
``pool``: ``mean`` (the authors' global average) or ``sum`` (a sum over positions: the energy
then grows with the image area). Spectral norm: ``torch.nn.utils.parametrizations.spectral_norm``
(one power iteration per training-mode forward). The authors' ``apply_sn`` uses the older
``torch.nn.utils.spectral_norm``: the same W / sigma(W), but it starts from random vectors (no
warm-up iterations) and updates v before u; with equal weights and power-iteration vectors
the two nets give the same energies. Weights start as the authors':
convolutions Kaiming-normal (fan in, linear gain), Linear N(0, 0.01), biases 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..registry import check
from .energy import DATA_ENERGIES, ResBlock, ResNetShapeParams, _act, _positive_ints, _sn


@dataclass
class MSResNetEnergyParams(ResNetShapeParams):
    tau: float = 1.0                     # the output is E_net / tau (authors: 1e-5, see above)
    scales: list[int] = field(default_factory=lambda: [1, 2, 4])   # average-pool factor per branch

    def __post_init__(self):
        super().__post_init__()
        self.scales = _positive_ints(self.scales, "scales")
        check(self.tau > 0, f"tau: must be > 0, got {self.tau}")


class _Branch(nn.Module):
    """Stem and stages of one scale; ``[B, C, h, w] -> [B, c_k]`` (act, then pooled)."""

    def __init__(self, p: MSResNetEnergyParams, c_in: int, side: int):
        super().__init__()
        c = p.channels[0]
        layers: list[nn.Module] = [nn.Conv2d(c_in, c, 3, padding=1)]
        for i, width in enumerate(p.channels):
            if i > 0 and side >= 2:
                layers.append(nn.AvgPool2d(2))
                side //= 2
            for _ in range(p.blocks):
                layers.append(ResBlock(c, width, p.activation, False))
                c = width
        layers.append(_act(p.activation))
        self.features, self.pool, self.width = nn.Sequential(*layers), p.pool, c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        return h.sum((2, 3)) if self.pool == "sum" else h.mean((2, 3))


class MSResNetEnergy(nn.Module):
    def __init__(self, p: MSResNetEnergyParams, data_shape: Sequence[int]):
        super().__init__()
        shape = tuple(int(s) for s in data_shape)
        smallest = min(shape[1:]) // max(p.scales) if len(shape) == 3 else 0
        check(len(shape) == 3 and shape[0] > 0 and smallest >= 1,
              f"msresnet energy: needs images (C, H, W) with H, W >= {max(p.scales)} (the largest "
              f"of scales {p.scales}), got shape {shape} (use energy.name: mlp for vectors)")
        self.scales, self.tau = list(p.scales), p.tau
        self.branches = nn.ModuleList(_Branch(p, shape[0], min(shape[1:]) // s) for s in p.scales)
        c = sum(b.width for b in self.branches)
        self.head = nn.Sequential(nn.Linear(c, p.head), _act(p.activation), nn.Linear(p.head, 1))
        for m in list(self.modules()):      # the authors' initialisation, then spectral norm on all layers
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0.0, 0.01)
                else:
                    nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="linear")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
                _sn(m, p.spectral_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [b(x if s == 1 else F.avg_pool2d(x, s)) for s, b in zip(self.scales, self.branches)]
        e = self.head(torch.cat(feats, dim=1)).squeeze(-1)
        return e / self.tau if self.tau != 1.0 else e


@DATA_ENERGIES.register("msresnet", MSResNetEnergyParams)
def _msresnet(p: MSResNetEnergyParams, *, data_shape, **_):
    return MSResNetEnergy(p, data_shape)
