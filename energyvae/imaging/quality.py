"""Metrics for zero-shot image restoration (paper 001 §4.3, docs/methods.md §2): PSNR, SSIM, Consistency.

All functions take a batch ``x_hat`` (restored) and ``x`` (ground truth) of equal shape with the
batch first and return one value per image, ``Tensor[N]`` (float32 or float64, like the input).

- :func:`psnr`: ``10 log10(data_range^2 / mse)`` with the MSE over all non-batch elements of
  each image.  Identical images give ``+inf`` (no cap by default; pass ``max_db`` to clamp, e.g.
  for averaging over sets that may contain exact reconstructions).
- :func:`ssim`: ``torchmetrics.functional.image.structural_similarity_index_measure`` with
  ``reduction="none"`` (Gaussian window, ``sigma = 1.5``, 11x11, ``k1 = 0.01``, ``k2 = 0.03``),
  averaged over channels and pixels per image.  Images with a side below 11 (e.g. the 8x8
  digits) get a smaller window: side ``k`` = the largest odd number <= the shortest image side
  and Gaussian ``sigma = 1.5 k / 11`` (torchmetrics derives the Gaussian window size from
  ``sigma``; this choice yields exactly ``k``).  SSIM values computed with a shrunken window are
  not comparable with 11x11-window values on larger images.  Sides below 3 are rejected.
- :func:`consistency`: the EC-VAE/DDNM "Consistency" ``||A x_hat - A x||_1`` for a known
  degradation operator ``A`` (a callable on batches, e.g. channel mean for colorization, a mask
  for inpainting, average pooling for super-resolution).  The papers do not state the
  normalisation (EC-VAE reports 0.004 next to DDNM's 26.2), so the default is the *mean*
  absolute deviation over the elements of ``A x`` (independent of resolution);
  ``reduction="sum"`` gives the plain per-image L1 norm.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torchmetrics.functional.image import structural_similarity_index_measure

__all__ = ["psnr", "ssim", "consistency", "restoration_metrics", "ssim_window"]

_DEFAULT_KERNEL = 11
_DEFAULT_SIGMA = 1.5


def _check_pair(x_hat: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x_hat.shape != x.shape:
        raise ValueError("x_hat and x must have the same shape, got "
                         f"{tuple(x_hat.shape)} and {tuple(x.shape)}")
    if x.dim() < 2:
        raise ValueError(f"expected a batch [N, ...] with at least 2 dims, got shape {tuple(x.shape)}")
    dtype = torch.promote_types(x_hat.dtype, x.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    return x_hat.to(dtype), x.to(dtype)


def psnr(x_hat: torch.Tensor, x: torch.Tensor, data_range: float = 1.0, *,
         max_db: float | None = None) -> torch.Tensor:
    """Per-image PSNR in dB, ``Tensor[N]``: ``10 log10(data_range^2 / mean((x_hat - x)^2))``.

    ``+inf`` where the images are identical, unless ``max_db`` caps the value.
    """
    x_hat, x = _check_pair(x_hat, x)
    mse = ((x_hat - x) ** 2).flatten(1).mean(1)
    out = 10 * torch.log10(data_range**2 / mse)  # mse = 0 -> +inf
    if max_db is not None:
        out = out.clamp(max=max_db)
    return out


def ssim_window(height: int, width: int) -> tuple[int, float]:
    """(window side, Gaussian sigma) used by :func:`ssim` for an ``height x width`` image."""
    side = min(height, width)
    if side >= _DEFAULT_KERNEL:
        return _DEFAULT_KERNEL, _DEFAULT_SIGMA
    if side < 3:
        raise ValueError(f"SSIM needs images of at least 3x3 pixels, got {height}x{width}")
    k = side if side % 2 == 1 else side - 1
    return k, _DEFAULT_SIGMA * k / _DEFAULT_KERNEL


def _as_images(t: torch.Tensor, image_shape: Sequence[int] | None) -> torch.Tensor:
    if image_shape is not None:
        t = t.reshape(t.shape[0], *image_shape)
    if t.dim() == 3:  # [N, H, W] -> [N, 1, H, W]
        t = t.unsqueeze(1)
    if t.dim() != 4:
        raise ValueError("ssim expects images [N, C, H, W] or [N, H, W] (pass image_shape for flat "
                         f"vectors), got shape {tuple(t.shape)}")
    return t


def ssim(x_hat: torch.Tensor, x: torch.Tensor, data_range: float = 1.0, *,
         image_shape: Sequence[int] | None = None) -> torch.Tensor:
    """Per-image SSIM, ``Tensor[N]``, for images ``[N, C, H, W]`` or ``[N, H, W]``.

    Flat inputs ``[N, D]`` need ``image_shape`` (e.g. ``(1, 28, 28)``).  The window shrinks for
    images smaller than 11x11 (see the module docstring and :func:`ssim_window`).
    """
    x_hat, x = _check_pair(x_hat, x)
    x_hat, x = _as_images(x_hat, image_shape), _as_images(x, image_shape)
    k, sigma = ssim_window(x.shape[-2], x.shape[-1])
    return structural_similarity_index_measure(
        x_hat, x, gaussian_kernel=True, sigma=sigma, kernel_size=k, reduction="none",
        data_range=float(data_range),
    )


def consistency(A: Callable[[torch.Tensor], torch.Tensor], x_hat: torch.Tensor, x: torch.Tensor, *,
                reduction: str = "mean") -> torch.Tensor:
    """Per-image Consistency ``||A x_hat - A x||_1``, ``Tensor[N]``.

    ``A`` maps a batch ``[N, ...]`` to a batch ``[N, ...]``.  ``reduction="mean"`` (default) divides
    the L1 norm by the number of elements of ``A x`` per image; ``"sum"`` is the plain L1 norm.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    x_hat, x = _check_pair(x_hat, x)
    d = (A(x_hat) - A(x)).abs().flatten(1)
    return d.mean(1) if reduction == "mean" else d.sum(1)


@torch.no_grad()
def restoration_metrics(x_hat: torch.Tensor, x: torch.Tensor,
                        A: Callable[[torch.Tensor], torch.Tensor] | None = None, *,
                        data_range: float = 1.0, image_shape: Sequence[int] | None = None,
                        consistency_reduction: str = "mean", max_psnr_db: float | None = None,
                        ) -> dict[str, float]:
    """Means over the batch: ``{"psnr", "ssim", "mse"}`` plus ``"consistency"`` when ``A`` is given.

    ``psnr`` is the mean of per-image PSNRs (``inf`` if any image is reproduced exactly, unless
    ``max_psnr_db`` caps it); ``mse`` is the mean per-image MSE.
    """
    x_hat, x = _check_pair(x_hat, x)
    out = {
        "psnr": float(psnr(x_hat, x, data_range, max_db=max_psnr_db).mean()),
        "ssim": float(ssim(x_hat, x, data_range, image_shape=image_shape).mean()),
        "mse": float(((x_hat - x) ** 2).flatten(1).mean(1).mean()),
    }
    if A is not None:
        out["consistency"] = float(consistency(A, x_hat, x, reduction=consistency_reduction).mean())
    return out
