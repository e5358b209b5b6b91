"""Image statistics behind the analysis figures (docs/methods.md §1, "Analyses"), numbers only:
per-pixel variance over decoder draws, normalised residuals, 2-D FFT spectra, the radially
averaged power spectrum and a periodic-artifact score. Images are float ``[N, C, H, W]``
(tensors or arrays); every function returns NumPy values. :mod:`energyvae.viz.analysis` draws
them."""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["as_images", "as_numpy", "image_spectrum", "lattice_power_fraction", "normalized_residuals",
           "pixel_variance", "radial_power_spectrum"]


def as_numpy(x) -> np.ndarray:
    """A tensor or array as float32 NumPy (on the CPU, detached)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    return np.asarray(x, dtype=np.float32)


def as_images(images) -> np.ndarray:
    """Validate ``[N, C, H, W]`` with C in {1, 3}; return float32 clamped to [0, 1]."""
    x = as_numpy(images)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must be [N, C, H, W] with C in (1, 3), got shape {x.shape}")
    return np.clip(np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


def pixel_variance(draws, ddof: int = 1) -> np.ndarray:
    """Per-pixel variance ``[H, W]`` over ``S`` draws ``[S, C, H, W]``, averaged over channels.

    ``ddof=1`` (default) is the unbiased sample variance; with a single draw the variance is 0.
    """
    x = as_images(draws).astype(np.float64)
    if x.shape[0] == 0:
        raise ValueError("pixel_variance: no draws")
    if x.shape[0] == 1:
        return np.zeros(x.shape[2:], dtype=np.float64)
    return x.var(axis=0, ddof=ddof).mean(axis=0)


def normalized_residuals(x, x_hat, scale=None, eps: float = 1e-12) -> np.ndarray:
    """Flat array of the finite normalised residuals ``r = (x - x_hat) / s``.

    ``scale`` ``s``: ``None`` for the residuals' own standard deviation (over all finite
    entries; the residuals are divided by it, not centred, so a bias stays visible; a zero
    std leaves them unscaled), a positive float, or an
    array / tensor broadcastable to ``x`` (e.g. the decoder's per-pixel sigma ``[N, C, H, W]``
    or ``[C, H, W]``). Scales below ``eps`` are raised to ``eps``. ``x`` and ``x_hat`` may have
    any shape (not only images) but must match; values are not clamped.
    """
    a, b = as_numpy(x).astype(np.float64), as_numpy(x_hat).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"x and x_hat must have the same shape, got {a.shape} and {b.shape}")
    r = a - b
    if scale is None:
        finite = r[np.isfinite(r)]
        s = float(finite.std()) if finite.size else 1.0
        r = r / (s if s > eps else 1.0)
    else:
        s = as_numpy(scale).astype(np.float64) if not isinstance(scale, (int, float)) \
            else np.float64(scale)
        try:
            s = np.broadcast_to(s, r.shape)
        except ValueError:
            raise ValueError(f"scale of shape {np.shape(s)} does not broadcast to {r.shape}") \
                from None
        if np.any(s < 0):
            raise ValueError("scale must be positive")
        r = r / np.maximum(s, eps)
    r = r.reshape(-1)
    return r[np.isfinite(r)]


def _fft_chunks(images, chunk: int = 256):
    x = as_images(images)
    if x.shape[0] == 0:
        raise ValueError("no images")
    for s in range(0, x.shape[0], chunk):
        part = x[s:s + chunk].astype(np.float64)
        f = np.fft.fftshift(np.fft.fft2(part, axes=(-2, -1), norm="ortho"), axes=(-2, -1))
        yield np.abs(f)                       # [n, C, H, W]


def image_spectrum(images, log: bool = True, eps: float = 1e-8) -> np.ndarray:
    """Mean 2-D FFT spectrum ``[H, W]`` of ``images`` ``[N, C, H, W]``, fftshifted.

    The FFT is orthonormal (``norm="ortho"``) per image and channel; the zero frequency sits at
    ``(H // 2, W // 2)``. ``log=True`` (default) returns the mean over images and channels of
    ``ln(|F| + eps)``; ``log=False`` the mean magnitude ``|F|``. A constant image has all its
    magnitude at the centre.
    """
    total, count = None, 0
    for mag in _fft_chunks(images):
        v = np.log(mag + eps) if log else mag
        s = v.sum(axis=(0, 1))
        total = s if total is None else total + s
        count += mag.shape[0] * mag.shape[1]
    return total / count


def radial_power_spectrum(images) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum: ``(freq, power)``, both 1-D.

    Power ``|F|^2`` (orthonormal FFT, mean over images and channels) averaged over rings of
    radius ``sqrt(fx^2 + fy^2)`` in cycles per pixel, binned with width ``1 / min(H, W)``
    from 0 to 0.5 (``min(H, W) // 2 + 1`` bins); ``freq`` holds the bin centres. Bin 0 is
    the mean (DC) term alone.
    """
    total, count, shape = None, 0, None
    for mag in _fft_chunks(images):
        s = (mag ** 2).sum(axis=(0, 1))
        total = s if total is None else total + s
        count += mag.shape[0] * mag.shape[1]
        shape = mag.shape[-2:]
    power2d = total / count
    h, w = shape
    fy = np.fft.fftshift(np.fft.fftfreq(h))[:, None]
    fx = np.fft.fftshift(np.fft.fftfreq(w))[None, :]
    width = 1.0 / min(h, w)
    k = np.rint(np.sqrt(fx ** 2 + fy ** 2) / width).astype(int)
    nb = min(h, w) // 2 + 1
    keep = k < nb
    sums = np.bincount(k[keep], weights=power2d[keep], minlength=nb)
    cnts = np.bincount(k[keep], minlength=nb)
    power = np.where(cnts > 0, sums / np.maximum(cnts, 1), np.nan)
    return np.arange(nb) * width, power


def lattice_power_fraction(images, periods: tuple[int, ...] = (2, 4)) -> float:
    """Fraction of the (mean-removed) power of ``images`` ``[N, C, H, W]`` that sits on the
    frequency lattice of a pattern repeating every ``p`` pixels, p in ``periods``.

    With P(u, v) = mean over images and channels of |F(u, v)|^2 (orthonormal 2-D FFT of each
    image minus its mean), returns sum P over the lattice {(u, v) != (0, 0): u = 0 mod H/p,
    v = 0 mod W/p for some p dividing both H and W} divided by sum P. A pattern with period 2
    (Nyquist) or 4 along an axis, such as the grid that 2x2 average pooling leaves in an
    energy's input gradient, puts all its power there; smooth natural images put little. The
    ratio of this number for samples to that of real data is the periodic-artifact score of
    ``benchmarks/ecvae_grid.py`` (a ratio above 1: more lattice power than the data has).
    Periods that do not divide the image size are skipped; NaN if none divides. Any real values
    work (signed ones too: an input gradient), NaN counted as 0.
    """
    x = np.nan_to_num(as_numpy(images).astype(np.float64))
    if x.ndim != 4:
        raise ValueError(f"images must be [N, C, H, W], got shape {x.shape}")
    h, w = x.shape[-2:]
    steps = [(h // p, w // p) for p in periods if h % p == 0 and w % p == 0]
    if not steps:
        return float("nan")
    mask = np.zeros((h, w), bool)
    for sh, sw in steps:
        mask[::sh, ::sw] = True
    mask[0, 0] = False
    total = on = 0.0
    for s in range(0, x.shape[0], 256):
        part = x[s:s + 256]
        part = part - part.mean(axis=(-2, -1), keepdims=True)
        power = np.abs(np.fft.fft2(part, axes=(-2, -1), norm="ortho")) ** 2
        total += float(power.sum())
        on += float(power[..., mask].sum())
    return on / total if total > 0 else 0.0
