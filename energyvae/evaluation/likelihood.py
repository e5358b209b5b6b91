"""Test log-likelihoods of a trained VAE, in nats and bits/dim.

- Normalised prior: ln p(x) >= IW_K = ln 1/K sum_k p(x|z_k) p(z_k) / q(z_k|x) (Burda et al.
  2016), tight as K grows.
- Unnormalised prior p(z) = exp(-E(z)) / Z (paper 002, Eq. 6 with AIS): the IW estimate of the
  unnormalised joint minus an AIS estimate of ln Z. The ln Z error is reported beside the NLL.
  AIS from N(0, I) can miss modes far from the origin (its error bar then says nothing), so
  ln Z is also bounded from below by importance sampling from the aggregate posterior
  q_agg(z) = 1/N sum_i q(z|x_i) (Jensen: E ln mean w <= ln Z); when that bound exceeds the AIS
  value the result carries ``nll_unreliable`` with the reason.
- Bits/dim for images use the data module's conversion (dequantization + logit log-det); it is
  reported only where it means something: a Bernoulli model of binarised data, or a density
  of uniformly dequantized data. ``dims`` (the number of data dimensions D of the conversion)
  is reported with it.
- ``per_image_ll``: the per-example log-likelihoods (nats, model space, ln Z subtracted), in
  the order of the split, for paired comparisons of two models on the same examples
  (:mod:`energyvae.evaluation.paired`). The binarization / dequantization noise of the inputs
  is drawn first from ``seed`` (the importance samples then from ``seed + 1``; AIS has its own
  generator), so every
  model evaluated with one seed sees the same noisy inputs and their per-image difficulty
  cancels in a paired difference.
"""
from __future__ import annotations

import math

import torch


@torch.no_grad()
def test_log_likelihood(model, data, *, k: int = 100, max_examples: int = 1000, batch_size: int = 100,
                        ais_chains: int = 256, ais_temps: int = 1000, seed: int = 0, split: str = "test",
                        progress: bool = False) -> dict:
    """IW NLL (and bits/dim for images) of ``split``; AIS ln Z for unnormalised priors. A model
    with an exact density (``exact_likelihood``, EC-Flow) gets its exact NLL instead."""
    if model.exact_likelihood:
        return exact_test_log_likelihood(model, data, max_examples=max_examples, seed=seed, split=split)
    if not model.has_encoder:
        return {"note": f"{type(model).__name__} has no likelihood: no NLL"}
    if not model.reconstruction.likelihood:
        return {"note": f"{type(model.reconstruction).__name__} is not a likelihood: no NLL"}
    if not model.posterior.stochastic:
        return {"note": "a deterministic posterior has no importance-weighted bound"}
    dev = next(model.parameters()).device
    xs = getattr(data, split).x
    n = min(max_examples, len(xs))
    out: dict = {"k": k, "examples": n, "split": split}
    pre = data.preprocess
    with_bpd = data.kind == "image" and (
        (model.reconstruction.support == "binary" and pre.binarize)
        or (model.reconstruction.support == "real" and pre.dequantize != "none"))
    if data.kind == "image" and not with_bpd:
        out["bits_per_dim_note"] = ("no bits/dim: it needs a Bernoulli model of binarised data or a "
                                    "density of dequantized data (data.dequantize)")
    log_z, log_z_err = 0.0, 0.0
    with torch.random.fork_rng():
        torch.manual_seed(seed)      # the inputs' noise first: every model sees the same inputs
        inputs = [data.preprocess(xs[s:min(s + batch_size, n)]) for s in range(0, n, batch_size)]
        torch.manual_seed(seed + 1)
        if not model.prior.normalized:
            from ..mcmc.ais import ais_log_partition
            with torch.enable_grad():
                # MALA: on a 64x64 GRBM it reaches HMC's ESS at ~1/11 of the gradient calls
                res = ais_log_partition(model.prior.energy, model.latent_dim, transition="mala",
                                        n_chains=ais_chains, n_temps=ais_temps, device=dev,
                                        seed=seed, progress=progress,
                                        energy_and_grad=model.prior.energy_and_grad)
            log_z, log_z_err = float(res.log_z), float(res.stderr)
            out["ais"] = {"log_z": log_z, "stderr": log_z_err, "chains": ais_chains, "temps": ais_temps,
                          "transition": "mala",
                          "ess": float(res.ess), "acceptance": float(res.acceptance)}
            bound = log_z_aggregate_posterior_bound(model, data, seed=seed)
            out["ais"]["log_z_qagg_bound"] = bound
            if bound > log_z + max(3 * log_z_err, 0.2):   # 0.2 nats: a gap a paired NLL would notice
                out["nll_unreliable"] = (
                    f"AIS ln Z = {log_z:.2f} is below the importance-sampling lower bound {bound:.2f} "
                    "from the aggregate posterior: the AIS chains missed the energy's modes, so the NLL "
                    "is not trustworthy")
        lls, bpds = [], []
        if progress:
            from tqdm.auto import tqdm
            inputs = tqdm(inputs, desc=f"IW NLL (K={k})", unit="batch", leave=False)
        for x in inputs:
            x = x.to(dev)
            ll = model.iw_log_likelihood(x, k) - log_z
            lls.append(ll)
            if with_bpd:
                bpds.append(data.preprocess.bits_per_dim(-ll, x))
    ll = torch.cat(lls).double()
    out["nll"] = -ll.mean().item()
    out["nll_stderr"] = (ll.std() / len(ll) ** 0.5).item()
    if bpds:
        out["bits_per_dim"] = torch.cat(bpds).double().mean().item()
        out["dims"] = int(x[0].numel())
    out["per_image_ll"] = ll.cpu().tolist()
    return out


