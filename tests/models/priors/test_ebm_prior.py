"""EBM priors (paper 002): energies, samplers, the SSM and short-run schemes, and a tiny training."""
import math

import pytest
import torch

from energyvae.config import load_config
from energyvae.errors import ConfigError
from energyvae.mcmc.grbm import grbm_exact_log_partition
from energyvae.models.base import PRIORS
from energyvae.models.priors.ebm import ENERGIES, LATENT_SAMPLERS
from energyvae.models.priors.schemes.ssm import sliced_score_matching_loss
from energyvae.runs import prepare
from energyvae.train import Trainer
from helpers import grbm_moments


pytestmark = pytest.mark.usefixtures("one_thread")


def ebm_prior(energy, scheme=None, sampler=None, m=2):
    spec = {"name": "ebm", "energy": energy, "scheme": scheme or {"name": "ssm"},
            "sampler": sampler or {"name": "langevin"}}
    return PRIORS.build(spec, "model.prior", latent_dim=m)


def small_grbm(dtype=torch.float64):
    """A 2-D GRBM with 3 hidden units: its marginal is a mixture of 8 Gaussians."""
    e = ENERGIES.build({"name": "grbm", "hidden": 3}, latent_dim=2).to(dtype)
    with torch.no_grad():
        e.mu.copy_(torch.tensor([0.2, -0.1]))
        e.log_sigma.copy_(torch.tensor([0.7, 0.9]).log())
        e.W.copy_(torch.tensor([[1.0, -0.5, 0.3], [0.4, 0.8, -0.6]]))
        e.b.copy_(torch.tensor([-0.5, 0.3, 0.1]))
    return e




def moments(z):
    return z.mean(0), torch.cov(z.T)


# -------------------------------------------------------------------------------- energies
def test_grbm_gradient_matches_formula_and_finite_differences():
    e = small_grbm()
    z = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(e(z).sum(), z)
    s = e.sigma**2
    analytic = ((z - e.mu) - torch.sigmoid((z / s) @ e.W + e.b) @ e.W.T) / s   # grad of Eq. 12
    torch.testing.assert_close(g, analytic.detach())
    eps, fd = 1e-6, torch.zeros_like(g)
    with torch.no_grad():
        for i in range(2):
            d = torch.zeros(2, dtype=torch.float64)
            d[i] = eps
            fd[:, i] = (e(z + d) - e(z - d)) / (2 * eps)
    torch.testing.assert_close(g, fd, atol=1e-7, rtol=1e-6)


