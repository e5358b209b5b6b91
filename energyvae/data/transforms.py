"""Per-batch preprocessing from raw storage to model space, and the bits/dim conversion.

Notation for images with D = C*H*W dimensions:

- ``x`` in {0..255}^D: the stored uint8 pixels;
- ``y = x + u`` in [0, 256)^D: dequantized data (``u ~ U[0,1)^D``; ``u = 0`` without dequantization);
- ``v = y / 256`` in [0, 1)^D: the "continuous [0,1]" variable;
- ``m = f(v)``: model space, what :meth:`Preprocess.__call__` returns and the model's density lives on.

``f`` is elementwise: ``c v`` (scale 01), ``2 c v - 1`` (pm1), or ``logit(a + (1 - 2a) v)``
(uniform_logit), where ``c = 1`` when dequantizing and ``c = 256/255`` without (then
``m = x/255``). :meth:`Preprocess.log_det` is ``log|det df/dv|`` and
``-log p_y(y) = -log p_m(m) - log_det + D log 256``, so bits/dim = that / (D log 2).
With uniform dequantization this upper-bounds the discrete bits/dim of x (Theis et al. 2016).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class Preprocess:
    """Raw batch -> float32 model-space batch (see the module docstring for the spaces).

    ``kind`` is "image" (uint8 raw) or "vector" (float raw, passed through unchanged; every
    option here is then ignored). ``value_range`` is the closed range of model-space values, or
    None when unbounded (logit, vectors).
    """

    def __init__(self, kind: str = "image", scale: str = "01", binarize: bool = False,
                 dequantize: str = "none", logit_alpha: float = 0.05):
        assert kind in ("image", "vector") and scale in ("01", "pm1")
        assert dequantize in ("none", "uniform", "uniform_logit")
        self.kind, self.scale, self.binarize = kind, scale, binarize
        self.dequantize, self.alpha = dequantize, float(logit_alpha)
        if kind == "vector" or dequantize == "uniform_logit":
            self.value_range = None
        else:
            self.value_range = (-1.0, 1.0) if scale == "pm1" else (0.0, 1.0)

    @classmethod
    def from_config(cls, cfg, kind: str) -> "Preprocess":
        return cls(kind, cfg.scale, cfg.binarize, cfg.dequantize, cfg.logit_alpha)

    def __repr__(self):
        return (f"Preprocess(kind={self.kind!r}, scale={self.scale!r}, binarize={self.binarize}, "
                f"dequantize={self.dequantize!r}, logit_alpha={self.alpha})")

    def __call__(self, x_raw: torch.Tensor) -> torch.Tensor:
        """Map a raw batch to model space; binarization/dequantization draw from torch's global RNG."""
        x = x_raw.to(torch.float32)
        if self.kind == "vector":
            return x
        if self.binarize:
            return torch.bernoulli(x / 255)
        if self.dequantize == "none":
            v01 = x / 255
        else:
            v01 = (x + torch.rand_like(x)) / 256
            if self.dequantize == "uniform_logit":
                return torch.logit(self.alpha + (1 - 2 * self.alpha) * v01)
        return v01 * 2 - 1 if self.scale == "pm1" else v01

    def _dims(self, x_model: torch.Tensor) -> int:
        return x_model[0].numel() if x_model.dim() > 1 else 1

    def log_det(self, x_model: torch.Tensor) -> torch.Tensor:
        """Per-example ``log|det dm/dv|`` (shape ``[N]``) at model-space points ``x_model``.

        Converts the model's density ``p_m`` on model space into the density ``p_v`` of the
        dequantized data rescaled to [0, 1)^D, ``v = (x + u) / 256``:
        ``log p_v(v) = log p_m(m) + log_det``; the density of ``y = x + u`` in [0, 256)^D is
        then ``log p_y = log p_v - D log 256``. Zero for vectors and binarized data (no
        continuous change of variables there).
        """
        n, d = x_model.shape[0], self._dims(x_model)
        if self.kind == "vector" or self.binarize:
            return x_model.new_zeros(n)
        if self.dequantize == "uniform_logit":
            m = x_model.reshape(n, -1)
            # dm/dv = (1 - 2a) / (s (1 - s)), s = sigmoid(m); -log s(1-s) = softplus(m) + softplus(-m)
            return d * math.log(1 - 2 * self.alpha) + (F.softplus(m) + F.softplus(-m)).sum(1)
        c = 1.0 if self.dequantize == "uniform" else 256 / 255
        a = 2.0 if self.scale == "pm1" else 1.0
        return x_model.new_full((n,), d * math.log(a * c))

    def bits_per_dim(self, nll_model_space: torch.Tensor, x_model: torch.Tensor) -> torch.Tensor:
        """Per-example bits/dim of the 8-bit data from a model-space NLL in nats (``[N]``).

        Images: ``(nll - log_det + D log 256) / (D log 2)``, the NLL of the dequantized data
        ``y`` in [0, 256)^D per dimension in bits (8 for a uniform model). Binarized images:
        ``nll / (D log 2)``, bits per binary pixel. Vectors: ``nll / (D log 2)`` unchanged.
        """
        d = self._dims(x_model)
        if self.kind == "vector" or self.binarize:
            return nll_model_space / (d * math.log(2))
        return (nll_model_space - self.log_det(x_model) + d * math.log(256)) / (d * math.log(2))

    def to_unit(self, x_model: torch.Tensor) -> torch.Tensor:
        """Model space -> [0, 1] for display (clamped); vectors are returned unchanged."""
        if self.kind == "vector":
            return x_model
        if self.dequantize == "uniform_logit":
            x = (torch.sigmoid(x_model) - self.alpha) / (1 - 2 * self.alpha)
        else:
            x = (x_model + 1) / 2 if self.scale == "pm1" else x_model
        return x.clamp(0, 1)


