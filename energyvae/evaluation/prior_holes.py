"""Prior holes (paper 003): regions where the prior p(z) puts mass but the aggregate posterior
q(z) = 1/N sum_i q(z|x_i) has little, so decoded prior samples look unlike the data.

:func:`prior_hole_metrics` builds q_agg from N = ``n_data`` training examples (the first N of
the split; one Gaussian q(z|x_i) each) and evaluates ln q_agg at

- ``n_prior`` prior samples z ~ p (the model's own sampler, as generation uses it), and
- N posterior samples z_i ~ q(z|x_i), one per example: a stratified sample of q_agg itself,
  so both sets are scored by the same mixture, their own component included.

It returns ``log_q_agg_prior`` / ``log_q_agg_posterior`` (means, nats), ``log_q_agg_gap`` =
posterior minus prior (about 0 when p = q_agg, large when p puts mass in holes; it can be
negative when p concentrates on q_agg's modes) and ``hole_fraction``: the fraction of prior
samples whose ln q_agg is below the 1 % quantile of the posterior samples' values (about 0.01
when p = q_agg). Seeded by ``seed`` with torch's RNG forked (the caller's RNG is untouched);
no gradients; the mixture is evaluated in float64 in blocks of ``batch`` points.
"""
from __future__ import annotations

import math

import torch


def log_aggregate_posterior(z: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                            batch: int = 500) -> torch.Tensor:
    """ln 1/N sum_i N(z; mean_i, diag std_i^2) for z [n, m], mean / std [N, m] -> [n] (float64)."""
    mean, var = mean.double(), std.double().pow(2)
    prec = 1 / var                                                           # [N, m]
    const = -0.5 * (mean.pow(2) * prec + var.log()).sum(-1) - 0.5 * mean.shape[1] * math.log(2 * math.pi)
    out = []
    for zb in z.double().split(batch):
        # -1/2 sum_d (z_d - mu_id)^2 / var_id, expanded into matrix products: [b, N]
        quad = -0.5 * zb.pow(2) @ prec.T + zb @ (mean * prec).T
        out.append(torch.logsumexp(quad + const, dim=1) - math.log(len(mean)))
    return torch.cat(out)


@torch.no_grad()
def prior_hole_metrics(model, data, n_prior: int = 2000, n_data: int = 2000, seed: int = 0,
                       split: str = "train", batch: int = 500) -> dict:
    """Prior-hole metrics of ``model`` (a VAE with a stochastic posterior) against the aggregate
    posterior of the first ``n_data`` examples of ``data``'s ``split`` (see the module docstring)."""
    dev = next(model.parameters()).device
    raw = getattr(data, split).x[:n_data]
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        means, stds = [], []
        for s in range(0, len(raw), batch):
            q = model.encode(data.preprocess(raw[s:s + batch]).to(dev))
            if q.deterministic:
                raise ValueError("prior-hole metrics need a stochastic posterior (q(z|x) with a density)")
            means.append(q.mean.flatten(1))
            stds.append(q.std.flatten(1))
        mean, std = torch.cat(means), torch.cat(stds)
        z_post = mean + std * torch.randn_like(mean)
        z_prior = torch.cat([model.prior.sample(min(batch, n_prior - s)) for s in range(0, n_prior, batch)])
    model.train(was_training)
    lq_post = log_aggregate_posterior(z_post, mean, std, batch)
    lq_prior = log_aggregate_posterior(z_prior.reshape(len(z_prior), -1), mean, std, batch)
    threshold = torch.quantile(lq_post, 0.01)
    return {"log_q_agg_prior": lq_prior.mean().item(), "log_q_agg_posterior": lq_post.mean().item(),
            "log_q_agg_gap": (lq_post.mean() - lq_prior.mean()).item(),
            "hole_fraction": (lq_prior < threshold).double().mean().item(),
            "n_prior": len(z_prior), "n_data": len(mean)}
