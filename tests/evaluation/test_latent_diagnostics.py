"""Encoder Lipschitz estimates and posterior variance on a linear encoder with known answers."""
import torch
from torch import nn

from energyvae.evaluation.latent import lipschitz_jacobian, lipschitz_pairs, posterior_variance
from energyvae.models import build_model
from energyvae.models.vae import VAEParams


def linear_model(d=6, m=3):
    model = build_model(("vae", VAEParams(latent_dim=m, reconstruction={"name": "gaussian"})), (d,), "vector")
    model.encoder = nn.Linear(d, 2 * m)
    with torch.no_grad():
        model.encoder.bias[m:] = torch.log(torch.tensor([0.5, 0.2, 0.1]))   # logvar, x-independent
        model.encoder.weight[m:] = 0
    return model.eval()


def test_linear_encoder_lipschitz_equals_spectral_norm():
    model = linear_model()
    W = model.encoder.weight[:3].detach()
    spectral = torch.linalg.matrix_norm(W, ord=2).item()
    x = torch.randn(400, 6)
    jac = lipschitz_jacobian(model, x[:5], iters=100)
    assert abs(jac - spectral) < 1e-4 * spectral
    pairs = lipschitz_pairs(model, x, chunk=64)
    assert pairs <= spectral * (1 + 1e-6) and pairs > 0.8 * spectral       # a lower bound, close for many pairs
    v = torch.linalg.svd(W).Vh[0]                                            # the top input direction
    assert abs(lipschitz_pairs(model, torch.stack([torch.zeros(6), v])) - spectral) < 1e-5


def test_posterior_variance_is_mean_sigma_squared():
    model = linear_model()
    assert abs(posterior_variance(model, torch.randn(10, 6)) - (0.5 + 0.2 + 0.1) / 3) < 1e-6