@torch.no_grad()
def log_z_aggregate_posterior_bound(model, data, *, n_data: int = 1000, n_samples: int = 4096,
                                    seed: int = 0, batch: int = 500) -> float:
    """ln 1/S sum_s exp(-E(z_s)) / q_agg(z_s), z_s ~ q_agg from the first ``n_data`` training
    examples: a stochastic lower bound on ln Z that covers wherever the posteriors put mass."""
    from .prior_holes import log_aggregate_posterior
    dev = next(model.parameters()).device
    raw = data.train.x[:n_data]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        qs = [model.encode(data.preprocess(raw[s:s + batch]).to(dev)) for s in range(0, len(raw), batch)]
        mean, std = torch.cat([q.mean for q in qs]), torch.cat([q.std for q in qs])
        idx = torch.randint(len(mean), (n_samples,), device=dev)
        z = mean[idx] + std[idx] * torch.randn(n_samples, mean.shape[1], device=dev)
    logw = -model.prior.energy(z).double() - log_aggregate_posterior(z, mean, std, batch)
    return float(torch.logsumexp(logw, 0) - math.log(n_samples))


@torch.no_grad()
def exact_test_log_likelihood(model, data, *, max_examples: int = 1000, batch_size: int = 500,
                              seed: int = 0, split: str = "test") -> dict:
    """Exact NLL (nats, model space) of ``split`` for a model with ``log_prob`` (an exact
    density), and bits/dim of the 8-bit images where it means something (dequantized data).
    Dequantization noise is drawn with ``seed`` (the global RNG is left untouched)."""
    dev = next(model.parameters()).device
    xs = getattr(data, split).x
    n = min(max_examples, len(xs))
    pre = data.preprocess
    out: dict = {"exact": True, "examples": n, "split": split}
    with_bpd = data.kind == "image" and not pre.binarize and pre.dequantize != "none"
    if data.kind == "image" and not with_bpd:
        out["note"] = ("the data are not dequantized (data.dequantize): a density of discrete pixels "
                       "is not a likelihood, no bits/dim")
    lls, bpds = [], []
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        for s in range(0, n, batch_size):
            x = pre(xs[s:min(s + batch_size, n)]).to(dev)
            ll = model.log_prob(x)
            lls.append(ll)
            if with_bpd:
                bpds.append(pre.bits_per_dim(-ll, x))
    ll = torch.cat(lls).double()
    out["nll"] = -ll.mean().item()
    out["nll_stderr"] = (ll.std() / len(ll) ** 0.5).item() if len(ll) > 1 else 0.0
    if bpds:
        out["bits_per_dim"] = torch.cat(bpds).double().mean().item()
        out["dims"] = int(x[0].numel())
    out["per_image_ll"] = ll.cpu().tolist()
    return out
