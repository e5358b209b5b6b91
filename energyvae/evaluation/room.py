"""The room meter: how much a learned prior can gain over N(0, I) on a trained VAE.

With the encoder and decoder frozen, the ELBO depends on the prior only through
E_x E_q(z|x) ln p(z) (paper 002, Eq. 11; Hoffman & Johnson 2016), so replacing N(0, I) by a
prior p raises the ELBO of a set of images by

    room(p) = E_x E_q(z|x) [ln p(z) - ln N(z; 0, I)],

and the best prior, the aggregate posterior q_agg, gains KL(q_agg || N(0, I)). The meter:

1. draws posterior samples from a trained VAE (:func:`posterior_samples`: ``per_image`` draws
   of q(z|x) per image of a split, binarisation / dequantization and draws from one seed);
2. fits a masked autoregressive flow (MAF; Papamakarios et al. 2017) to training posteriors by
   maximum likelihood, early-stopped on the log-likelihood of *validation* posteriors
   (:func:`fit_maf`);
3. reports the held-out room of the fitted MAF over *test* posteriors (:func:`room`: mean and
   stderr over test images) -- on test posteriors this is exactly the test-ELBO gain of the MAF
   as the prior -- and the paired importance-weighted NLL with the MAF as the prior against
   the VAE's own prior (:func:`paired_prior_nll`, same inputs and draws for both);
4. optionally the two-stage NCP classifier (:func:`ncp_classifier`): an MLP telling posterior
   samples from N(0, I) samples; its held-out accuracy (0.5: no room) and its
   Donsker-Varadhan estimate E_q[r] - ln E_N[e^r] of the gain of the reweighted prior
   N(z) e^r(z) / Z.

The MAF's room is a lower bound on KL(q_agg || N(0, I)) in expectation (a model fit, scored on
held-out points: the gain of a prior one can actually use), not an estimate of it.

**Why a MAF.** A trained VAE's aggregate posterior is whitened: its mean is ~0 and its
covariance ~I (the eigenvalues of a 64-d Fashion-MNIST N(0, I) VAE's posterior covariance lie
in 0.84..1.40), so a second-moment fit sees little of whatever non-Gaussian structure there
is: on the whitened synthetic mixture below a full-covariance Gaussian fit reads -0.011 nats
where the KL is 4.6, and on the Fashion-MNIST VAEs it reads +0.15 nats of ELBO (and -0.016
nats of IW NLL, K = 100) where the MAF reads +0.87. A density fitted by maximum likelihood
with the capacity to see clusters, skew and curved dependencies -- a normalised flow -- can,
and its log-density is exact, so its room and its IW NLL need no partition function. The flow
starts at N(0, I) (the library's :func:`~energyvae.models.priors.flow.make_flow`
zero-initialises every conditioner's last layer), so a fit that never beats its start on
validation reads exactly 0, never spurious room.

**Defaults** (for m = 64 latents and ~10^5 training samples): 4 affine MAF transforms, each
conditioned by a masked MLP [256, 256] (the size of the first Fashion-MNIST measurement that
found room, +0.634 nats), Adam lr 1e-3, batch 512, at most 200 epochs, stopping 10 epochs after the best
validation log-likelihood and restoring that epoch's weights (on the Fashion-MNIST VAEs the
validation room peaks at epoch 7 in all five seeds, on the 64-d mixture at epoch 9, then falls
as the fit overfits: the cost is ~10 epochs past the best; lr and batch are the usual Adam /
MAF settings, not tuned). The validation set is the
training images' validation split in the benchmark (``z_val``); without one, ``val_fraction``
= 10 % of the samples is held out (then draws of the same image may land on both sides:
pass ``z_val`` for a clean split).

**Validation** (:class:`WhitenedMixture`, targets of known KL; ``tests/evaluation/test_room.py``
at 16 dims, ``benchmarks/ebm_prior_room.py`` at 64 dims, numbers in
``benchmarks/results/ebm_prior_room.md``; 100k training, 10k validation, 20k test points, the
defaults above): on N(0, I) in 64 dims the meter reads -0.000 +- 0.000 (the fit never beats its
start on validation); on a whitened 10-cluster mixture (within-cluster std 0.39) in 8 of 64
dims, the other 56 N(0, 1), whose KL to N(0, I) is 4.644 +- 0.004 nats (Monte Carlo with the
exact density), it reads 3.676 +- 0.015 (79 %; 93 s on one CPU thread), the NCP classifier
0.965 accuracy. In the 16-d test (4 mixture dims, KL 2.74, MAF [128, 128]) it reads ~2.06
(75 %). On the five 50-epoch Fashion-MNIST N(0, I) VAEs it reads +0.865 +- 0.035 nats per
test image (mean +- stderr over seeds), and the IW NLL (K = 1000) with the MAF as the prior is
0.798 +- 0.037 nats lower than with N(0, I).
"""
from __future__ import annotations

