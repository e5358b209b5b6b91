"""EC-Flow (paper 001, Sec. 4.2; models/flow_model.py): the flow's density against independent
oracles (quadrature, an autograd Jacobian, a Gaussian fit), the generator interface, lambda = 0
equals a plain flow, end-to-end run / resume / exact test NLL / sample --mcmc, bad params."""
import json
import math
from pathlib import Path

import pytest
import torch

from energyvae.config import build_config, read_yaml
from energyvae.errors import ConfigError
from energyvae.models import ModelContext, build_model
from energyvae.models.flow_model import FlowModel, FlowModelParams
from energyvae.commands.train import train_run
from energyvae.runs import load_run
from helpers import (ROOT, TINY_TRAIN, assert_mcmc_sampling, assert_resume_exact, assert_same_weights,
                     fit_recording_calibrators)

TINY_EC = {"name": "ec", "energy": {"name": "mlp", "hidden": [16]}, "steps": 3}


def flow_2d(perturb: float = 0.0, **params) -> FlowModel:
    model = FlowModel(FlowModelParams(**{"transforms": 4, "hidden": [16, 16], **params}),
                      ModelContext((2,), "vector"))
    if perturb:                                   # leave the identity start: a non-trivial density
        with torch.no_grad():
            for p in model.flow.parameters():
                p.add_(perturb * torch.randn_like(p))
    return model