def test_exact_log_partition_matches_quadrature():
    # AIS against grbm_exact_log_partition is tested in test_ais.py; here the prior's own
    # exact ln Z (GRBM via its log_sigma parametrisation, and the Gaussian quadratic energy).
    grbm = small_grbm()
    quad = ENERGIES.build({"name": "quadratic"}, latent_dim=2).double()
    with torch.no_grad():
        quad.center.copy_(torch.tensor([0.3, -0.2]))
        quad.L.copy_(torch.tensor([[1.2, 0.0], [0.5, 0.8]]))
    t = torch.linspace(-9, 9, 1201, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    cell = (t[1] - t[0]) ** 2
    for e in (grbm, quad):
        with torch.no_grad():
            numeric = torch.logsumexp(-e(grid), 0) + cell.log()
        assert abs(e.exact_log_partition().item() - numeric.item()) < 1e-6
    assert torch.equal(grbm.exact_log_partition(),
                       grbm_exact_log_partition(grbm.W.detach(), grbm.b.detach(), grbm.mu.detach(),
                                                grbm.sigma.detach()))


def test_mlp_and_tilted_energies():
    torch.manual_seed(0)
    mlp = ENERGIES.build({"name": "mlp", "hidden": [8, 8], "activation": "silu"}, latent_dim=3)
    tilted = ENERGIES.build({"name": "tilted", "hidden": [8, 8], "activation": "silu"}, latent_dim=3)
    tilted.load_state_dict(mlp.state_dict())
    z = torch.randn(4, 5, 3)
    assert mlp(z).shape == (4, 5)
    torch.testing.assert_close(tilted(z), mlp(z) + 0.5 * z.pow(2).sum(-1))


# -------------------------------------------------------------------------------- samplers
def test_langevin_reproduces_gaussian_and_leaves_no_grad():
    torch.manual_seed(0)
    e = ENERGIES.build({"name": "quadratic"}, latent_dim=2)
    with torch.no_grad():
        e.center.copy_(torch.tensor([1.0, -0.5]))
        e.L.copy_(torch.tensor([[1.0, 0.0], [-0.6, 1.1]]))
    cov = torch.linalg.inv(e.precision().detach())
    sampler = LATENT_SAMPLERS.build({"name": "langevin", "steps": 400, "step_size": 0.02},
                                    latent_dim=2, energy=e)
    with torch.no_grad():
        z, trace = sampler.sample(e, 4000, trace=True)
    assert trace.energy.shape == (400, 4000) and all(p.grad is None for p in e.parameters())
    mean_hat, cov_hat = moments(z)
    # unadjusted Langevin is biased: stationary covariance (P - h P^2 / 2)^-1, here < 2 % off
    assert (mean_hat - e.center.detach()).abs().max() < 0.06
    assert (cov_hat - cov).abs().max() < 0.08
    # the sampler runs in the energy's dtype
    assert sampler.sample(e.double(), 3)[0].dtype == torch.float64


@pytest.mark.parametrize("spec", [{"name": "gibbs", "steps": 50},
                                  {"name": "gibbs_langevin", "steps": 150, "step_size": 0.3},
                                  {"name": "langevin", "steps": 400, "step_size": 0.01}],
                         ids=["gibbs", "gibbs_langevin", "langevin"])
def test_samplers_reproduce_grbm_moments(spec):
    torch.manual_seed(1)
    e = small_grbm(torch.float32)
    mean, cov = grbm_moments(e)
    sampler = LATENT_SAMPLERS.build(spec, latent_dim=2, energy=e)
    with torch.no_grad():
        z, _ = sampler.sample(e, 4000)
    mean_hat, cov_hat = moments(z.double())
    assert (mean_hat - mean).abs().max() < 0.07, (mean_hat, mean)
    assert (cov_hat - cov).abs().max() < 0.1, (cov_hat, cov)
    assert all(p.grad is None for p in e.parameters())


def test_gibbs_langevin_metropolis_removes_the_step_size_bias():
    # W = 0: p(z) = N(mu, sigma^2). Without the accept/reject step the chain's variance is
    # sigma^2 / (1 - r/2) (r = 0.8: 1.67 sigma^2); with it, exactly sigma^2.
    torch.manual_seed(2)
    e = ENERGIES.build({"name": "grbm", "hidden": 2, "init_std": 0.0}, latent_dim=2)
    var = e.sigma.detach() ** 2
    for metropolis, expected in ((True, var), (False, var / 0.6)):
        sampler = LATENT_SAMPLERS.build({"name": "gibbs_langevin", "steps": 60, "step_size": 0.8,
                                         "langevin_steps": 1, "metropolis": metropolis},
                                        latent_dim=2, energy=e)
        z, _ = sampler.sample(e, 4000)
        torch.testing.assert_close(z.var(0), expected, rtol=0.08, atol=0.0)


# -------------------------------------------------------------------------------- SSM
def wrong_sign_ssm_loss(energy, z):
    """Alg. 1 as printed: + v^T H v (with s = -grad E the correct sign is minus)."""
    z = z.detach().requires_grad_(True)
    v = torch.randn_like(z)
    (g,) = torch.autograd.grad(energy(z).sum(), z, create_graph=True)
    gv = (g * v).sum(-1)
    (hv,) = torch.autograd.grad(gv.sum(), z, create_graph=True)
    return ((hv * v).sum(-1) + 0.5 * gv**2).mean()


def fit_quadratic(data, loss_fn=None, steps=400):
    prior = ebm_prior({"name": "quadratic"}, {"name": "ssm", "lr": 0.05}, m=data.shape[1])
    (u,) = prior.updates()
    opt = torch.optim.Adam(u.params, lr=u.lr, betas=u.betas)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [steps // 2, 3 * steps // 4], 0.2)
    for _ in range(steps):
        if loss_fn is None:
            loss, _ = prior.update_loss("prior", None, {"z_posterior": data})
        else:
            loss = loss_fn(prior.energy_net, data)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    e = prior.energy_net
    return e.center.detach(), torch.linalg.inv(e.precision().detach())


def test_ssm_recovers_gaussian_and_the_printed_sign_does_not():
    torch.manual_seed(0)
    A = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [-0.4, 0.3, 0.5]])
    data = torch.tensor([1.0, -0.5, 0.3]) + torch.randn(4096, 3) @ A.T
    mean, cov = moments(data)            # SSM's optimum for a quadratic energy: the sample moments
    m_hat, c_hat = fit_quadratic(data)
    assert (m_hat - mean).abs().max() < 0.05
    assert (c_hat - cov).abs().max() < 0.05
    _, c_wrong = fit_quadratic(data, wrong_sign_ssm_loss)
    assert (c_wrong - cov).abs().max() > 10      # the precision collapses to the jitter


