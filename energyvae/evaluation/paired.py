"""Paired comparisons of two models evaluated on the same test examples.

Two models' test NLLs, each with its own standard error over images, are a poor basis for
saying which model is better: most of an image's NLL is how hard the image is (its number of
strokes, its contrast, ...), and that difficulty is shared by both models. The two NLLs'
stderrs are dominated by this spread of difficulty, so their intervals overlap even when one
model is better on nearly every image.

Evaluated on the same images, the per-image difference ``d_i = a_i - b_i`` cancels the shared
difficulty; its mean is the same as the difference of the two mean NLLs, but its standard
error ``std(d, ddof=1) / sqrt(n)`` only contains how much the *difference* varies from image to
image (plus the estimators' own noise: importance sampling, AIS, dequantization), which is
usually far smaller. ``z = mean / stderr`` is the paired t statistic (about normal for the
hundreds of images used here).

Only a difference of the same images in the same order is paired: the callers check that the
split, the number of examples and the seed (which fixes binarization / dequantization noise)
agree.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["nats_to_bits_per_dim", "paired_difference"]


def _as_1d(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):                      # a torch tensor (any device, any dtype)
        x = x.detach().cpu().double().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"paired_difference: {name} is not a sequence of numbers ({e})") from None
    if arr.ndim != 1:
        raise ValueError(f"paired_difference: {name} must be 1-D, got shape {tuple(arr.shape)}")
    return arr


def paired_difference(a, b) -> dict:
    """Mean and paired standard error of ``a - b`` for two equally long 1-D sequences
    (tensors, arrays or lists) of per-example values, e.g. per-image NLLs of two models on the
    same test images, in the same order.

    Returns ``{"mean": mean(a - b), "stderr": std(a - b, ddof=1) / sqrt(n), "n": n,
    "z": mean / stderr}``. ``z`` is ``0`` when every difference is zero, ``+-inf`` when the
    differences are all the same nonzero value (stderr 0), and ``nan`` when a value is not
    finite (then mean and stderr follow IEEE arithmetic: ``inf`` / ``nan``).

    Raises ``ValueError`` for inputs that are not 1-D, of different lengths, or shorter than 2
    (a sample standard deviation needs two values).
    """
    a, b = _as_1d(a, "a"), _as_1d(b, "b")
    if len(a) != len(b):
        raise ValueError(f"paired_difference: a and b must have the same length, got {len(a)} and {len(b)}")
    n = len(a)
    if n < 2:
        raise ValueError(f"paired_difference: needs at least 2 pairs for a standard error, got {n}")
    with np.errstate(invalid="ignore", over="ignore"):
        d = a - b
        mean = float(d.mean())
        stderr = float(d.std(ddof=1) / math.sqrt(n))
    if not (math.isfinite(mean) and math.isfinite(stderr)):
        z = math.nan
    elif stderr == 0.0:
        z = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
    else:
        z = mean / stderr
    return {"mean": mean, "stderr": stderr, "n": n, "z": z}


def nats_to_bits_per_dim(nats, dims: int):
    """A per-example NLL (or a difference / stderr of NLLs) in nats as bits per dimension of
    ``dims``-dimensional data: ``nats / (dims ln 2)``. Works on numbers and arrays / tensors.

    For a difference of two models on the same dequantized images the data-space Jacobian
    term of bits/dim cancels, so this is also the difference of their bits/dim."""
    if isinstance(dims, bool) or not isinstance(dims, numbers.Integral) or dims <= 0:
        raise ValueError(f"nats_to_bits_per_dim: dims must be a positive integer, got {dims!r}")
    return nats / (int(dims) * math.log(2))