@pytest.mark.parametrize("kind", ["coupling", "maf"])
def test_density_integrates_to_one_and_obeys_the_change_of_variables(kind):
    """Oracle 1: a midpoint rule on [-10, 10]^2 (h = 0.02) of exp(ln p) is 1 (to 1e-3).
    Oracle 2: ln p(x) = ln N(t(x); 0, I) + ln |det dt/dx| with the Jacobian from autograd, not
    from zuko's log-det; and t^{-1}(t(x)) = x."""
    torch.manual_seed(1)
    model = flow_2d(0.1, kind=kind).double()
    h = 0.02
    g = torch.arange(-10 + h / 2, 10, h, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        mass = torch.cat([model.log_prob(c).exp() for c in grid.split(40000)]).sum() * h * h
    assert abs(mass.item() - 1) < 1e-3
    x = torch.randn(20, 2, dtype=torch.float64) * 1.5
    with torch.no_grad():
        lp = model.log_prob(x)
        z = model.encode(x)
    for i in range(len(x)):
        jac = torch.autograd.functional.jacobian(lambda y: model.encode(y[None])[0], x[i])
        expect = -0.5 * z[i].pow(2).sum() - math.log(2 * math.pi) + torch.linalg.slogdet(jac)[1]
        torch.testing.assert_close(lp[i], expect, atol=1e-9, rtol=0)
    torch.testing.assert_close(model.reconstruct(x), x, atol=1e-9, rtol=0)


def test_the_flow_starts_as_a_standard_normal_on_image_data():
    model = build_model(("flow", FlowModelParams(transforms=2, hidden=[8])), (1, 4, 4))
    x = torch.randn(5, 1, 4, 4)
    expect = torch.distributions.Normal(0.0, 1.0).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(model.log_prob(x), expect)
    assert model.latent_dim == 16 and model.generate(3).shape == (3, 1, 4, 4)
    ev = model.evaluate(x)
    torch.testing.assert_close(ev["nll"], -expect)
    torch.testing.assert_close(ev["loss"], ev["nll"])


def test_nll_training_recovers_a_gaussian():
    """Maximum likelihood on 4000 draws of N(mu, S) (fixed seed, 600 Adam steps): the flow's
    samples have mean within 0.08 and covariance within 0.12 of the truth (per entry), and its
    held-out NLL is within 0.05 nats of the true entropy (the optimum)."""
    torch.manual_seed(0)
    mu = torch.tensor([1.0, -2.0])
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.8]])
    true = torch.distributions.MultivariateNormal(mu, cov)
    train, test = true.sample((4000,)), true.sample((4000,))
    model = flow_2d()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(600):
        x = train[torch.randint(len(train), (256,))]
        loss, logs = model("vae", x, {"step": step})
        assert logs["nll"] == logs["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        s = model.sample(20000)
        nll = model.evaluate(test)["nll"].mean().item()
    assert (s.mean(0) - mu).abs().max() < 0.08, s.mean(0)
    assert (torch.cov(s.T) - cov).abs().max() < 0.12, torch.cov(s.T)
    assert abs(nll - true.entropy().item()) < 0.05, (nll, true.entropy().item())


def _grads(module):
    return [p.grad for p in module.parameters()]


def test_generate_is_differentiable_and_reaches_the_flow_only():
    torch.manual_seed(0)
    model = flow_2d(0.3, calibrators=[TINY_EC])
    z = torch.randn(8, 2, requires_grad=True)
    x = model.generate(8, z=z)
    x.pow(2).sum().backward()
    assert z.grad is None                                         # z is detached
    assert all(g is None for g in _grads(model.calibrators))
    assert all(g is not None for g in _grads(model.flow)) and any(g.abs().sum() > 0 for g in _grads(model.flow))
    with torch.no_grad():                                         # generate(z) = t^{-1}(z)
        torch.testing.assert_close(model.encode(model.generate(8, z=z)), z, atol=1e-5, rtol=0)
    torch.manual_seed(3)
    a = model.generate(5)
    torch.manual_seed(3)
    torch.testing.assert_close(a, model.generate(5, z=torch.randn(5, 2)))   # default z ~ N(0, I)


@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_the_calibration_term_reaches_the_flow_only_when_lambda_is_positive(lam):
    torch.manual_seed(0)
    model = flow_2d(0.3, calibrators=[{**TINY_EC, "lambda_init": lam, "noise": 1.0}])
    (ec,) = model.calibrators
    x = torch.randn(16, 2)
    term, logs = ec.vae_loss_term(model, x, {"step": 0})
    assert logs["ec/l_con"] > 0
    term.backward()
    assert all(g is None for g in _grads(ec))
    flow_grad = sum(g.abs().sum() for g in _grads(model.flow) if g is not None)
    assert (flow_grad > 0) == (lam > 0)


def test_updates_and_dispatch():
    model = flow_2d(calibrators=[TINY_EC])
    specs = model.updates()
    assert [(u.name, u.order) for u in specs] == [("vae", 0), ("ec", 1)]
    assert {id(p) for p in specs[0].params} == {id(p) for p in model.flow.parameters()}
    assert {id(p) for p in specs[1].params} == {id(p) for p in model.calibrators.parameters()}
    state = {"step": 0}
    x = torch.randn(8, 2)
    loss, logs = model("vae", x, state)
    assert set(logs) >= {"loss", "nll", "ec/lambda", "ec/l_con", "ec/e_gen"}
    loss, logs = model("ec", x, state)
    assert set(logs) == {"loss", "e_real", "e_cal"}
    with pytest.raises(KeyError):
        model("nope", x, state)


def tiny_cfg(run_dir, calibrators, **train):
    return build_config({
        "run": {"dir": str(run_dir)},
        "data": {"name": "digits", "dequantize": "uniform_logit"},   # dequantization draws from the global RNG
        "model": {"name": "flow", "transforms": 2, "hidden": [16], "calibrators": calibrators},
        "train": {**TINY_TRAIN, **train},
    })


def test_lambda_zero_trains_exactly_like_a_plain_flow(tmp_path):
    plain, _ = fit_recording_calibrators(tiny_cfg(tmp_path / "plain", []))
    ec, energy0 = fit_recording_calibrators(
        tiny_cfg(tmp_path / "ec", [{**TINY_EC, "lambda_init": 0.0, "primal_dual": False}]))
    for a, b in ((plain.model, ec.model), (plain.ema.model, ec.ema.model)):
        assert_same_weights(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(energy0, ec.model.calibrators.parameters()))


def _ecflow_digits_cfg(run_dir):
    raw = read_yaml(ROOT / "configs" / "ecflow_digits.yaml")
    raw["run"]["dir"] = str(run_dir)
    raw["data"]["limit"] = 300
    raw["model"].update(transforms=2, hidden=[16])
    raw["model"]["calibrators"][0].update(energy=TINY_EC["energy"], steps=3)
    raw["train"].update(steps=6, batch_size=16, eval_every=2, checkpoint_every=2, eval_batches=1, progress=False)
    raw["eval"] = {"n_samples": 4, "n_reconstructions": 4, "iw_max_examples": 50}
    return build_config(raw)


def test_ecflow_digits_end_to_end_resume_exact_nll_and_mcmc_sampling(tmp_path, kill_training_at):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    result = train_run(_ecflow_digits_cfg(ref_dir))
    train = [r for r in map(json.loads, (ref_dir / "metrics.jsonl").read_text().splitlines())
             if r["split"] == "train"]
    for key in ("nll", "ec/lambda", "ec/l_con", "ec/e_gen", "ec/e_real", "ec/e_cal"):
        assert all(key in r for r in train), key
    for key in ("samples", "reconstructions", "loss_curves", "metrics"):
        assert Path(result["paths"][key]).stat().st_size > 0
    exact = result["metrics"]["exact"]
    assert exact["examples"] == 50 and "iw" not in result["metrics"]

    cfg, data, model = load_run(ref_dir, "last")
    torch.manual_seed(cfg.train.seed)          # bits/dim by hand: v = (sigmoid(m) - a) / (1 - 2a), a = 0.05,
    x = data.preprocess(data.test.x[:50])      # y = 256 v: -ln p_y = -ln p_m + sum ln |dv/dm| + D ln 256
    nll = -model.log_prob(x).double()
    s = torch.sigmoid(x.double()).flatten(1)
    d = s.shape[1]
    log_dv_dm = (s * (1 - s) / 0.9).log().sum(1)
    bpd = (nll + log_dv_dm + d * math.log(256)) / (d * math.log(2))
    assert exact["nll"] == pytest.approx(nll.mean().item(), rel=1e-5)
    assert exact["bits_per_dim"] == pytest.approx(bpd.mean().item(), rel=1e-5)

    assert_resume_exact(_ecflow_digits_cfg, ref_dir, run_dir, kill_training_at)
    assert_mcmc_sampling(ref_dir, tmp_path)

    from energyvae.commands.evaluate import evaluate_run   # VAE-only metrics are skipped, not crashed
    res = evaluate_run(ref_dir, metrics=("nll", "latent", "holes", "figures"), n=16, nll_examples=50,
                       checkpoint="last", seed=cfg.train.seed, progress=False)
    assert set(res["skipped"]) == {"latent", "holes"} and res["metrics"]["nll"] == pytest.approx(exact["nll"])
    assert set(res["figures"]) == {"samples"} and "exact" in (ref_dir / "evaluation" / "metrics.md").read_text()


def test_sampling_with_mcmc_needs_an_energy():
    with pytest.raises(ConfigError, match="mcmc > 0 needs a calibrator"):
        flow_2d().sample(4, mcmc=2)


@pytest.mark.parametrize("params, message", [
    ({"transforms": 0}, "model: transforms: must be in"),
    ({"hidden": [0]}, "model: hidden: widths must be > 0"),
    ({"log_scale_bound": 0.0}, "model: log_scale_bound: must be > 0"),
    ({"kind": "iaf"}, "model.kind: expected one of 'coupling', 'maf'"),
    ({"calibrators": [{"name": "calibrated_posterior"}]}, "model.calibrators.0: 'calibrated_posterior' needs a VAE"),
    ({"calibrators": [{"name": "mmd"}]}, "model.calibrators.0: 'mmd' needs a VAE"),
    ({"calibrators": [{"name": "ec", "stepz": 3}]}, "model.calibrators.0.stepz: unknown key"),
    ({"latent_dim": 3}, "model.latent_dim: unknown key"),
])
def test_bad_params_are_config_errors(params, message):
    with pytest.raises(ConfigError, match=message):
        build_config({"model": {"name": "flow", **params}})