import copy
import math
import time
from typing import Sequence

import torch
import zuko
from torch import nn

from ..models.priors.flow import make_flow

__all__ = ["FlowLogProb", "WhitenedMixture", "fit_maf", "log_standard_normal", "ncp_classifier",
           "paired_prior_nll", "posterior_samples", "room"]

LOG_2PI = math.log(2 * math.pi)


def log_standard_normal(z: torch.Tensor) -> torch.Tensor:
    """ln N(z; 0, I) for z [..., m] -> [...]."""
    return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * LOG_2PI)


class FlowLogProb:
    """A fitted zuko flow as a prior for :meth:`VAE.iw_log_likelihood` (``prior=``):
    ``log_prob(z)`` for z of any leading shape [..., m] -> [...], in chunks of ``chunk`` points,
    without gradients."""

    def __init__(self, flow, chunk: int = 8192):
        self.flow, self.chunk = flow, chunk
        self.latent_dim = None

    @torch.no_grad()
    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        dist = self.flow()
        flat = z.reshape(-1, z.shape[-1])
        out = torch.cat([dist.log_prob(b) for b in flat.split(self.chunk)]) if len(flat) else flat.new_zeros(0)
        return out.reshape(z.shape[:-1])


@torch.no_grad()
def _mean_log_prob(flow, z: torch.Tensor, chunk: int = 8192) -> float:
    return FlowLogProb(flow, chunk).log_prob(z).double().mean().item()


def fit_maf(z_train: torch.Tensor, z_val: torch.Tensor | None = None, *, val_fraction: float = 0.1,
            transforms: int = 4, hidden: Sequence[int] = (256, 256), batch_size: int = 512,
            lr: float = 1e-3, max_epochs: int = 200, patience: int = 10, max_seconds: float | None = None,
            seed: int = 0, log=None) -> tuple[nn.Module, dict]:
    """Fit a MAF (``transforms`` affine layers, masked-MLP conditioners of widths ``hidden``,
    started at N(0, I)) to the rows of ``z_train`` [n, m] (a [s, n, m] tensor of s draws per
    image is flattened) by maximum likelihood with Adam (``lr``, ``batch_size``), early-stopped
    on the mean log-likelihood of ``z_val``: after ``patience`` epochs without a new best, or
    ``max_epochs``, or ``max_seconds`` of training, the best epoch's weights are restored.
    Without ``z_val`` a random ``val_fraction`` of ``z_train`` is held out. Seeded by ``seed``
    (torch's global RNG is untouched). ``log``: called with a line per epoch (e.g. ``print``).

    Returns ``(flow, info)``: the zuko flow (call it for the distribution, or wrap it in
    :class:`FlowLogProb`) in eval mode, and ``info`` with the per-epoch ``train_nll`` /
    ``val_log_lik`` (epoch 0 first: the N(0, I) start), ``best_epoch`` (0: the start was never
    beaten), ``epochs``, ``stopped`` (why), ``val_room`` (validation mean of ln p_MAF - ln N at
    the best epoch; ``val_room_per_epoch`` at each), ``seconds``, sizes and the settings."""
    z_train = z_train.detach().reshape(-1, z_train.shape[-1]).float()
    m = z_train.shape[1]
    gen = torch.Generator().manual_seed(seed)
    if z_val is None:
        perm = torch.randperm(len(z_train), generator=gen)
        n_val = max(1, int(round(val_fraction * len(z_train))))
        z_val, z_train = z_train[perm[:n_val]], z_train[perm[n_val:]]
    z_val = z_val.detach().reshape(-1, m).float()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        flow = make_flow(m, transforms, hidden, "maf")
    opt = torch.optim.Adam(flow.parameters(), lr=lr)
    val_ref = log_standard_normal(z_val).double().mean().item()
    flow.eval()
    best = _mean_log_prob(flow, z_val)              # the N(0, I) start: epoch 0
    best_state, best_epoch = copy.deepcopy(flow.state_dict()), 0
    info = {"train_nll": [], "val_log_lik": [best], "n_train": len(z_train), "n_val": len(z_val),
            "transforms": transforms, "hidden": list(hidden), "batch_size": batch_size, "lr": lr,
            "max_epochs": max_epochs, "patience": patience, "seed": seed}
    t0 = time.perf_counter()
    stopped = f"max_epochs ({max_epochs})"
    epoch = 0
    for epoch in range(1, max_epochs + 1):
        flow.train()
        perm = torch.randperm(len(z_train), generator=gen)
        total = 0.0
        for s in range(0, len(perm), batch_size):
            z = z_train[perm[s:s + batch_size]]
            loss = -flow().log_prob(z).mean()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"fit_maf: the training loss is {loss.item()} at epoch {epoch}")
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(z)
        flow.eval()
        val = _mean_log_prob(flow, z_val)
        info["train_nll"].append(total / len(z_train))
        info["val_log_lik"].append(val)
        if val > best:
            best, best_epoch, best_state = val, epoch, copy.deepcopy(flow.state_dict())
        if log is not None:
            log(f"  MAF epoch {epoch}: train NLL {total / len(z_train):.4f}, val ln p {val:.4f} "
                f"(room {val - val_ref:+.4f}), best epoch {best_epoch}")
        if epoch - best_epoch >= patience:
            stopped = f"patience ({patience} epochs without a better validation log-likelihood)"
            break
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            stopped = f"max_seconds ({max_seconds:g})"
            break
    flow.load_state_dict(best_state)
    flow.eval()
    info.update(epochs=epoch, best_epoch=best_epoch, stopped=stopped, best_val_log_lik=best,
                val_log_normal=val_ref, val_room=best - val_ref,
                val_room_per_epoch=[v - val_ref for v in info["val_log_lik"]], seconds=time.perf_counter() - t0)
    return flow, info


