"""Feature-based sample metrics: FID, KID, Inception Score, improved precision and recall.

All of them compare sets of inputs through a feature network ``net`` (see
:mod:`energyvae.evaluation.features`): the library's own classifier (:class:`FeatureNet`), the
optional Inception-v3 (:class:`InceptionFeatures`), or ``None`` / :class:`RawFeatures` for the
raw coordinates of vector data. Inputs are display-space float ``[N, C, H, W]`` images in
[0, 1] or float ``[N, D]`` vectors. With a non-Inception net the numbers are comparable between
runs on the same dataset, not with published Inception-based values.

- **FID** (Heusel et al. 2017): ``||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^{1/2})`` of the
  feature means / covariances (unbiased, ``N - 1``). Images: torchmetrics'
  ``FrechetInceptionDistance`` with our net as a custom feature module (``normalize=True``,
  ``input_img_size`` = the image shape, used by torchmetrics' one-image dummy forward that
  infers the feature width). Vectors: :func:`frechet_distance` on the feature statistics.
  :func:`frechet_distance` is our own float64 implementation with a symmetric, stable matrix
  square root: ``Tr (S1 S2)^{1/2} = Tr (S1^{1/2} S2 S1^{1/2})^{1/2}``, both from ``eigh`` with
  eigenvalues clipped at 0 (the argument is symmetric PSD, unlike ``S1 S2``).
- **KID** (Binkowski et al. 2018): torchmetrics' ``KernelInceptionDistance`` (unbiased MMD^2
  with the cubic polynomial kernel ``(f.g / F + 1)^3``) over ``kid_subsets`` random subsets of
  ``min(kid_subset_size, n_real, n_fake)`` examples; returns the mean and the standard
  deviation over subsets. Seeded by ``seed`` (torch's global RNG is forked, not touched).
- **IS** (Salimans et al. 2016) of the fake set: ``exp(E_x KL(p(y|x) || p(y)))`` with ``p(y|x)``
  the softmax of the classifier logits and ``p(y)`` their mean within each of ``is_splits``
  random splits; mean and standard deviation over splits, via torchmetrics' ``InceptionScore``
  with a custom module returning the logits (``normalize=False``: torchmetrics 1.9 would cast
  even custom inputs to uint8 with ``normalize=True``). It ranges from 1 (every sample gets the
  same prediction) to K (confident predictions spread evenly over K classes). Needs a net with
  logits.
- **Precision / recall** (Kynkaanniemi et al. 2019, "Improved precision and recall metric for
  assessing generative models"): each real feature ``r`` gets the radius ``NND_k(r)``, the
  distance to its k-th nearest neighbour among the real features (itself excluded, duplicates
  counted); the real manifold is the union of the closed balls ``B(r, NND_k(r))``. precision =
  fraction of fake features inside the real manifold (``||f - r|| <= NND_k(r)`` for some r);
  recall = fraction of real features inside the fake manifold built the same way from the
  fakes. Distances are Euclidean in float64, computed in ``chunk_size x chunk_size`` blocks
  (memory O(chunk_size^2 + N)).
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import EnergyVAEError

__all__ = ["DEFAULT_METRICS", "frechet_distance", "feature_statistics", "extract", "fid",
           "kernel_inception_distance", "inception_score", "inception_score_from_logits",
           "knn_radii", "in_manifold", "precision_recall", "compute_sample_metrics"]

DEFAULT_METRICS = ("fid", "kid", "is", "precision", "recall")
KNOWN_METRICS = frozenset(DEFAULT_METRICS)


# ------------------------------------------------------------------------------ Frechet
def _f64(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().to(torch.float64).numpy()
    return np.asarray(a, dtype=np.float64)


def _psd_eigvals_clean(w: np.ndarray) -> np.ndarray:
    """Eigenvalues of a symmetric PSD matrix with round-off removed: values below
    ``d * eps * max|w|`` (numerically zero, including small negatives) become exactly 0, so that
    null directions (e.g. dead ReLU features) add no spurious ``sqrt(round-off)`` terms."""
    tol = len(w) * np.finfo(np.float64).eps * max(float(np.abs(w).max(initial=0.0)), np.finfo(np.float64).tiny)
    return np.where(w > tol, w, 0.0)


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(_psd_eigvals_clean(w))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ``||mu1 - mu2||^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr((sigma1 sigma2)^{1/2})`` with the trace
    term computed as ``sum sqrt(eig(sigma1^{1/2} sigma2 sigma1^{1/2}))`` (symmetric PSD, so
    ``eigh`` applies); in both eigendecompositions eigenvalues below ``d * eps * max eig`` are
    round-off and set to 0 (as a rank-revealing pseudo-inverse would), and the result is
    clipped at 0. Accepts NumPy arrays or tensors; ``sigma`` may be a scalar for 1-D data.
    """
    mu1, mu2 = np.atleast_1d(_f64(mu1)), np.atleast_1d(_f64(mu2))
    s1, s2 = np.atleast_2d(_f64(sigma1)), np.atleast_2d(_f64(sigma2))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise EnergyVAEError(f"frechet_distance: inconsistent shapes mu1 {mu1.shape}, sigma1 {s1.shape}, "
                             f"mu2 {mu2.shape}, sigma2 {s2.shape}")
    if not all(np.isfinite(a).all() for a in (mu1, mu2, s1, s2)):
        raise EnergyVAEError("frechet_distance: non-finite mean or covariance")
    r1 = _sqrt_psd(s1)
    m = r1 @ s2 @ r1
    tr_covmean = np.sqrt(_psd_eigvals_clean(np.linalg.eigvalsh((m + m.T) / 2))).sum()
    diff = mu1 - mu2
    fd = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean
    return float(max(fd, 0.0))


