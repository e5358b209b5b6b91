"""Normalised learned priors: VampPrior (weakly bound to its VAE's encoder) and the flow prior."""
import copy
import math

import pytest
import torch

from energyvae.config import build_config
from energyvae.models import PRIORS, build_model
from energyvae.models.priors.flow import make_flow

LOG_2PI = math.log(2 * math.pi)


def grid(lim=10.0, n=401):
    """Points [n*n, 2] of a square grid over [-lim, lim]^2 and the cell area."""
    t = torch.linspace(-lim, lim, n, dtype=torch.float64)
    zz = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    return zz, (t[1] - t[0]) ** 2


def quadrature(log_prob, lim=10.0):
    """(integral of p, integral of z p) over the grid, p = exp(log_prob) evaluated in float32."""
    zz, da = grid(lim)
    with torch.no_grad():
        p = log_prob(zz.float()).double().exp()
    return (p.sum() * da).item(), (zz * p[:, None]).sum(0) * da


def vamp_vae(encoder_hidden=(8,)):
    cfg = build_config({"model": {
        "latent_dim": 2, "encoder": {"name": "mlp", "hidden": list(encoder_hidden)},
        "decoder": {"name": "mlp", "hidden": [8]}, "reconstruction": {"name": "gaussian"},
        "prior": {"name": "vamp", "components": 4}}})
    return build_model(cfg.model, (2,), "vector", None)


def spread_vamp_vae():
    """A VampPrior whose 4 components are well apart: a linear encoder set to mean = u,
    log-variance = (ln 0.25, 0), and pseudo-inputs u at four distinct points."""
    model = vamp_vae(encoder_hidden=())
    (lin,) = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0], [0, 1], [0, 0], [0, 0]]))
        lin.bias.copy_(torch.tensor([0, 0, math.log(0.25), 0]))
        model.prior.pseudo_inputs.copy_(torch.tensor([[-3.0, 0], [3, 1], [0, -2], [1, 3]]))
    return model


def test_vamp_log_density_integrates_to_one_and_is_the_mixture():
    model = spread_vamp_vae()
    q = model.prior.components()
    assert q.mean.shape == (4, 2)
    total, _ = quadrature(model.prior.log_prob)
    assert abs(total - 1) < 1e-3
    # vectorised over leading dims, and equal to the mixture written out
    z = torch.randn(3, 5, 2)
    mix = torch.stack([torch.distributions.Normal(q.mean[k], q.std[k]).log_prob(z).sum(-1).exp()
                       for k in range(4)], -1).mean(-1).log()
    torch.testing.assert_close(model.prior.log_prob(z), mix, atol=1e-5, rtol=1e-5)


def test_vamp_samples_have_the_mixture_mean():
    model = spread_vamp_vae()
    n = 20000
    with torch.no_grad():
        q = model.prior.components()
        z = model.prior.sample(n)
    assert z.shape == (n, 2)
    mean = q.mean.mean(0)
    torch.testing.assert_close(mean, torch.tensor([0.25, 0.5]))
    var = (q.std.pow(2) + q.mean.pow(2)).mean(0) - mean.pow(2)      # the mixture's variance
    assert ((z.mean(0) - mean).abs() < 4 * (var / n).sqrt()).all()
    assert ((z.var(0) / var) - 1).abs().max() < 0.05


def test_vamp_binding_is_weak_and_follows_copies():
    model = vamp_vae()
    keys = list(model.state_dict())
    assert [k for k in keys if k.startswith("prior.")] == ["prior.pseudo_inputs"]
    assert len(keys) == len(set(keys))
    assert model not in list(model.prior.modules())
    assert model.prior.bound_model is model
    # a deep copy (the EMA model) encodes its pseudo-inputs with its own encoder
    twin = copy.deepcopy(model)
    assert twin.prior.bound_model is twin
    with torch.no_grad():
        for p in twin.encoder.parameters():
            p.add_(0.5)
    z = torch.randn(8, 2)
    assert not torch.allclose(twin.prior.log_prob(z), model.prior.log_prob(z))
    with torch.no_grad():
        torch.testing.assert_close(twin.prior.components().mean, twin.encode(twin.prior.pseudo_inputs).mean)


def test_vamp_pseudo_inputs_are_stepped_by_the_vae_update():
    model = vamp_vae()
    (vae,) = model.updates()
    assert any(p is model.prior.pseudo_inputs for p in vae.params)


def perturbed_flow_prior():
    prior = PRIORS.build({"name": "flow", "transforms": 2, "hidden": [16]}, latent_dim=2)
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return prior


@pytest.mark.parametrize("dim", [1, 2])
@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_flow_starts_at_the_standard_normal(kind, dim):
    flow = make_flow(dim, 3, [8], kind=kind)
    z = torch.randn(10, dim)
    torch.testing.assert_close(flow().log_prob(z), -0.5 * (z.pow(2) + LOG_2PI).sum(-1))


def test_flow_prior_integrates_to_one_and_samples_match_its_density():
    prior = perturbed_flow_prior()
    assert prior.normalized and prior.trained_by_elbo and prior.kl(None) is None
    total, first_moment = quadrature(prior.log_prob, lim=12.0)
    assert abs(total - 1) < 2e-3
    n = 20000
    with torch.no_grad():
        z = prior.sample(n)
        zs, lq = prior.flow().rsample_and_log_prob((64,))
        torch.testing.assert_close(prior.log_prob(zs), lq, atol=1e-4, rtol=1e-4)
    assert z.shape == (n, 2)
    se = (z.var(0) / n).sqrt()
    assert ((z.mean(0).double() - first_moment).abs() < 4 * se).all()
    # log_prob is vectorised over leading dims
    z3 = torch.randn(3, 4, 2)
    with torch.no_grad():
        torch.testing.assert_close(prior.log_prob(z3), prior.log_prob(z3.reshape(-1, 2)).reshape(3, 4))


@pytest.mark.parametrize("prior", ["vamp", "flow"])
def test_vae_with_normalized_prior_trains(tmp_path, prior):
    from energyvae.config import load_config
    from energyvae.commands.train import train_run

    spec = "{name: vamp, components: 8}" if prior == "vamp" else "{name: flow, transforms: 2, hidden: [16]}"
    cfg = load_config("configs/toy2d_vae.yaml", [
        f"run.dir={tmp_path}", "data.n_points=1000", f"model.prior={spec}",
        "train.steps=30", "train.batch_size=64", "train.eval_every=30", "train.checkpoint_every=30",
        "train.progress=false", "eval.iw_samples=4", "eval.iw_max_examples=50", "eval.n_samples=16",
        "eval.n_reconstructions=4"])
    out = train_run(cfg)
    m = out["metrics"]
    assert math.isfinite(m["test"]["loss"]) and math.isfinite(m["iw"]["nll"])
    from energyvae.runs import load_run
    _, _, model = load_run(tmp_path)
    x = model.sample(16)
    assert x.shape == (16, 2) and torch.isfinite(x).all()
