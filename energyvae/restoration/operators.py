"""Linear degradations y = A x with a pseudo-inverse A+ for zero-shot restoration (paper 001 §4.3,
its Appendix B; the DDNM operators).

Every operator works on batches ``[B, C, H, W]`` and offers ``A(x)``, ``pinv(y)`` (A+) and
``project_null(x)`` = (I - A+ A) x. Each A+ here is the Moore-Penrose pseudo-inverse, so both
A A+ A = A and A+ A A+ = A+ hold:

- ``colorize``: A = mean over the 3 channels ([B, 1, H, W]); A+ = the gray value in every channel.
- ``inpaint``: A = x * mask (missing pixels set to 0, shape kept); A+ = A. The mask is boolean
  (True = observed), of shape [H, W] or anything broadcasting to the batch. ``OPERATORS["inpaint"]``
  draws a centre box or random pixels (``mask="box" | "random"``), or takes an explicit [H, W]
  mask tensor (``mask=tensor``: bool, or 0 / 1 values) such as a user's mask file.
- ``sr2`` / ``sr4``: A = average pooling over f x f blocks; A+ = nearest upsampling by f.

``OPERATORS[task](shape, **options)`` builds the operator for images of shape ``(C, H, W)`` and
raises :class:`RestorationError` when the task cannot apply to that shape.
"""
from __future__ import annotations

import abc
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..errors import EnergyVAEError

__all__ = ["RestorationError", "Operator", "Colorize", "Inpaint", "SuperResolution", "OPERATORS",
           "box_mask", "random_mask"]


class RestorationError(EnergyVAEError, ValueError):
    """A degradation that cannot apply to the given images or options."""


class Operator(abc.ABC):
    """A linear degradation: subclasses define ``A`` and ``pinv``."""

    @abc.abstractmethod
    def A(self, x: torch.Tensor) -> torch.Tensor:
        """y = A x for a batch [B, C, H, W]."""

    @abc.abstractmethod
    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """A+ y, the Moore-Penrose pseudo-inverse applied to a batch."""

    def project_null(self, x: torch.Tensor) -> torch.Tensor:
        """(I - A+ A) x: the part of ``x`` that A does not see."""
        return x - self.pinv(self.A(x))


def _chw(shape: Sequence[int], task: str) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise RestorationError(f"{task}: needs images (C, H, W), got data of shape {tuple(shape)}")
    return tuple(int(s) for s in shape)


class Colorize(Operator):
    def __init__(self, shape: Sequence[int]):
        c, _, _ = _chw(shape, "colorize")
        if c != 3:
            raise RestorationError(f"colorize: needs RGB images (3 channels), got {c} channel(s)")

    def A(self, x):
        return x.mean(1, keepdim=True)

    def pinv(self, y):
        return y.expand(-1, 3, -1, -1)


class Inpaint(Operator):
    def __init__(self, mask: torch.Tensor):
        self.mask = mask.bool()

    def A(self, x):
        return x * self.mask.to(x.device, x.dtype)

    pinv = A


class SuperResolution(Operator):
    def __init__(self, shape: Sequence[int], factor: int):
        _, h, w = _chw(shape, f"sr{factor}")
        if h % factor or w % factor:
            raise RestorationError(f"sr{factor}: image size {h}x{w} is not divisible by {factor}")
        self.factor = factor

    def A(self, x):
        return F.avg_pool2d(x, self.factor)

    def pinv(self, y):
        return y.repeat_interleave(self.factor, -2).repeat_interleave(self.factor, -1)


def box_mask(h: int, w: int, fraction: float = 0.25) -> torch.Tensor:
    """[H, W] mask, False on a centred box covering about ``fraction`` of the area."""
    bh, bw = max(1, round(h * fraction**0.5)), max(1, round(w * fraction**0.5))
    mask = torch.ones(h, w, dtype=torch.bool)
    mask[(h - bh) // 2:(h - bh) // 2 + bh, (w - bw) // 2:(w - bw) // 2 + bw] = False
    return mask


def random_mask(h: int, w: int, fraction: float = 0.5, seed: int = 0) -> torch.Tensor:
    """[H, W] mask, False on ``round(fraction * H * W)`` pixels drawn without replacement."""
    missing = torch.randperm(h * w, generator=torch.Generator().manual_seed(seed))[:round(fraction * h * w)]
    mask = torch.ones(h * w, dtype=torch.bool)
    mask[missing] = False
    return mask.view(h, w)


def _explicit_mask(mask: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``mask`` checked to be an [H, W] mask of bools or 0 / 1 values, as bool."""
    if tuple(mask.shape) != (h, w):
        raise RestorationError(f"inpaint: the mask is {tuple(mask.shape)}, the images are {h}x{w}")
    if mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
        raise RestorationError("inpaint: a mask tensor must hold bools or 0 / 1 values")
    return mask.bool()


def _inpaint(shape: Sequence[int], mask: str | torch.Tensor = "box", fraction: float | None = None,
             seed: int = 0) -> Inpaint:
    """Inpainting with a centre box (default 1/4 of the area) or random pixels (default 1/2) missing,
    or with an explicit [H, W] ``mask`` tensor (True = observed; ``fraction`` must then be None)."""
    _, h, w = _chw(shape, "inpaint")
    if isinstance(mask, torch.Tensor):
        if fraction is not None:
            raise RestorationError("inpaint: fraction applies to the box / random masks, not a mask tensor")
        return Inpaint(_explicit_mask(mask, h, w))
    if mask not in ("box", "random"):
        raise RestorationError(f"inpaint: mask must be 'box' or 'random', got {mask!r}")
    if fraction is not None and not 0 < fraction < 1:
        raise RestorationError(f"inpaint: fraction must be in (0, 1), got {fraction}")
    if mask == "box":
        return Inpaint(box_mask(h, w, 0.25 if fraction is None else fraction))
    return Inpaint(random_mask(h, w, 0.5 if fraction is None else fraction, seed))


OPERATORS: dict[str, Callable[..., Operator]] = {
    "colorize": Colorize,
    "inpaint": _inpaint,
    "sr2": lambda shape: SuperResolution(shape, 2),
    "sr4": lambda shape: SuperResolution(shape, 4),
}
