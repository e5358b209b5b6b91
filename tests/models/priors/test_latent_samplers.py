"""The adaptive MALA sampler of EBM priors and the MCMC convergence diagnostics (issue 13).

Oracles: a 4-D GRBM whose mean and covariance are computed exactly by summing over its 2^6
hidden states (its law is a mixture far from N(0, I), where the chains start), closed-form
split R-hat / ESS cases, and i.i.d. draws (ESS = number of draws)."""
import math

import pytest
import torch

from energyvae.mcmc.diagnostics import chain_diagnostics, effective_sample_size, split_rhat
from energyvae.models.priors.ebm import ENERGIES, LATENT_SAMPLERS

from helpers import grbm_moments


pytestmark = pytest.mark.usefixtures("one_thread")


def far_grbm():
    """4 visible x 6 hidden units; its mean (1.2, -3.4, 1.1, 2.8) is up to 5 sd from N(0, I)'s."""
    torch.manual_seed(0)
    e = ENERGIES.build({"name": "grbm", "hidden": 6, "init_std": 0.7}, latent_dim=4)
    with torch.no_grad():
        e.mu.copy_(torch.tensor([3.0, -2.0, 0.5, 1.0]))
        e.log_sigma.copy_(torch.tensor([0.0, -0.5, 0.3, -0.7]))
        e.b.copy_(torch.randn(6))
    return e


def test_adapted_mala_reaches_an_exact_grbm_law_from_a_far_start():
    e = far_grbm()
    mean, cov = grbm_moments(e)
    sd = cov.diag().sqrt()
    assert ((mean / sd).abs() > 3).any()                        # N(0, I) starts are far from it
    torch.manual_seed(1)
    sampler = LATENT_SAMPLERS.build({"name": "mala", "steps": 1000}, latent_dim=4, energy=e)
    with torch.no_grad():
        z, tr = sampler.sample(e, 4000, trace=True)
    z = z.double()
    # tolerance: 5 standard errors of the mean of 4000 draws (the chains are independent),
    # and 5 % on the standard deviations (their standard error is ~1.1 %)
    assert ((z.mean(0) - mean) / (sd / 4000**0.5)).abs().max() < 5
    torch.testing.assert_close(z.std(0), sd, rtol=0.05, atol=0.0)
    d = tr.diagnostics()
    assert d["mixed"] and d["rhat_max"] < 1.01
    assert 0.45 < d["acceptance"] < 0.7                          # adapted to the 0.574 target
    assert all(p.grad is None for p in e.parameters())


def test_the_papers_langevin_default_does_not_reach_it_and_the_diagnostic_says_so():
    e = far_grbm()
    mean, cov = grbm_moments(e)
    torch.manual_seed(2)
    sampler = LATENT_SAMPLERS.build({"name": "langevin", "steps": 100, "step_size": 0.01},
                                    latent_dim=4, energy=e)
    z, tr = sampler.sample(e, 2000, trace=True)
    assert ((z.double().mean(0) - mean) / cov.diag().sqrt()).abs().max() > 0.5   # visibly off
    d = tr.diagnostics()
    assert not d["mixed"] and d["rhat_max"] > 1.1


def test_mala_on_an_anisotropic_gaussian_and_small_requests():
    # N(c, P^-1) with stds 0.05 .. 3: the preconditioner makes one step size fit all coordinates
    torch.manual_seed(3)
    e = ENERGIES.build({"name": "quadratic"}, latent_dim=3)
    with torch.no_grad():
        e.center.copy_(torch.tensor([2.0, -1.0, 0.5]))
        e.L.copy_(torch.diag(torch.tensor([20.0, 1.0, 1 / 3])))
    sampler = LATENT_SAMPLERS.build({"name": "mala", "steps": 1000}, latent_dim=3, energy=e)
    z, tr = sampler.sample(e, 3000, trace=True)
    torch.testing.assert_close(z.std(0), torch.tensor([0.05, 1.0, 3.0]), rtol=0.06, atol=0.0)
    assert tr.diagnostics()["mixed"]
    z, tr = sampler.sample(e, 5, trace=True)                     # fewer than min_chains
    assert z.shape == (5, 3) and tr.energy.shape[1] == 64
    assert sampler.sample(e.double(), 3)[0].dtype == torch.float64


