"""ELBO, IW bound and KL against closed forms (linear-Gaussian VAE, Gaussian KL)."""
import math

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from energyvae.models import build_model
from energyvae.models.posterior import DiagGaussian

D, M, SIGMA = 4, 2, 0.5


def linear_gaussian_vae(encoder_offset=0.0, logvar_offset=0.0):
    """x = W z + b + sigma*eps with orthogonal-column W: the exact posterior is diagonal, so a
    diagonal-Gaussian linear encoder can represent it exactly (offsets make it inexact)."""
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(D, M, generator=g, dtype=torch.float64))
    s = torch.tensor([1.5, 0.7], dtype=torch.float64)
    W, b = q * s, torch.randn(D, generator=g, dtype=torch.float64)
    from energyvae.models.vae import VAEParams
    cfg = ("vae", VAEParams(latent_dim=M, encoder={"name": "mlp"}, decoder={"name": "mlp"},
                            reconstruction={"name": "gaussian", "scale": "fixed", "init_scale": SIGMA}))
    model = build_model(cfg, (D,), "vector").double().eval()
    post_var = 1.0 / (1.0 + s**2 / SIGMA**2)                       # diag of (I + W^T W / s^2)^-1
    A = post_var[:, None] * W.T / SIGMA**2
    model.encoder = nn.Linear(D, 2 * M).double()
    model.decoder = nn.Linear(M, D).double()
    with torch.no_grad():
        model.encoder.weight.zero_()
        model.encoder.weight[:M] = A
        model.encoder.bias[:M] = -A @ b + encoder_offset
        model.encoder.bias[M:] = post_var.log() + logvar_offset
        model.decoder.weight.copy_(W)
        model.decoder.bias.copy_(b)
    exact = MultivariateNormal(b, W @ W.T + SIGMA**2 * torch.eye(D, dtype=torch.float64))
    return model, exact, W, b, post_var, A


def exact_gap(model, x, W, b):
    """KL(q(z|x) || p(z|x)): the exact ELBO gap."""
    q = model.encode(x)
    post_cov = torch.linalg.inv(torch.eye(M, dtype=torch.float64) + W.T @ W / SIGMA**2)
    post_mean = (post_cov @ W.T @ (x - b).T).T / SIGMA**2
    gaps = [kl_divergence(MultivariateNormal(q.mean[i], torch.diag(q.std[i] ** 2)),
                          MultivariateNormal(post_mean[i], post_cov)) for i in range(len(x))]
    return torch.stack(gaps)


def mc_elbo(model, x, n=20000):
    xs = x.repeat_interleave(n, 0)
    recon, kl, *_ = model.terms(xs)
    elbo = -(recon + kl).reshape(len(x), n)
    return elbo.mean(1), elbo.std(1) / math.sqrt(n)


@torch.no_grad()
def test_elbo_equals_log_marginal_with_exact_posterior():
    model, exact, *_ = linear_gaussian_vae()
    x = exact.sample((3,))
    elbo, se = mc_elbo(model, x)
    assert torch.all((elbo - exact.log_prob(x)).abs() < 4 * se + 1e-3)


@torch.no_grad()
def test_elbo_gap_is_posterior_kl_and_iw_closes_it():
    model, exact, W, b, *_ = linear_gaussian_vae(encoder_offset=0.6, logvar_offset=0.8)
    x = exact.sample((3,))
    logpx = exact.log_prob(x)
    elbo, se = mc_elbo(model, x)
    gap = exact_gap(model, x, W, b)
    assert torch.all(gap > 0.1)                                  # a real gap to close
    assert torch.all((logpx - elbo - gap).abs() < 4 * se + 1e-3)  # ELBO = ln p(x) - KL(q||p(z|x))
    iw_gaps = []
    for k, repeats in ((1, 20000), (10, 2000), (100, 200), (5000, 10)):
        est = model.iw_log_likelihood(x.repeat(repeats, 1), k).reshape(repeats, -1).mean(0)
        iw_gaps.append((logpx - est).mean().item())
    assert iw_gaps[0] == pytest.approx(gap.mean().item(), abs=0.05)
    assert all(a > b_ for a, b_ in zip(iw_gaps, iw_gaps[1:]))    # tighter with K
    assert 0 <= iw_gaps[-1] + 0.005 and iw_gaps[-1] < 0.01


def test_analytic_kl_matches_torch_and_monte_carlo():
    mean, std = torch.randn(5, 3), torch.rand(5, 3) + 0.3
    q = DiagGaussian(mean, std)
    ref = kl_divergence(Normal(mean, std), Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(q.kl_standard_normal(), ref, atol=1e-5)
    z = q.rsample(200000)
    mc = (q.log_prob(z) - Normal(0.0, 1.0).log_prob(z).sum(-1)).mean(0)
    assert torch.allclose(mc, ref, atol=0.02)


def test_log_prob_and_entropy_match_torch():
    mean, std = torch.randn(4, 3), torch.rand(4, 3) + 0.1
    q, ref = DiagGaussian(mean, std), Normal(mean, std)
    z = q.rsample()
    assert torch.allclose(q.log_prob(z), ref.log_prob(z).sum(-1), atol=1e-5)
    assert torch.allclose(q.entropy(), ref.entropy().sum(-1), atol=1e-5)


@pytest.mark.parametrize("name", ["gaussian", "laplace"])
def test_location_scale_log_prob_matches_torch(name):
    from energyvae.models.reconstruction.likelihoods import Gaussian, Laplace
    cls, dist = {"gaussian": (Gaussian, Normal), "laplace": (Laplace, torch.distributions.Laplace)}[name]
    obj = cls("fixed", 0.3, 1e-3)
    x, out = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    ref = dist(out, 0.3).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(obj.log_prob(x, out), ref, atol=1e-5)


def test_calibrated_scale_is_the_maximum_likelihood_scale():
    from energyvae.models.reconstruction.likelihoods import Gaussian, Laplace
    x, out = torch.rand(8, 16), torch.rand(8, 16)
    for cls, mle in ((Gaussian, (x - out).pow(2).mean().sqrt()), (Laplace, (x - out).abs().mean())):
        obj = cls("calibrated", 1.0, 1e-3).train()
        best = obj.log_prob(x, out)
        for factor in (0.9, 1.1):
            fixed = cls("fixed", float(mle * factor), 1e-3)
            assert torch.all(fixed.log_prob(x, out).sum() < best.sum())


def test_bernoulli_log_prob_matches_torch():
    from energyvae.models.reconstruction.likelihoods import Bernoulli
    x, logits = torch.rand(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    expect = (x * torch.nn.functional.logsigmoid(logits) + (1 - x) * torch.nn.functional.logsigmoid(-logits)).flatten(1).sum(1)
    assert torch.allclose(Bernoulli().log_prob(x, logits), expect, atol=1e-5)