# ------------------------------------------------------------------------------- augmentation
#: names accepted by ``data.augment``
AUGMENTATIONS = ("hflip",)
_M32 = 0xFFFFFFFF
_STREAMS = {"hflip": 0x68666C70}     # one independent stream per augmentation ("hflp")


def _mul32(h, c: int):
    """``h * c mod 2**32`` for ``h`` in [0, 2**32) (int or int64 tensor) with every intermediate
    below 2**49, so int64 tensors never overflow and each device computes the same bits."""
    return (h * (c & 0xFFFF) + (((h * (c >> 16)) & 0xFFFF) << 16)) & _M32


def _mix32(h):
    """A bijective 32-bit integer hash (the "lowbias32" mixer: xor-shift / multiply rounds)."""
    h = h & _M32
    h = h ^ (h >> 16)
    h = _mul32(h, 0x7FEB352D)
    h = h ^ (h >> 15)
    h = _mul32(h, 0x846CA68B)
    return h ^ (h >> 16)


def _step_key(stream: int, seed: int, step: int) -> int:
    h = _mix32(stream)
    for v in (seed, step):
        v &= (1 << 64) - 1
        h = _mix32(_mix32(h ^ (v & _M32)) ^ (v >> 32))
    return h


def flip_mask(n: int, seed: int, step: int, rank: int = 0, world: int = 1,
              device: torch.device | str | None = None) -> torch.Tensor:
    """Which of the ``n`` examples of a local batch to flip at ``step`` (bool ``[n]``, on ``device``).

    Example ``j`` of rank ``rank`` is position ``rank + world * j`` of the step's global batch (how
    the trainer's ``BatchStream`` deals a global batch to the processes), and its flip is one bit
    of a counter-based hash of (seed, step, position): no generator state, nothing to checkpoint,
    the same bits on CPU and GPU, so a resumed run flips exactly as the uninterrupted one, the
    ranks' bits are disjoint draws, and the union of the ranks' flips is the 1-process flips.
    """
    key = _step_key(_STREAMS["hflip"], seed, step)
    pos = torch.arange(n, dtype=torch.int64, device=device) * world + rank
    return ((_mix32(_mix32(pos) ^ key) >> 31) & 1).bool()


def hflip(x: torch.Tensor, seed: int, step: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """Random horizontal flips of a batch ``[N, C, H, W]`` (any dtype), each example with
    probability 1/2, decided by :func:`flip_mask` (deterministic from seed, step, rank and world).
    Uses no global RNG and no host synchronisation (``torch.where``, not boolean indexing)."""
    mask = flip_mask(len(x), seed, step, rank, world, x.device)
    return torch.where(mask.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)


def augment(x: torch.Tensor, names, seed: int, step: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """Apply the ``data.augment`` list ``names`` (in order) to a raw training batch."""
    for name in names:
        if name == "hflip":
            x = hflip(x, seed, step, rank, world)
        else:
            raise ValueError(f"unknown augmentation {name!r} (choose from: {', '.join(AUGMENTATIONS)})")
    return x