def feature_statistics(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[F]`` and unbiased covariance ``[F, F]`` (float64) of ``[N, F]`` features."""
    f = _f64(feats).reshape(len(feats), -1)
    if len(f) < 2:
        raise EnergyVAEError(f"feature statistics need at least 2 examples, got {len(f)}")
    return f.mean(0), np.atleast_2d(np.cov(f, rowvar=False))


# ------------------------------------------------------------------------------ helpers
class _Module(nn.Module):
    """``net.features`` (or ``net.logits``) as an ``nn.Module`` returning float64 on the CPU,
    the form torchmetrics expects for a custom feature extractor."""

    def __init__(self, net, what: str = "features"):
        super().__init__()
        self.net, self.what = net, what

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = getattr(self.net, self.what)(x)
        return out.reshape(len(x), -1).to(torch.float64).cpu()


def _resolve_net(net):
    if net is None:
        from .features import RawFeatures
        return RawFeatures()
    return net


def _has_logits(net) -> bool:
    return callable(getattr(net, "logits", None))


@torch.no_grad()
def extract(net, x: torch.Tensor, batch_size: int = 500, what: str = "features") -> torch.Tensor:
    """``net.features`` (or ``net.logits``) of ``x`` in batches, as a float64 CPU tensor."""
    mod = _Module(_resolve_net(net), what)
    return torch.cat([mod(x[s:s + batch_size]) for s in range(0, len(x), batch_size)])


def _quiet_metric(cls, **kwargs):
    with warnings.catch_warnings():   # "will save all extracted features in buffer"
        warnings.simplefilter("ignore", UserWarning)
        return cls(**kwargs)


def _compute_seeded(metric, seed: int):
    """``metric.compute()`` with torch's global RNG seeded inside a fork (restored afterwards)."""
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*degrees of freedom", category=UserWarning)  # 1 IS split
        torch.manual_seed(seed)
        return metric.compute()


def _check_pair(real, fake, name="compute_sample_metrics") -> tuple[torch.Tensor, torch.Tensor]:
    real, fake = torch.as_tensor(real), torch.as_tensor(fake)
    for what, x in (("real", real), ("fake", fake)):
        if not x.is_floating_point():
            raise EnergyVAEError(f"{name}: {what} inputs must be float [N, C, H, W] images in [0, 1] or "
                                 f"[N, D] vectors, got dtype {x.dtype} (see features.to_unit_images)")
        if x.dim() not in (2, 4):
            raise EnergyVAEError(f"{name}: {what} inputs must be [N, C, H, W] images or [N, D] vectors, "
                                 f"got shape {list(x.shape)}")
        if len(x) < 2:
            raise EnergyVAEError(f"{name}: need at least 2 {what} examples, got {len(x)}")
        if not torch.isfinite(x).all():
            raise EnergyVAEError(f"{name}: {what} inputs contain non-finite values")
        if x.dim() == 4 and (x.min() < -1e-6 or x.max() > 1 + 1e-6):
            raise EnergyVAEError(f"{name}: {what} images must lie in [0, 1] (display space), got values in "
                                 f"[{float(x.min()):.3g}, {float(x.max()):.3g}]")
    if real.shape[1:] != fake.shape[1:]:
        raise EnergyVAEError(f"{name}: real and fake examples differ in shape: {list(real.shape[1:])} "
                             f"vs {list(fake.shape[1:])}")
    return real, fake


# ------------------------------------------------------------------------------ FID / KID / IS
def fid(real01: torch.Tensor, fake01: torch.Tensor, net=None, batch_size: int = 500) -> float:
    """FID between ``real01`` and ``fake01`` in ``net``'s feature space (module docstring)."""
    real01, fake01 = _check_pair(real01, fake01, "fid")
    net = _resolve_net(net)
    if real01.dim() != 4:   # vectors: our own Frechet distance on the feature statistics
        return frechet_distance(*feature_statistics(extract(net, real01, batch_size)),
                                *feature_statistics(extract(net, fake01, batch_size)))
    from torchmetrics.image.fid import FrechetInceptionDistance
    metric = _quiet_metric(FrechetInceptionDistance, feature=_Module(net), normalize=True,
                           input_img_size=tuple(int(s) for s in real01.shape[1:]))
    for x, real in ((real01, True), (fake01, False)):
        for s in range(0, len(x), batch_size):
            metric.update(x[s:s + batch_size], real=real)
    return float(metric.compute())


def kernel_inception_distance(real01: torch.Tensor, fake01: torch.Tensor, net=None, *, subsets: int = 100,
                              subset_size: int = 1000, batch_size: int = 500,
                              seed: int = 0) -> tuple[float, float]:
    """KID mean and standard deviation over subsets (torchmetrics; module docstring)."""
    real01, fake01 = _check_pair(real01, fake01, "kid")
    from torchmetrics.image.kid import KernelInceptionDistance
    size = int(min(subset_size, len(real01), len(fake01)))
    metric = _quiet_metric(KernelInceptionDistance, feature=_Module(_resolve_net(net)), subsets=int(subsets),
                           subset_size=size, normalize=True)
    for x, real in ((real01, True), (fake01, False)):
        for s in range(0, len(x), batch_size):
            metric.update(x[s:s + batch_size], real=real)
    mean, std = _compute_seeded(metric, seed)
    return float(mean), float(std)


def _inception_score(module: nn.Module, x: torch.Tensor, splits: int, batch_size: int,
                     seed: int) -> tuple[float, float]:
    from torchmetrics.image.inception import InceptionScore
    splits = int(max(1, min(splits, len(x))))
    metric = _quiet_metric(InceptionScore, feature=module, splits=splits, normalize=False)
    for s in range(0, len(x), batch_size):
        metric.update(x[s:s + batch_size])
    mean, std = _compute_seeded(metric, seed)
    std = float(std)
    return float(mean), (0.0 if not np.isfinite(std) else std)


def inception_score(x01: torch.Tensor, net, *, splits: int = 10, batch_size: int = 500,
                    seed: int = 0) -> tuple[float, float]:
    """IS of ``x01`` under ``net``'s classifier: mean and standard deviation over splits."""
    if not _has_logits(net):
        raise EnergyVAEError("the Inception Score needs a classifier feature net with logits "
                             "(raw-coordinate features have none)")
    return _inception_score(_Module(net, "logits"), torch.as_tensor(x01), splits, batch_size, seed)


class _Identity(nn.Module):
    def forward(self, x):
        return x.to(torch.float64)


def inception_score_from_logits(logits: torch.Tensor, *, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """IS from precomputed ``[N, K]`` logits (same computation as :func:`inception_score`)."""
    logits = torch.as_tensor(logits)
    return _inception_score(_Identity(), logits, splits, max(len(logits), 1), seed)


# ------------------------------------------------------------------------------ precision / recall
def _sqdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return d2.clamp_min_(0)


def knn_radii(feats, k: int = 3, chunk_size: int = 1024) -> torch.Tensor:
    """``[N]`` distances from each row to its k-th nearest other row (float64, chunked)."""
    f = torch.as_tensor(feats).detach().cpu().to(torch.float64).reshape(len(feats), -1)
    n = len(f)
    if not 1 <= k < n:
        raise EnergyVAEError(f"precision/recall: k = {k} needs at least k + 1 = {k + 1} examples per set, got {n}")
    out = torch.empty(n, dtype=torch.float64)
    for i in range(0, n, chunk_size):
        best = None                                   # the k+1 smallest squared distances so far
        for j in range(0, n, chunk_size):
            d2 = _sqdist(f[i:i + chunk_size], f[j:j + chunk_size])
            if i == j:                                # self-distance exactly 0 (round-off free)
                d2.fill_diagonal_(0.0)
            cand = d2 if best is None else torch.cat([best, d2], 1)
            best = torch.topk(cand, min(k + 1, cand.shape[1]), dim=1, largest=False).values
        out[i:i + chunk_size] = best[:, k].sqrt()     # index 0 is the point itself
    return out


def in_manifold(query, ref, radii: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
    """``[M]`` bool: is each query row within ``radii[r]`` (closed ball) of some ref row ``r``?"""
    q = torch.as_tensor(query).detach().cpu().to(torch.float64).reshape(len(query), -1)
    r = torch.as_tensor(ref).detach().cpu().to(torch.float64).reshape(len(ref), -1)
    r2 = radii.to(torch.float64) ** 2
    found = torch.zeros(len(q), dtype=torch.bool)
    for i in range(0, len(q), chunk_size):
        hit = found[i:i + chunk_size]
        for j in range(0, len(r), chunk_size):
            hit |= (_sqdist(q[i:i + chunk_size], r[j:j + chunk_size]) <= r2[None, j:j + chunk_size]).any(1)
            if bool(hit.all()):
                break
    return found


def precision_recall(real_feats, fake_feats, k: int = 3, chunk_size: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of feature sets ``[N, F]``."""
    real_feats = torch.as_tensor(real_feats).reshape(len(real_feats), -1)
    fake_feats = torch.as_tensor(fake_feats).reshape(len(fake_feats), -1)
    if real_feats.shape[1] != fake_feats.shape[1]:
        raise EnergyVAEError(f"precision/recall: feature widths differ: {real_feats.shape[1]} vs {fake_feats.shape[1]}")
    precision = in_manifold(fake_feats, real_feats, knn_radii(real_feats, k, chunk_size), chunk_size)
    recall = in_manifold(real_feats, fake_feats, knn_radii(fake_feats, k, chunk_size), chunk_size)
    return float(precision.double().mean()), float(recall.double().mean())


# ------------------------------------------------------------------------------ everything
def compute_sample_metrics(real01: torch.Tensor, fake01: torch.Tensor, net=None,
                           metrics: Sequence[str] = DEFAULT_METRICS, batch_size: int = 500, *,
                           k: int = 3, kid_subsets: int = 100, kid_subset_size: int = 1000,
                           is_splits: int = 10, seed: int = 0, chunk_size: int = 1024) -> dict:
    """The requested sample metrics of ``fake01`` against ``real01`` in ``net``'s feature space.

    ``real01`` / ``fake01``: float ``[N, C, H, W]`` images in [0, 1] or ``[N, D]`` vectors;
    ``net``: a feature net from :mod:`.features` (None: raw flattened inputs, no IS). Returns
    floats under the requested keys: ``fid``; ``kid`` and ``kid_std``; ``is`` and ``is_std``
    (of the fake set); ``precision``; ``recall``; plus ``n_real`` and ``n_fake``.
    """
    metrics = tuple(metrics)
    unknown = sorted(set(metrics) - KNOWN_METRICS)
    if unknown:
        raise EnergyVAEError(f"unknown sample metrics {unknown} (choose from {', '.join(DEFAULT_METRICS)})")
    real01, fake01 = _check_pair(real01, fake01)
    net = _resolve_net(net)
    if "is" in metrics and not _has_logits(net):
        raise EnergyVAEError("the 'is' metric needs a classifier feature net with logits; raw-coordinate "
                             "features have none (leave 'is' out of metrics)")
    out: dict = {}
    if "fid" in metrics:
        out["fid"] = fid(real01, fake01, net, batch_size)
    if "kid" in metrics:
        out["kid"], out["kid_std"] = kernel_inception_distance(
            real01, fake01, net, subsets=kid_subsets, subset_size=kid_subset_size, batch_size=batch_size, seed=seed)
    if "is" in metrics:
        out["is"], out["is_std"] = inception_score(fake01, net, splits=is_splits, batch_size=batch_size, seed=seed)
    if "precision" in metrics or "recall" in metrics:
        p, r = precision_recall(extract(net, real01, batch_size), extract(net, fake01, batch_size), k, chunk_size)
        if "precision" in metrics:
            out["precision"] = p
        if "recall" in metrics:
            out["recall"] = r
    out["n_real"], out["n_fake"] = int(len(real01)), int(len(fake01))
    return out