def test_ssm_update_flattens_sample_dims_and_logs():
    prior = ebm_prior({"name": "grbm", "hidden": 4}, {"name": "ssm", "projections": 3})
    z = torch.randn(2, 8, 2)
    torch.manual_seed(5)
    loss, logs = prior.update_loss("prior", None, {"z_posterior": z})
    torch.manual_seed(5)
    ref = sliced_score_matching_loss(prior.energy_net, z.reshape(16, 2), projections=3)
    torch.testing.assert_close(loss, ref)
    assert set(logs) == {"ssm_loss", "energy_pos"}
    (u,) = prior.updates()
    assert (u.name, u.order, u.lr) == ("prior", 1, 2e-4)


# ------------------------------------------------------------------------- tiny training
def train_tiny(tmp_path, prior, steps=25):
    cfg = load_config("configs/toy2d_vae.yaml", [
        f"run.dir={tmp_path}", "data.n_points=1000", f"train.steps={steps}", "train.batch_size=64",
        "train.eval_every=1000", "train.checkpoint_every=1000", "train.eval_batches=1",
        "train.progress=false", "train.device=cpu", f"model.prior={prior}"])
    data, model = prepare(cfg)
    energy = model.prior.energy_net
    before = [p.detach().clone() for p in energy.parameters()]
    trainer = Trainer(cfg, model, data)
    trainer.fit()
    ids = lambda params: {id(p) for p in params}
    vae_params = ids(p for g in trainer.optimizers["vae"].param_groups for p in g["params"])
    prior_params = ids(p for g in trainer.optimizers["prior"].param_groups for p in g["params"])
    assert not vae_params & ids(energy.parameters())
    assert prior_params == ids(energy.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, energy.parameters()))
    with torch.no_grad():
        x = trainer.eval_model().sample(16)
    assert x.shape == (16, 2) and torch.isfinite(x).all()
    return trainer


@pytest.mark.parametrize("prior", [
    "{name: ebm, energy: {name: grbm, hidden: 8}, scheme: {name: ssm}, sampler: {name: langevin, steps: 20}}",
    "{name: ebm, energy: {name: grbm, hidden: 8}, scheme: {name: ssm, projections: 2},"
    " sampler: {name: gibbs_langevin, steps: 10}}",
    "{name: ebm, energy: {name: mlp, hidden: [16, 16]}, scheme: {name: short_run, steps: 10},"
    " sampler: {name: langevin, steps: 20}}",
    "{name: ebm, energy: {name: tilted, hidden: [16, 16]}, scheme: {name: short_run, steps: 10, reg: 0.1},"
    " sampler: {name: langevin, steps: 20}}",
], ids=["grbm-ssm", "grbm-ssm-gibbs_langevin", "mlp-short_run", "tilted-short_run"])
def test_tiny_training(tmp_path, prior):
    torch.manual_seed(0)
    trainer = train_tiny(tmp_path, prior)
    logs = trainer.train_step(trainer.data.train.x[:64])
    scheme = trainer.cfg.model[1].prior["scheme"]["name"]
    expected = {"ssm": {"prior/ssm_loss", "prior/energy_pos"},
                "short_run": {"prior/cd_loss", "prior/energy_pos", "prior/energy_neg"}}[scheme]
    assert expected <= set(logs) and all(math.isfinite(v) for v in logs.values())