def test_split_rhat_and_ess_on_known_cases():
    g = torch.Generator().manual_seed(0)
    iid = torch.randn(1000, 50, generator=g, dtype=torch.float64)
    assert abs(split_rhat(iid) - 1) < 0.005
    assert effective_sample_size(iid) == pytest.approx(50_000, rel=0.1)
    # an AR(1) chain with coefficient a has ESS = N (1 - a) / (1 + a)
    a, x = 0.9, torch.zeros(4000, 50, dtype=torch.float64)
    x[0] = torch.randn(50, generator=g, dtype=torch.float64) / math.sqrt(1 - a * a)
    for t in range(1, 4000):
        x[t] = a * x[t - 1] + torch.randn(50, generator=g, dtype=torch.float64)
    assert effective_sample_size(x) == pytest.approx(4000 * 50 * (1 - a) / (1 + a), rel=0.15)
    # chains that drift (half of them shifted by 3 sd in their second half) are flagged
    drift = iid.clone()
    drift[500:] += 3 * (torch.arange(50) % 2)
    assert split_rhat(drift) > 1.2
    d = chain_diagnostics({"energy": drift}, warmup=0)
    assert not d["mixed"]
    with pytest.raises(ValueError, match="trace"):
        split_rhat(torch.zeros(2, 3))


def test_drift_flags_chains_still_moving_and_passes_stationary_ones():
    from energyvae.mcmc.diagnostics import drift_z
    g = torch.Generator().manual_seed(4)
    still = torch.randn(200, 1000, generator=g, dtype=torch.float64)
    assert abs(drift_z(still)) < 4
    moving = still + torch.linspace(0, 0.5, 200, dtype=torch.float64)[:, None]   # 0.5 sd over the window
    assert drift_z(moving) > 4
    assert not chain_diagnostics({"energy": moving})["mixed"]
    assert chain_diagnostics({"energy": still})["mixed"]


def test_the_default_sampler_is_mala_for_every_energy_and_reports_a_diagnostic(tmp_path):
    from energyvae.config import load_config
    from energyvae.evaluation.model_metrics import describe_diagnostics, prior_sampler_diagnostics
    from energyvae.runs import prepare
    for energy, name in (("grbm", "MALA"), ("tilted", "MALA")):
        cfg = load_config("configs/toy2d_vae.yaml", [
            "data.n_points=200", f"run.dir={tmp_path}",
            f"model.prior={{name: ebm, energy: {{name: {energy}}}, scheme: {{name: ssm}}}}"])
        _, model = prepare(cfg)
        d = prior_sampler_diagnostics(model, n=64)
        assert d["chains"] == 64 and d["sampler"] == name
        assert "split R-hat" in describe_diagnostics(d)
    _, model = prepare(load_config("configs/toy2d_vae.yaml", ["data.n_points=200"]))
    assert prior_sampler_diagnostics(model) is None                  # N(0, I): no MCMC


def test_the_diagnostic_says_when_a_scheme_generates_without_the_sampler(tmp_path):
    from energyvae.config import load_config
    from energyvae.evaluation.model_metrics import describe_diagnostics, prior_sampler_diagnostics
    from energyvae.runs import prepare
    cfg = load_config("configs/toy2d_vae.yaml", [
        "data.n_points=200", f"run.dir={tmp_path}",
        "model.prior={name: ebm, energy: {name: tilted, hidden: [8]}, scheme: {name: evalp, hidden: [8]}}"])
    _, model = prepare(cfg)
    d = prior_sampler_diagnostics(model, n=64)
    assert d["generates_without_it"] and "own generator" in describe_diagnostics(d)


def test_a_non_finite_statistic_is_never_called_mixed_and_init_is_topped_up():
    g = torch.Generator().manual_seed(5)
    good = torch.randn(40, 100, generator=g, dtype=torch.float64)
    bad = good.clone()
    bad[30, 3] = float("nan")
    assert chain_diagnostics({"energy": good, "mean_coordinate": good.flip(0)})["mixed"]
    assert not chain_diagnostics({"energy": bad, "mean_coordinate": good})["mixed"]
    e = ENERGIES.build({"name": "quadratic"}, latent_dim=2)
    sampler = LATENT_SAMPLERS.build({"name": "mala", "steps": 20, "warmup": 10}, latent_dim=2, energy=e)
    init = torch.full((3, 2), 5.0)
    z, tr = sampler.sample(e, 3, init=init, trace=True)
    assert z.shape == (3, 2) and tr.energy.shape == (20, 64)