@torch.no_grad()
def room(flow, z_test: torch.Tensor, chunk: int = 8192) -> dict:
    """Held-out room of a fitted density ``flow`` (a zuko flow, or any object with
    ``log_prob``): the mean of ln p(z) - ln N(z; 0, I) over ``z_test``, in nats per point.

    ``z_test`` [n, m]: n independent points, stderr over them. [..., n, m] (e.g. several draws
    per image, :func:`posterior_samples`): the values are first averaged over the leading dims,
    so the stderr is over the n images (draws of one image are not independent). Returns
    ``{"mean", "stderr", "n", "log_p", "log_normal"}`` (the last two: means of the two terms)."""
    lp_fn = FlowLogProb(flow, chunk).log_prob if isinstance(flow, zuko.lazy.LazyDistribution) else flow.log_prob
    lp = lp_fn(z_test).double()
    ln = log_standard_normal(z_test).double()
    d = (lp - ln).reshape(-1, z_test.shape[-2]).mean(0) if z_test.dim() > 2 else lp - ln
    n = len(d)
    return {"mean": d.mean().item(), "stderr": (d.std() / math.sqrt(n)).item() if n > 1 else float("nan"),
            "n": n, "log_p": lp.mean().item(), "log_normal": ln.mean().item()}


@torch.no_grad()
def posterior_samples(model, data, split: str = "train", *, n_images: int | None = None, per_image: int = 2,
                      seed: int = 0, batch: int = 500) -> torch.Tensor:
    """``per_image`` draws z ~ q(z|x) for each of the first ``n_images`` (default all) images of
    ``data``'s ``split``: a [per_image, n, m] float32 tensor on the CPU (flatten it with
    ``reshape(-1, m)`` for a fit). The inputs are preprocessed (binarised / dequantized) and
    the draws made with torch's RNG seeded by ``seed`` and forked (the caller's RNG is
    untouched); the model is evaluated in eval mode."""
    dev = next(model.parameters()).device
    raw = getattr(data, split).x
    n = len(raw) if n_images is None else min(n_images, len(raw))
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(seed)
            for s in range(0, n, batch):
                q = model.encode(data.preprocess(raw[s:min(s + batch, n)]).to(dev))
                if q.deterministic:
                    raise ValueError("the room meter needs a stochastic posterior q(z|x)")
                out.append(q.rsample(per_image).flatten(2).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out, 1)


