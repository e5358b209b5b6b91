"""The EC-VAE authors' encoder (``resnet18``) and generator (``fastgan``) for paper 001.

Sources: the authors' public demo code ("a demo version for roughly reproducing"), repository
``Luo-Yihong/EC-VAE``: ``models/res.py`` (``ResNet18Enc``, ``BasicBlockEnc``), ``models/fastae.py``
(``Generator_32``, ``InitLayer``, ``UpBlock``, ``UpBlockComp``, ``GLU``, ``fast_vae_32``) and
``train_demo.py`` (``fast_vae_32`` with 128 latents on STL-10 at 32 px in [-1, 1]). The nets
below are written from that structure; with the defaults, 3 x 32 x 32 images and 128 latents
they have exactly the authors' parameter counts (encoder 44,915,072, generator 32,521,728,
counted from their code instantiated on CPU; ``tests/nets/test_paper_nets.py``).

Encoder ``resnet18`` ``[B, C, H, W] -> [B, out_features]`` (their own ResNet-18, not
torchvision's: no max-pool, a stride-2 3x3 stem, widths w, 2w, 4w, 8w)::

    Conv3x3(C -> w, stride stem_stride, no bias) BN ReLU
    stage i = 0..len(blocks)-1, width w * 2^i: blocks[i] BasicBlocks, the first with stride 2
        (stride 1 in stage 0); BasicBlock(a -> b, s) = ReLU(BN(Conv3x3(b -> b)(ReLU(BN(Conv3x3
        (a -> b, stride s)(x))))) + shortcut(x)), shortcut = BN(Conv1x1(a -> b, stride s)) when
        s > 1 or a != b, else x; all convolutions without bias
    global average pool, Linear(8w -> out_features)

The authors' two heads, mu = tanh(Linear(8w -> m)) and log-variance Linear(8w -> m), are the
two halves of the one Linear(8w -> 2m) here (the same parameters and function): ``tanh``
chooses where the tanh goes: ``first_half`` (default: the Gaussian posterior's [mu, logvar]),
``all`` (a posterior whose features are all means: ``delta``, ``fixed``) or ``none``. Weights
start as the authors' (``initialize_weights``: convolutions and Linear N(0, 0.02), biases 0).
Any side >= 2 works (maps of side 1 stay 1 through later stride-2 stages).

Decoder ``fastgan`` ``[B, m] -> [B, C_out, H, W]``, H = W = 4 * 2^k (k >= 1), their trimmed
FastGAN generator (``Generator_32``: no skip-layer excitation, no noise injection)::

    reshape (m, 1, 1), ConvT4x4(m -> 2 c_4, no bias) BN GLU                 4 x 4, c_4 channels
    up-block j = 1..k (side 4 * 2^j): nearest 2x upsampling, Conv3x3(c_in -> 2 c_out) BN GLU,
        and for odd j (8, 32, 128, 512 px: their UpBlockComp) a second Conv3x3(c_out -> 2 c_out) BN GLU
    Conv1x1(c_H -> C_out, no bias), output activation (tanh: the authors', on [-1, 1] data)

GLU(h) = h[:, :c] * sigmoid(h[:, c:]); every convolution is spectrally normalised
(``torch.nn.utils.parametrizations.spectral_norm``, one power iteration per training-mode
forward; the authors use the older ``torch.nn.utils.spectral_norm``, whose iteration updates
v before u) when ``spectral_norm`` (default, as the authors). Loaded with the weights (and
power-iteration vectors) of the authors' ``fast_vae_32``, the encoder and the generator give
its outputs exactly in eval mode (checked once outside the suite). Channels c_s per side s from
``width`` w: c_4 = 2w, c_8 = c_16 = c_32 = w (the authors' 1024 / 512 / 512 / 512 at w = 512), and
c_s = max(1, w * 32 / s) beyond 32 px (256 at 64 px, 128 at 128, 64 at 256); ``channels``
(a list for sides 4, 8, 16, ...) overrides them. PyTorch's default initialisation, as in their
``fast_vae_32`` (which never applies its ``weights_init``). ``output``: ``tanh`` (default),
``sigmoid`` (data in [0, 1]) or ``none`` (raw means or logits; the library's usual decoder
output); it acts on every output channel, so a mean-and-scale decoder (2C channels) wants
``none``.

64 and 256 px (our design). Their code has no 64 px or 256 px VAE: ``Generator_32`` always
outputs 32 px, and their generic FastGAN ``Generator`` fails at 64 px (its forward reaches the
512 px branch) and carries skip-layer excitation the 32 px VAE does not have. Following the
pattern of both generators, each doubling adds one up-block (alternately UpBlockComp and
UpBlock, as FastGAN's feat_64 / feat_128 / feat_256), the widths halve beyond 32 px, and the
1x1 output convolution stays: 64 px has 4 up-blocks, 256 px 6. The encoder is unchanged (the
global pool makes it resolution independent; at 256 px its stem map is 128 x 128).

Batch norm, exact resume and DDP. Running means and variances (and ``num_batches_tracked``,
like the spectral-norm vectors ``_u``, ``_v``) are buffers: ``state_dict()`` holds them, so checkpoints restore them exactly, and the EMA copy
takes the live model's buffers at every update (``train/ema.py``) and evaluates in eval mode
with them. Under DDP the default ``batch_norm: global`` normalises with the statistics of the
global batch (``nets/norm.py``: two differentiable all-reduces per layer), so N processes
give the forward, gradients and running statistics of one process on the whole batch, on CPU
(gloo) and CUDA (nccl) alike; we do not convert to ``nn.SyncBatchNorm``, which refuses CPU
tensors and would need a conversion step in the trainer. ``batch_norm: local`` is plain
``nn.BatchNorm2d`` (per-process statistics, the authors' single-GPU code).
"""
from __future__ import annotations

