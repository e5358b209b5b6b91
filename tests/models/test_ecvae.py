"""EC-VAE (paper 001): conditional Langevin law, dual step, decoder-only calibration,
lambda = 0 equals a plain VAE, end-to-end run / resume / sample --mcmc, bad params."""
import json
from pathlib import Path

import pytest
import torch

from energyvae.config import build_config, read_yaml
from energyvae.errors import ConfigError
from energyvae.models.base import CALIBRATORS
from energyvae.models.energy_calibration import conditional_langevin
from energyvae.commands.train import train_run
from energyvae.runs import prepare
from helpers import (ROOT, assert_mcmc_sampling, assert_resume_exact, assert_same_weights, fit_recording_calibrators,
                     tiny_vae_cfg)

TINY_EC = {"name": "ec", "energy": {"name": "resnet", "channels": [8], "blocks": 1, "head": 8}}


def test_langevin_samples_the_product_of_two_gaussians():
    """E(x) = ||x - a||^2 / (2 tau^2) and the distance ||x - x0||^2 / (2 sigma^2) at temperature
    c^2: the target is N(mu, v I), mu = (sigma^2 a + tau^2 x0) / (sigma^2 + tau^2),
    v = c^2 tau^2 sigma^2 / (tau^2 + sigma^2). The discretised chain (curvature k = 1/tau^2 +
    1/sigma^2) has the same mean and variance c^2 / (k (1 - s k / 4)), an O(s) excess."""
    torch.manual_seed(0)
    a, tau, sigma, c, s = torch.tensor([0.0, 1.0]), 1.0, 0.5, 0.5, 0.01
    x0 = torch.tensor([1.0, -2.0]).expand(20000, 2)
    x = conditional_langevin(lambda y: (y - a).pow(2).sum(-1) / (2 * tau**2), x0, steps=600,
                             step_size=s, sigma=sigma, noise=c)
    mu = (sigma**2 * a + tau**2 * x0[0]) / (sigma**2 + tau**2)
    k = 1 / tau**2 + 1 / sigma**2
    v_true, v_chain = c**2 / k, c**2 / (k * (1 - s * k / 4))
    torch.testing.assert_close(x.mean(0), mu, atol=0.008, rtol=0)
    assert abs(x.var(0).mean().item() / v_chain - 1) < 0.03
    assert abs(v_chain / v_true - 1) < 0.015


def test_dual_variable_rises_falls_and_stays_in_bounds():
    cal = CALIBRATORS.build({**TINY_EC, "lambda_init": 1.0, "eps1": 0.05, "eta": 0.1, "lambda_max": 2.0},
                            data_shape=(1, 8, 8))
    lam = lambda: float(cal.lam)  # noqa: E731
    cal.after_update("vae", {"ec_l_con": 1.05})                  # violated: + eta (1.05 - 0.05)
    assert lam() == pytest.approx(1.1)
    cal.after_update("ec", {"ec_l_con": 100.0})                  # only the VAE update's value counts
    assert lam() == pytest.approx(1.1)
    cal.after_update("vae", {"ec_l_con": 0.0})                   # satisfied: - eta * eps1
    assert lam() == pytest.approx(1.095)
    for _ in range(300):                                         # 219 steps reach 0
        cal.after_update("vae", {"ec_l_con": 0.0})
        assert lam() >= 0.0
    assert lam() == 0.0
    for _ in range(100):
        cal.after_update("vae", {"ec_l_con": 10.0})
    assert lam() == 2.0                                          # clipped at lambda_max
    fixed = CALIBRATORS.build({**TINY_EC, "lambda_init": 3.0, "primal_dual": False}, data_shape=(1, 8, 8))
    fixed.after_update("vae", {"ec_l_con": 10.0})
    assert float(fixed.lam) == 3.0


def _grads(module):
    return [p.grad for p in module.parameters()]


def test_calibration_terms_reach_only_their_own_parts(tmp_path):
    """ec's lambda L_con: decoder only (a VampPrior's samples go through the encoder, yet the
    encoder, the pseudo-inputs and the energy get no gradient); calibrated_posterior: encoder only."""
    cfg = tiny_vae_cfg(tmp_path, [{**TINY_EC, "lambda_init": 1.0, "noise": 1.0, "sigma": 1.0},
                              {"name": "calibrated_posterior"}], prior={"name": "vamp", "components": 4})
    data, model = prepare(cfg)
    ec, cpost = model.calibrators
    x = data.preprocess(data.train.x[:16])
    state = {"step": 0}
    _, _, z, q, _ = model.terms(x)
    state["z"] = z
    term, logs = ec.vae_loss_term(model, x, state)
    assert logs["ec/l_con"] > 0
    term.backward()
    assert all(g is None for g in _grads(model.encoder) + _grads(model.prior) + _grads(ec))
    assert any(g is not None and g.abs().sum() > 0 for g in _grads(model.decoder))
    model.zero_grad(set_to_none=True)
    term, logs = cpost.vae_loss_term(model, x, state)
    assert logs["cpost/l_con"] > 0
    term.backward()
    assert all(g is None for g in _grads(model.decoder) + _grads(model.prior) + _grads(ec))
    assert any(g is not None and g.abs().sum() > 0 for g in _grads(model.encoder))


def test_lambda_zero_trains_exactly_like_a_plain_vae(tmp_path):
    plain, _ = fit_recording_calibrators(tiny_vae_cfg(tmp_path / "plain", []))
    ec, energy0 = fit_recording_calibrators(tiny_vae_cfg(tmp_path / "ec", [
        {**TINY_EC, "lambda_init": 0.0, "primal_dual": False}, {"name": "calibrated_posterior", "lambda_init": 0.0}]))
    assert_same_weights(plain.model, ec.model)
    assert_same_weights(plain.ema.model, ec.ema.model)
    assert any(not torch.equal(a, b) for a, b in zip(energy0, ec.model.calibrators.parameters()))