@torch.no_grad()
def paired_prior_nll(model, data, prior, *, k: int = 100, max_examples: int = 1000, batch_size: int = 100,
                     seed: int = 0, split: str = "test") -> dict:
    """Importance-weighted NLL (``model.iw_log_likelihood``, K = ``k``) of the first
    ``max_examples`` images of ``split`` with ``prior`` (anything with ``log_prob(z)``,
    [..., m] -> [...], normalised, e.g. a :class:`FlowLogProb`) and with the model's own
    (normalised) prior, paired: both see the same binarised / dequantized inputs (drawn first
    from ``seed``) and the same importance samples (``torch.manual_seed(seed + 1 + batch
    index)`` before each of the two calls; torch's RNG is forked).

    Returns ``{"nll_model_prior", "nll_prior", "difference", "k", "examples", "split"}``;
    ``difference`` is :func:`~energyvae.evaluation.paired.paired_difference` of the per-image
    NLLs, ``prior`` minus the model's prior (negative: ``prior`` is better), with its paired
    stderr."""
    from .paired import paired_difference
    if not model.prior.normalized:
        raise ValueError("paired_prior_nll compares against a normalised model prior (an unnormalised "
                         "one needs its ln Z: evaluation.likelihood.test_log_likelihood)")
    dev = next(model.parameters()).device
    xs = getattr(data, split).x
    n = min(max_examples, len(xs))
    was_training = model.training
    model.eval()
    base, other = [], []
    try:
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(seed)
            inputs = [data.preprocess(xs[s:min(s + batch_size, n)]) for s in range(0, n, batch_size)]
            for i, x in enumerate(inputs):
                x = x.to(dev)
                torch.manual_seed(seed + 1 + i)
                base.append(-model.iw_log_likelihood(x, k).double().cpu())
                torch.manual_seed(seed + 1 + i)
                other.append(-model.iw_log_likelihood(x, k, prior=prior).double().cpu())
    finally:
        model.train(was_training)
    base, other = torch.cat(base), torch.cat(other)
    return {"nll_model_prior": base.mean().item(), "nll_prior": other.mean().item(),
            "difference": paired_difference(other, base), "k": k, "examples": n, "split": split}


def ncp_classifier(z_train: torch.Tensor, z_val: torch.Tensor, z_test: torch.Tensor, *,
                   hidden: Sequence[int] = (256, 256), batch_size: int = 512, lr: float = 1e-3,
                   max_epochs: int = 100, patience: int = 5, n_normal: int = 100_000, seed: int = 0) -> dict:
    """The two-stage NCP classifier (Aneja et al. 2021) as a room meter: an MLP r(z) (ELU,
    widths ``hidden``) trained by logistic regression to tell the rows of ``z_train`` (label 1)
    from as many fresh N(0, I) samples (label 0, new ones every epoch), early-stopped on the
    cross-entropy of ``z_val`` against as many N(0, I) samples, scored on ``z_test`` (each may
    be [..., n, m]; flattened) against as many fresh N(0, I) samples.

    Returns ``accuracy`` (held out; 0.5: the classifier sees no difference, no room),
    ``val_bce``, ``best_epoch``, ``epochs`` and ``dv_room``: E_test r(z) - ln E_N e^r(z) (over
    ``n_normal`` fresh N(0, I) samples), the test-set gain of the NCP prior N(z) e^r(z) / Z
    over N(0, I) (the MC estimate of ln Z is biased low by Jensen, so this is slightly high).
    Seeded by ``seed`` (torch's RNG forked)."""
    m = z_train.shape[-1]
    z_train, z_val, z_test = (t.detach().reshape(-1, m).float() for t in (z_train, z_val, z_test))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        widths = [m, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.ELU()]
        net = nn.Sequential(*layers, nn.Linear(widths[-1], 1))
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        bce = nn.BCEWithLogitsLoss()

        def logits(z):
            with torch.no_grad():
                return torch.cat([net(b).squeeze(-1) for b in z.split(8192)])

        zn_val = torch.randn(len(z_val), m)          # the same N(0, I) validation points every epoch

        def val_loss():
            lq, ln = logits(z_val), logits(zn_val)
            return 0.5 * (bce(lq, torch.ones_like(lq)) + bce(ln, torch.zeros_like(ln))).item()

        g = torch.Generator().manual_seed(seed + 1)
        best, best_epoch, best_state = math.inf, 0, copy.deepcopy(net.state_dict())
        epoch = 0
        for epoch in range(1, max_epochs + 1):
            perm = torch.randperm(len(z_train), generator=g)
            for s in range(0, len(perm), batch_size):
                zq = z_train[perm[s:s + batch_size]]
                zn = torch.randn_like(zq)
                out = net(torch.cat([zq, zn])).squeeze(-1)
                loss = bce(out, torch.cat([torch.ones(len(zq)), torch.zeros(len(zn))]))
                opt.zero_grad()
                loss.backward()
                opt.step()
            v = val_loss()
            if v < best:
                best, best_epoch, best_state = v, epoch, copy.deepcopy(net.state_dict())
            if epoch - best_epoch >= patience:
                break
        net.load_state_dict(best_state)
        lq = logits(z_test)
        ln = logits(torch.randn_like(z_test))
        acc = 0.5 * ((lq > 0).double().mean() + (ln <= 0).double().mean()).item()
        ln_big = logits(torch.randn(n_normal, m))
        log_z = (torch.logsumexp(ln_big.double(), 0) - math.log(n_normal)).item()
    return {"accuracy": acc, "val_bce": best, "best_epoch": best_epoch, "epochs": epoch,
            "dv_room": lq.double().mean().item() - log_z, "log_z": log_z, "n_test": len(z_test)}