import dataclasses
from typing import Literal, Sequence

import torch
from torch import nn

from ..registry import check
from .base import DECODERS, ENCODERS
from .norm import BatchNormMode, batch_norm

Tanh = Literal["first_half", "all", "none"]
Output = Literal["tanh", "sigmoid", "none"]


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _positive_ints(values, what: str, allow_empty: bool = False) -> list[int]:
    check(isinstance(values, (list, tuple)) and (allow_empty or len(values) > 0)
          and all(_positive_int(v) for v in values),
          f"{what}: expected a non-empty list of positive ints, got {values!r}")
    return list(values)


def _sn(layer: nn.Module, on: bool) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(layer) if on else layer


# ---- encoder ---------------------------------------------------------------------------------
@dataclasses.dataclass
class ResNet18Params:
    """Parameters of the ``resnet18`` encoder (module docstring).

    width: stage-0 width w (stages w, 2w, 4w, ...); blocks: BasicBlocks per stage;
    stem_stride: stride of the 3x3 stem; tanh: where the tanh of the authors' mean head goes;
    batch_norm: ``global`` (global-batch statistics under DDP) or ``local``.
    """

    width: int = 128
    blocks: list[int] = dataclasses.field(default_factory=lambda: [2, 2, 2, 2])
    stem_stride: int = 2
    tanh: Tanh = "first_half"
    batch_norm: BatchNormMode = "global"

    def __post_init__(self):
        check(_positive_int(self.width), f"width: expected a positive int, got {self.width!r}")
        self.blocks = _positive_ints(self.blocks, "blocks")
        check(self.stem_stride in (1, 2), f"stem_stride: must be 1 or 2, got {self.stem_stride!r}")


