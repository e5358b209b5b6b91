"""Plain-PyTorch replicas of energyvae's ``mlp`` and ``conv`` nets, and pythae wrappers of them,
for ``benchmarks/speed.py``.

The replicas are written out layer by layer (``nn.Sequential``), not imported from
``energyvae.nets``, so that the minimal loop and the pythae model owe nothing to energyvae's
modules; :func:`copy_weights` then checks, tensor by tensor, that a replica has the same
parameter shapes as energyvae's net (same order) and copies energyvae's initial weights into it,
and :func:`check_same_function` that both compute the same outputs, so all three implementations
train the same function from the same start.

- ``mlp`` (energyvae/nets/mlp.py, ``dense=False``, no weight norm): encoder
  ``Flatten, Linear(784, h1), act, ..., Linear(h_last, 2m)``; decoder
  ``Linear(m, h1), act, ..., Linear(h_last, 784), Unflatten(1, (C, H, W))``.
- ``conv`` (energyvae/nets/conv.py): encoder ``Conv2d(4, 2, 1)`` stages with an activation after
  each, Flatten, Linear(c_k s_k^2, 2m); decoder Linear(m, c_k s_k^2), act, Unflatten,
  ``ConvTranspose2d(4, 2, 1, output_padding=op)`` stages (act after all but the last); the
  stage sizes follow :func:`energyvae.nets.conv.spatial_sizes`' rule, re-derived here
  (28: 28-14-7-3).

The encoders output ``[mean, logvar]`` (2m features, split in halves, as energyvae's Gaussian
posterior); the decoders output Bernoulli logits.

pythae (0.1.2) is imported lazily inside :func:`pythae_vae`, in the process that ``speed.py``
relaunched with its private install folder on PYTHONPATH.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

ACTIVATIONS = {"elu": nn.ELU, "relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2),
               "silu": nn.SiLU, "tanh": nn.Tanh}


def mlp_nets(data_shape: Sequence[int], latent_dim: int, hidden: Sequence[int],
             activation: str) -> tuple[nn.Module, nn.Module]:
    """(encoder x -> [B, 2m], decoder z -> logits [B, *data_shape]) of energyvae's ``mlp``."""
    act = ACTIVATIONS[activation]
    d = math.prod(data_shape)
    enc: list[nn.Module] = [nn.Flatten()]
    width = d
    for h in hidden:
        enc += [nn.Linear(width, h), act()]
        width = h
    enc.append(nn.Linear(width, 2 * latent_dim))
    dec: list[nn.Module] = []
    width = latent_dim
    for h in hidden:
        dec += [nn.Linear(width, h), act()]
        width = h
    dec += [nn.Linear(width, d), nn.Unflatten(1, tuple(data_shape))]
    return nn.Sequential(*enc), nn.Sequential(*dec)


def _sizes(size: int, stages: int) -> list[int]:
    out = [size]
    while len(out) - 1 < stages and out[-1] // 2 >= 2:
        out.append(out[-1] // 2)
    return out


def conv_nets(data_shape: Sequence[int], latent_dim: int, channels: Sequence[int],
              activation: str = "relu") -> tuple[nn.Module, nn.Module]:
    """(encoder, decoder) of energyvae's ``conv`` net without the optional hidden layer."""
    act = ACTIVATIONS[activation]
    c_in, size = int(data_shape[0]), int(data_shape[1])
    sizes = _sizes(size, len(channels))
    chans = [c_in] + list(channels[: len(sizes) - 1])
    enc: list[nn.Module] = []
    for a, b in zip(chans[:-1], chans[1:]):
        enc += [nn.Conv2d(a, b, 4, stride=2, padding=1), act()]
    enc += [nn.Flatten(), nn.Linear(chans[-1] * sizes[-1] ** 2, 2 * latent_dim)]
    start = (chans[-1], sizes[-1], sizes[-1])
    dec: list[nn.Module] = [nn.Linear(latent_dim, math.prod(start)), act(), nn.Unflatten(1, start)]
    for i in range(len(sizes) - 1, 0, -1):
        dec.append(nn.ConvTranspose2d(chans[i], chans[i - 1], 4, stride=2, padding=1,
                                      output_padding=sizes[i - 1] - 2 * sizes[i]))
        if i > 1:
            dec.append(act())
    return nn.Sequential(*enc), nn.Sequential(*dec)


def n_params(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


@torch.no_grad()
def copy_weights(src: nn.Module, dst: nn.Module, what: str) -> None:
    """Copy ``src``'s parameters into ``dst`` in order, asserting equal count and shapes."""
    ps, pd = list(src.parameters()), list(dst.parameters())
    assert len(ps) == len(pd), f"{what}: {len(ps)} parameter tensors in energyvae's net, {len(pd)} in the replica"
    for i, (a, b) in enumerate(zip(ps, pd)):
        assert a.shape == b.shape, f"{what}: parameter {i} has shape {tuple(a.shape)} vs {tuple(b.shape)}"
        b.copy_(a)


@torch.no_grad()
def check_same_function(src: nn.Module, dst: nn.Module, inp: torch.Tensor, what: str) -> None:
    a, b = src(inp), dst(inp)
    assert a.shape == b.shape, f"{what}: output shape {tuple(a.shape)} vs {tuple(b.shape)}"
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), \
        f"{what}: outputs differ by {(a - b).abs().max().item():.3g}"


def pythae_vae(encoder: nn.Module, decoder: nn.Module, data_shape: Sequence[int], latent_dim: int):
    """pythae's ``VAE`` (``reconstruction_loss='bce'``) around the replica nets.

    pythae's BCE loss is ``F.binary_cross_entropy`` on probabilities, so the decoder wrapper
    applies a sigmoid to the logits (pythae's own default decoders end in a Sigmoid for the
    same reason); the encoder wrapper splits the 2m features into ``embedding`` (mean) and
    ``log_covariance`` (log-variance).
    """
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        def __init__(self, net: nn.Module):
            BaseEncoder.__init__(self)
            self.net = net

        def forward(self, x):
            mean, logvar = self.net(x).chunk(2, dim=-1)
            return ModelOutput(embedding=mean, log_covariance=logvar)

    class Decoder(BaseDecoder):
        def __init__(self, net: nn.Module):
            BaseDecoder.__init__(self)
            self.net = net

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

    cfg = VAEConfig(input_dim=tuple(int(s) for s in data_shape), latent_dim=latent_dim,
                    reconstruction_loss="bce")
    return VAE(cfg, encoder=Encoder(encoder), decoder=Decoder(decoder))