def _ec_digits_cfg(run_dir):
    raw = read_yaml(ROOT / "configs" / "ecvae_digits.yaml")
    raw["run"]["dir"] = str(run_dir)
    raw["data"]["limit"] = 300
    raw["model"].update(encoder={"name": "conv", "channels": [8, 8]}, decoder={"name": "conv", "channels": [8, 8]})
    raw["model"]["calibrators"][0].update(energy=TINY_EC["energy"], steps=3)
    raw["train"].update(steps=6, batch_size=16, eval_every=2, checkpoint_every=2, eval_batches=1, progress=False)
    raw["eval"] = {"iw_samples": 0, "n_samples": 4, "n_reconstructions": 4}
    return build_config(raw)


def test_ecvae_digits_end_to_end_resume_and_mcmc_sampling(tmp_path, kill_training_at):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    result = train_run(_ec_digits_cfg(ref_dir))
    train = [r for r in map(json.loads, (ref_dir / "metrics.jsonl").read_text().splitlines())
             if r["split"] == "train"]
    for key in ("ec/lambda", "ec/l_con", "ec/e_gen", "ec/e_real", "ec/e_cal"):
        assert all(key in r for r in train), key
    assert train[-1]["ec/lambda"] < 30.0                          # the dual step ran (L_con < eps1)
    assert Path(result["paths"]["samples"]).stat().st_size > 0

    assert_resume_exact(_ec_digits_cfg, ref_dir, run_dir, kill_training_at)
    assert_mcmc_sampling(ref_dir, tmp_path)


@pytest.mark.parametrize("params, message", [
    ({"steps": 0}, "model.calibrators.0: steps: must be >= 1"),
    ({"step_size": 0.0}, "model.calibrators.0: step_size: must be > 0"),
    ({"eps1": -0.1}, "model.calibrators.0: eps1: must be >= 0"),
    ({"sigma": -1.0}, "model.calibrators.0: sigma: must be > 0"),
    ({"lambda_init": 200.0}, "model.calibrators.0: lambda_init: must be in"),
    ({"betas": [0.0, 1.0]}, "model.calibrators.0: betas"),
    ({"energy": {"name": "resnet", "blocks": 0}}, "model.calibrators.0: energy: blocks: must be in"),
    ({"energy": {"name": "nope"}}, "unknown data energy 'nope'"),
    ({"stepz": 3}, "model.calibrators.0.stepz: unknown key"),
])
def test_bad_params_are_config_errors(tmp_path, params, message):
    with pytest.raises(ConfigError, match=message):
        tiny_vae_cfg(tmp_path, [{"name": "ec", **params}])


class SumEnergy(torch.nn.Module):
    def forward(self, x):
        return x.sum(-1)


def test_energy_regulariser_adds_alpha_times_the_squared_energies():
    """energy_reg alpha: loss = mean E(x) - mean E(x~) + alpha (mean E(x)^2 + mean E(x~)^2), with
    a stub energy of known values; alpha = 0 is Eq. 2 as printed."""
    for alpha in (0.0, 0.5):
        cal = CALIBRATORS.build({**TINY_EC, "energy": {"name": "mlp", "hidden": [4]}, "energy_reg": alpha},
                                data_shape=(2,))
        cal.energy = SumEnergy()                                    # known energies
        x, neg = torch.tensor([[1.0, 0.0], [2.0, 1.0]]), torch.tensor([[0.0, -1.0], [4.0, 0.0]])
        loss, logs = cal.update_loss("ec", x, {"ec_negatives": neg})
        e_real, e_cal = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, 4.0])
        want = e_real.mean() - e_cal.mean() + alpha * (e_real.pow(2).mean() + e_cal.pow(2).mean())
        assert float(loss) == pytest.approx(float(want))
        assert float(logs["e_real"]) == 2.0 and float(logs["e_cal"]) == 1.5
    with pytest.raises(ConfigError, match="energy_reg"):
        CALIBRATORS.build({**TINY_EC, "energy_reg": -1.0}, data_shape=(1, 8, 8))


def test_chain_computes_spectral_norms_once_and_equals_the_uncached_chain(monkeypatch):
    """conditional_langevin caches the energy's parametrized weights for the whole chain: one
    spectral-norm evaluation per layer instead of one per step, and (in eval mode, where the
    power iteration does not move) the same chain as recomputing them at every step."""
    from torch.nn.utils.parametrizations import _SpectralNorm, spectral_norm
    torch.manual_seed(0)
    energy = torch.nn.Sequential(spectral_norm(torch.nn.Linear(4, 8)), torch.nn.SiLU(),
                                 spectral_norm(torch.nn.Linear(8, 1)), torch.nn.Flatten(0))
    calls = []
    forward = _SpectralNorm.forward
    monkeypatch.setattr(_SpectralNorm, "forward", lambda self, w: calls.append(1) or forward(self, w))
    x0 = torch.randn(16, 4)
    energy.train()
    conditional_langevin(energy, x0, 5, 0.01, sigma=1.0)
    assert len(calls) == 2                                   # two layers, once each, not 5 x 2
    energy.eval()
    torch.manual_seed(1)
    cached = conditional_langevin(energy, x0, 5, 0.01, sigma=1.0)
    torch.manual_seed(1)
    x = x0
    for _ in range(5):                                       # the same steps, weights recomputed
        xg = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(energy(xg).sum(), xg)
        g = g + (x - x0)
        x = x - 0.005 * g + 0.01 ** 0.5 * torch.randn_like(x)
    assert torch.equal(cached, x)