class BasicBlock(nn.Module):
    """ReLU(BN(Conv3x3(ReLU(BN(Conv3x3_s(x))))) + shortcut(x)), convolutions without bias."""

    def __init__(self, c_in: int, c_out: int, stride: int, bn: str):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), batch_norm(c_out, bn),
            nn.ReLU(), nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), batch_norm(c_out, bn))
        self.shortcut = (nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), batch_norm(c_out, bn)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet18Encoder(nn.Module):
    """``[B, C, H, W] -> [B, out_features]`` (module docstring)."""

    def __init__(self, p: ResNet18Params, in_shape: Sequence[int], out_features: int):
        super().__init__()
        shape = tuple(int(s) for s in in_shape)
        check(len(shape) == 3 and min(shape) > 0 and min(shape[1:]) >= 2,
              f"resnet18 encoder: needs an image shape (C, H, W) with H, W >= 2, got {shape}")
        out_features = int(out_features)
        check(p.tanh != "first_half" or out_features % 2 == 0,
              f"resnet18 encoder: tanh: first_half needs an even number of output features "
              f"(mean and log-variance), got {out_features}; use tanh: all or none")
        w = p.width
        layers: list[nn.Module] = [nn.Conv2d(shape[0], w, 3, stride=p.stem_stride, padding=1, bias=False),
                                   batch_norm(w, p.batch_norm), nn.ReLU()]
        c = w
        for i, n in enumerate(p.blocks):
            width = w * 2 ** i
            for j in range(n):
                layers.append(BasicBlock(c, width, 2 if (i > 0 and j == 0) else 1, p.batch_norm))
                c = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, out_features)
        self.tanh = {"first_half": out_features // 2, "all": out_features, "none": 0}[p.tanh]
        for m in self.modules():                    # the authors' initialize_weights
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(self.features(x).mean((2, 3)))
        if self.tanh == 0:
            return h
        return torch.cat([torch.tanh(h[:, :self.tanh]), h[:, self.tanh:]], dim=1)


@ENCODERS.register("resnet18", ResNet18Params)
def resnet18_encoder(params: ResNet18Params, *, in_shape: Sequence[int],
                     out_features: int) -> ResNet18Encoder:
    """The EC-VAE authors' ResNet-18 encoder ``[B, C, H, W] -> [B, out_features]``."""
    return ResNet18Encoder(params, in_shape, out_features)


# ---- decoder ---------------------------------------------------------------------------------
@dataclasses.dataclass
class FastGANParams:
    """Parameters of the ``fastgan`` decoder (module docstring).

    width: w, the channels at 8..32 px (2w at 4 px, halving per doubling beyond 32 px);
    channels: explicit channels for sides 4, 8, 16, ... (overrides ``width``; at least
    ``log2(H / 4) + 1`` entries); output: activation of the output; spectral_norm: on every
    convolution; batch_norm: ``global`` (global-batch statistics under DDP) or ``local``.
    """

    width: int = 512
    channels: list[int] | None = None
    output: Output = "tanh"
    spectral_norm: bool = True
    batch_norm: BatchNormMode = "global"

    def __post_init__(self):
        check(_positive_int(self.width), f"width: expected a positive int, got {self.width!r}")
        if self.channels is not None:
            self.channels = _positive_ints(self.channels, "channels")

    def channels_for(self, size: int) -> list[int]:
        """Channels at sides 4, 8, ..., ``size``."""
        sides = [4 * 2 ** j for j in range(up_blocks(size) + 1)]
        if self.channels is not None:
            check(len(self.channels) >= len(sides),
                  f"channels: {size} px needs {len(sides)} entries (sides {sides}), got {self.channels}")
            return self.channels[:len(sides)]
        w = self.width
        return [2 * w if s == 4 else w if s <= 32 else max(1, w * 32 // s) for s in sides]


def up_blocks(size: int) -> int:
    """k with size = 4 * 2^k, k >= 1 (ConfigError for other sizes)."""
    k = (size // 4).bit_length() - 1
    check(size >= 8 and size == 4 * 2 ** k,
          f"fastgan decoder: the side must be 4 * 2^k (8, 16, 32, 64, 128, 256, ...), got {size}")
    return k


class GLU(nn.Module):
    """h[:, :c] * sigmoid(h[:, c:]) over 2c channels."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        a, b = h.chunk(2, dim=1)
        return a * torch.sigmoid(b)


def _conv_bn_glu(c_in: int, c_out: int, p: FastGANParams) -> list[nn.Module]:
    return [_sn(nn.Conv2d(c_in, 2 * c_out, 3, padding=1, bias=False), p.spectral_norm),
            batch_norm(2 * c_out, p.batch_norm), GLU()]


class FastGANDecoder(nn.Module):
    """``[B, latent_dim] -> [B, *out_shape]`` (module docstring)."""

    def __init__(self, p: FastGANParams, latent_dim: int, out_shape: Sequence[int]):
        super().__init__()
        shape = tuple(int(s) for s in out_shape)
        check(len(shape) == 3 and shape[0] > 0 and shape[1] == shape[2],
              f"fastgan decoder: needs a square image shape (C, H, W), got {shape}")
        k = up_blocks(shape[1])
        ch = p.channels_for(shape[1])
        self.init = nn.Sequential(
            _sn(nn.ConvTranspose2d(int(latent_dim), 2 * ch[0], 4, bias=False), p.spectral_norm),
            batch_norm(2 * ch[0], p.batch_norm), GLU())
        blocks = []
        for j in range(1, k + 1):
            layers = [nn.Upsample(scale_factor=2, mode="nearest"), *_conv_bn_glu(ch[j - 1], ch[j], p)]
            if j % 2 == 1:                          # UpBlockComp at 8, 32, 128, ... px
                layers += _conv_bn_glu(ch[j], ch[j], p)
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.Sequential(*blocks)
        self.to_image = _sn(nn.Conv2d(ch[-1], shape[0], 1, bias=False), p.spectral_norm)
        self.output = {"tanh": nn.Tanh(), "sigmoid": nn.Sigmoid(), "none": nn.Identity()}[p.output]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.init(z.view(z.shape[0], -1, 1, 1))
        return self.output(self.to_image(self.blocks(h)))


@DECODERS.register("fastgan", FastGANParams)
def fastgan_decoder(params: FastGANParams, *, latent_dim: int,
                    out_shape: Sequence[int]) -> FastGANDecoder:
    """The EC-VAE authors' trimmed FastGAN generator ``[B, latent_dim] -> [B, C, H, W]``,
    H = W = 4 * 2^k (32 px: theirs; 64, 256 px: one more up-block per doubling)."""
    return FastGANDecoder(params, latent_dim, out_shape)