# -------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("prior, where", [
    ("{name: ebm, sampler: {name: langevin, steps: 0}}", "model.prior.sampler: steps"),
    ("{name: ebm, sampler: {name: langevin, step_size: 0}}", "model.prior.sampler: step_size"),
    ("{name: ebm, sampler: {name: gibbs_langevin, step_size: 2.5}}", "model.prior.sampler: step_size"),
    ("{name: ebm, energy: {name: grbm, hidden: 0}}", "model.prior.energy: hidden"),
    ("{name: ebm, energy: {name: nope}}", "model.prior.energy.name: unknown energy 'nope'"),
    ("{name: ebm, scheme: {name: short_run, steps: 0}}", "model.prior.scheme: steps"),
    ("{name: ebm, scheme: {name: ssm, projections: 0}}", "model.prior.scheme: projections"),
    ("{name: ebm, scheme: {name: ssm, noise: uniform}}", "model.prior.scheme.noise"),
])
def test_bad_values_name_the_dotted_path(prior, where):
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        load_config("configs/toy2d_vae.yaml", [f"model.prior={prior}"])


def test_gibbs_samplers_need_a_grbm():
    """Caught when the config is read, before any data or model is built."""
    with pytest.raises(ConfigError, match=r"model\.prior\.sampler.*grbm"):
        load_config("configs/toy2d_vae.yaml", [
            "data.n_points=100", "model.prior={name: ebm, energy: {name: mlp}, sampler: {name: gibbs_langevin}}"])


# ------------------------------------------------------------ the VAE's KL term of EBM priors
@pytest.mark.parametrize("spec", [{"name": "grbm", "hidden": 5, "init_std": 0.5},
                                  {"name": "tilted", "hidden": [8]}, {"name": "quadratic"}],
                         ids=["grbm", "tilted", "quadratic"])
def test_expected_energy_is_the_posterior_mean_energy_with_less_noise(spec):
    # oracle: E_q[E(z)] by Monte Carlo over 40000 draws; the estimator at one draw must agree in
    # expectation (checked over the same 40000 draws) and vary less than E(z) at one draw
    torch.manual_seed(5)
    e = ENERGIES.build(spec, latent_dim=3).double()
    mean, std = torch.randn(4, 3, dtype=torch.float64), 0.3 + torch.rand(4, 3, dtype=torch.float64)
    z = mean + std * torch.randn(40000, 4, 3, dtype=torch.float64)
    with torch.no_grad():
        mc = e(z)                                                    # [K, 4]
        one = torch.stack([e.expected_energy(mean, std, zk) for zk in z[:2000]])
        pooled = e.expected_energy(mean, std, z)                     # averaged over the K draws
    se = mc.std(0) / 40000**0.5
    assert ((pooled - mc.mean(0)).abs() < 4 * se + 1e-9).all()
    assert ((one.mean(0) - mc.mean(0)).abs() < 4 * one.std(0) / 2000**0.5 + 4 * se + 1e-9).all()
    assert (one.var(0) < mc.var(0)).all()


def test_vae_kl_of_an_ebm_prior_uses_the_closed_form_parts():
    # quadratic energy at N(0, I): -H(q) + E_q[E] = KL(q || N(0, I)) - ln Z exactly, at any sample
    from energyvae.models.posterior import DiagGaussian
    prior = ebm_prior({"name": "quadratic", "jitter": 1e-12}, m=3)
    torch.manual_seed(6)
    q = DiagGaussian(torch.randn(5, 3), 0.5 + torch.rand(5, 3))
    z = q.rsample()
    got = prior.expected_energy(q, z) - q.entropy()
    log_z = 1.5 * math.log(2 * math.pi)
    torch.testing.assert_close(got, q.kl_standard_normal() - log_z, rtol=1e-5, atol=1e-5)
    assert ebm_prior({"name": "mlp"}, m=3).expected_energy(q, z) is None      # no closed-form part