class WhitenedMixture:
    """A synthetic latent distribution of known KL to N(0, I), for validating the meter: in the
    first ``mix_dims`` of ``dim`` coordinates an equal-weight mixture of ``clusters`` Gaussians
    (centres ~ N(0, I), each with covariance ``within_std``^2 I), whitened exactly (affine map
    to mean 0 and covariance I, so a Gaussian fit sees N(0, I)); the other ``dim - mix_dims``
    coordinates are N(0, 1). ``within_std = None`` (or ``mix_dims = 0``) gives N(0, I) itself.
    ``log_prob`` is the exact density, ``kl()`` a Monte Carlo estimate of KL(target || N(0, I)).
    Everything is fixed by ``seed``."""

    def __init__(self, dim: int, mix_dims: int = 0, clusters: int = 10, within_std: float | None = 0.3,
                 seed: int = 0):
        if within_std is None:
            mix_dims = 0
        self.dim, self.mix_dims, self.clusters = dim, mix_dims, clusters
        if mix_dims:
            g = torch.Generator().manual_seed(seed)
            centres = torch.randn(clusters, mix_dims, generator=g, dtype=torch.float64)
            mean = centres.mean(0)
            cov = (torch.cov(centres.T, correction=0).reshape(mix_dims, mix_dims)
                   + within_std ** 2 * torch.eye(mix_dims, dtype=torch.float64))
            evals, evecs = torch.linalg.eigh(cov)
            w = evecs @ torch.diag(evals.rsqrt()) @ evecs.T            # cov^{-1/2}
            self.means = (centres - mean) @ w.T                          # whitened centres
            self.chol = torch.linalg.cholesky(within_std ** 2 * w @ w.T)  # whitened component covariance
        self.seed = seed

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n points [n, dim] (float32)."""
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        if self.mix_dims:
            k = torch.randint(self.clusters, (n,), generator=generator)
            z[:, :self.mix_dims] = self.means[k] + z[:, :self.mix_dims] @ self.chol.T
        return z.float()

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """The exact ln density, [..., dim] -> [...] (float64)."""
        z = z.double()
        if not self.mix_dims:
            return log_standard_normal(z)
        a, b = z[..., :self.mix_dims], z[..., self.mix_dims:]
        comp = torch.distributions.MultivariateNormal(self.means, scale_tril=self.chol)
        lc = comp.log_prob(a.unsqueeze(-2))                               # [..., clusters]
        return torch.logsumexp(lc, -1) - math.log(self.clusters) + log_standard_normal(b)

    def kl(self, n: int = 200_000, seed: int = 12345) -> tuple[float, float]:
        """Monte Carlo KL(target || N(0, I)) with the exact density: (estimate, stderr)."""
        g = torch.Generator().manual_seed(seed)
        z = self.sample(n, g).double()
        d = self.log_prob(z) - log_standard_normal(z)
        return d.mean().item(), (d.std() / math.sqrt(n)).item()
