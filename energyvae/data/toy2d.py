"""Toy 2-D data: the FFJORD / BNAF (Cao et al. 2019) sets and the potentials U1..U4 of
Rezende & Mohamed (2015, Table 1).

Generators take ``(n, seed)`` and return float32 ``[n, 2]``, deterministic given the seed
(``numpy.random.default_rng``). Points are i.i.d.: where FFJORD uses an evenly spaced grid of
angles (rings, moons) or exact halves (spirals), we draw them uniformly at random, which is the
same distribution. Scales follow FFJORD's ``lib/toy_data.py``:

- ``8gaussians``: centres ``4 (cos k pi/4, sin k pi/4) / 1.414``, std ``0.5 / 1.414``, equal weights.
- ``checkerboard``: uniform on the 8 dark 2x2 squares of a checkerboard on ``[-4, 4]^2``
  (those with ``floor(x/2) + floor(y/2)`` even); density 1/32 there.
- ``2spirals``: ``t = sqrt(U) * 3 pi``, arm ``(-t cos t + 0.5 U', t sin t + 0.5 U'')`` or its
  negation, divided by 3, plus N(0, 0.1^2) noise.
- ``moons``: sklearn's two moons with noise 0.1, then ``2 x + (-1, -0.2)`` (noise std 0.2).
- ``rings``: 4 equally likely circles of radius 3, 2.25, 1.5, 0.75, plus N(0, 0.08^2) noise.

U1..U4 are sampled EXACTLY by rejection from a uniform proposal on a box ``B`` with a proven
envelope ``M >= max exp(-U)``. U2..U4 are not integrable in z1, so their target is
``exp(-U)`` on ``z1 in [-4, 4]`` (the domain of the paper's figures); U1's is on all of R^2.
The box drops a relative mass (computed by adaptive quadrature) below 1e-14 in every case:

====  ==================  ======================  ==============  ========================
name  box B (z1 x z2)     relative mass outside    Z = int exp(-U)  envelope M (proof)
====  ==================  ======================  ==============  ========================
U1    [-5,5] x [-5,5]     7.7e-16                  6.5371521928     1 + e^{-50/9}: radial factor
                                                                    <= 1; one of |z1 -+ 2| >= 2
U2    [-4,4] x [-4,4]     5.8e-15                  8.0212104788     1: a single exp(-q), q >= 0
U3    [-4,4] x [-5,5]     6.7e-20                  14.037118338     2: sum of two exp(-q), q >= 0
U4    [-4,4] x [-8,4]     1.6e-15                  15.039769648     2: sum of two exp(-q), q >= 0
====  ==================  ======================  ==============  ========================
"""
from __future__ import annotations

import math

import numpy as np
import torch

# (z1_low, z1_high, z2_low, z2_high), envelope M, log Z over the target domain (quadrature)
U_BOXES = {"U1": (-5.0, 5.0, -5.0, 5.0), "U2": (-4.0, 4.0, -4.0, 4.0),
           "U3": (-4.0, 4.0, -5.0, 5.0), "U4": (-4.0, 4.0, -8.0, 4.0)}
U_ENVELOPES = {"U1": 1.0 + math.exp(-50.0 / 9.0), "U2": 1.0, "U3": 2.0, "U4": 2.0}
U_LOG_Z = {"U1": math.log(6.5371521928), "U2": math.log(8.0212104788),
           "U3": math.log(14.0371183379), "U4": math.log(15.0397696478)}
TOY_SETS = ("8gaussians", "checkerboard", "2spirals", "moons", "rings", "U1", "U2", "U3", "U4")
_RING_RADII = (3.0, 2.25, 1.5, 0.75)
_RING_STD = 0.08
_G8_SCALE, _G8_STD = 4.0 / 1.414, 0.5 / 1.414


def _g8_centers():
    a = np.arange(8) * np.pi / 4
    return np.stack([np.cos(a), np.sin(a)], 1) * _G8_SCALE


# ------------------------------------------------------------------------------- potentials
def potential(name: str, z):
    """U(z) of Rezende & Mohamed (2015) for ``name`` in U1..U4; works on torch or numpy ``[..., 2]``."""
    lib = torch if isinstance(z, torch.Tensor) else np
    z1, z2 = z[..., 0], z[..., 1]
    w1 = lib.sin(2 * math.pi * z1 / 4)

    def lse(a, b):  # -log(exp(-a) + exp(-b)), stable
        m = lib.minimum(a, b)
        return m - lib.log1p(lib.exp(-lib.abs(a - b)))

    if name == "U1":
        r = lib.sqrt(z1 ** 2 + z2 ** 2)
        return 0.5 * ((r - 2) / 0.4) ** 2 + lse(0.5 * ((z1 - 2) / 0.6) ** 2, 0.5 * ((z1 + 2) / 0.6) ** 2)
    if name == "U2":
        return 0.5 * ((z2 - w1) / 0.4) ** 2
    if name == "U3":
        w2 = 3 * lib.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
        return lse(0.5 * ((z2 - w1) / 0.35) ** 2, 0.5 * ((z2 - w1 + w2) / 0.35) ** 2)
    if name == "U4":
        w3 = 3 / (1 + lib.exp(-(z1 - 1) / 0.3))
        return lse(0.5 * ((z2 - w1) / 0.4) ** 2, 0.5 * ((z2 - w1 + w3) / 0.35) ** 2)
    raise KeyError(f"no potential {name!r} (choose from U1, U2, U3, U4)")


def log_density_unnormalized(name: str, z: torch.Tensor) -> torch.Tensor:
    """Log density, up to a constant, of the distribution :func:`sample` draws from, at ``z [..., 2]``.

    U1..U4: ``-U(z)``, and ``-inf`` outside the target domain (``|z1| > 4`` for U2..U4;
    subtract ``U_LOG_Z[name]`` to normalize). 8gaussians, checkerboard and rings: the exact
    normalized log density (rings: angle-averaged Gaussians, a Rice mixture). 2spirals and moons
    have no closed form and raise KeyError.
    """
    z = torch.as_tensor(z, dtype=torch.get_default_dtype()) if not torch.is_tensor(z) else z
    if name in U_BOXES:
        out = -potential(name, z)
        if name != "U1":
            out = out.masked_fill(z[..., 0].abs() > 4, -math.inf)
        return out
    if name == "8gaussians":
        c = torch.as_tensor(_g8_centers(), dtype=z.dtype, device=z.device)
        d2 = ((z[..., None, :] - c) ** 2).sum(-1)
        comp = -d2 / (2 * _G8_STD ** 2) - math.log(2 * math.pi * _G8_STD ** 2)
        return torch.logsumexp(comp, -1) - math.log(8)
    if name == "checkerboard":
        z1, z2 = z[..., 0], z[..., 1]
        inside = (z1.abs() <= 4) & (z2.abs() <= 4) & ((torch.floor(z1 / 2) + torch.floor(z2 / 2)) % 2 == 0)
        return torch.where(inside, torch.full_like(z1, -math.log(32)), torch.full_like(z1, -math.inf))
    if name == "rings":
        s2, r = _RING_STD ** 2, torch.linalg.vector_norm(z, dim=-1)[..., None]
        radii = torch.as_tensor(_RING_RADII, dtype=z.dtype, device=z.device)
        arg = r * radii / s2   # log I0(x) = log i0e(x) + x
        comp = (-(r ** 2 + radii ** 2) / (2 * s2) + torch.log(torch.special.i0e(arg)) + arg
                - math.log(2 * math.pi * s2))
        return torch.logsumexp(comp, -1) - math.log(4)
    raise KeyError(f"no closed-form log density for {name!r}")


def _rejection(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    a1, b1, a2, b2 = U_BOXES[name]
    m, rate = U_ENVELOPES[name], math.exp(U_LOG_Z[name]) / ((b1 - a1) * (b2 - a2) * U_ENVELOPES[name])
    out, have = [], 0
    while have < n:
        k = int((n - have) / rate * 1.1) + 1000
        z = np.stack([rng.uniform(a1, b1, k), rng.uniform(a2, b2, k)], 1)
        keep = z[rng.uniform(0.0, m, k) < np.exp(-potential(name, z))]
        out.append(keep)
        have += len(keep)
    return np.concatenate(out)[:n]


# ------------------------------------------------------------------------------- generators
def sample(name: str, n: int, seed: int = 0) -> np.ndarray:
    """``n`` i.i.d. points of toy set ``name`` as float32 ``[n, 2]``, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    if name in U_BOXES:
        x = _rejection(name, n, rng)
    elif name == "8gaussians":
        x = _g8_centers()[rng.integers(0, 8, n)] + rng.standard_normal((n, 2)) * _G8_STD
    elif name == "checkerboard":
        x1 = rng.random(n) * 4 - 2
        x2 = rng.random(n) - rng.integers(0, 2, n) * 2 + np.floor(x1) % 2
        x = np.stack([x1, x2], 1) * 2
    elif name == "2spirals":
        t = np.sqrt(rng.random(n)) * 3 * np.pi
        arm = np.stack([-np.cos(t) * t + rng.random(n) * 0.5, np.sin(t) * t + rng.random(n) * 0.5], 1)
        x = arm * np.where(rng.random(n) < 0.5, 1.0, -1.0)[:, None] / 3 + rng.standard_normal((n, 2)) * 0.1
    elif name == "moons":
        t, upper = rng.random(n) * np.pi, rng.random(n) < 0.5
        x = np.where(upper[:, None], np.stack([np.cos(t), np.sin(t)], 1),
                     np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1))
        x = (x + rng.standard_normal((n, 2)) * 0.1) * 2 + np.array([-1.0, -0.2])
    elif name == "rings":
        r = np.asarray(_RING_RADII)[rng.integers(0, 4, n)]
        a = rng.random(n) * 2 * np.pi
        x = np.stack([np.cos(a), np.sin(a)], 1) * r[:, None] + rng.standard_normal((n, 2)) * _RING_STD
    else:
        raise KeyError(f"unknown toy set {name!r} (choose from {', '.join(TOY_SETS)})")
    return x.astype(np.float32)
