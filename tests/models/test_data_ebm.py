"""Data-space EBM (``data_ebm``; paper 001 Table 10 "EBM" / "EBM init w/ VAE samples"):
the Langevin sampler's law on a quadratic energy, CD learning of a Gaussian's precision, the
energy score, the replay buffer, a frozen VAE init (no grads, unchanged, saved), clear errors,
exact resume and the two shipped configs end to end."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from energyvae.config import build_config, load_config, read_yaml
from energyvae.errors import ConfigError
from energyvae.models import build_model
from energyvae.models.data_ebm import DataEBM, energy_score
from energyvae.commands.train import train_run
from energyvae.runs import load_run, prepare
from energyvae.train import LAST, Trainer, load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
TINY_ENERGY = {"name": "mlp", "hidden": [16]}
TINY_TRAIN = {"steps": 6, "batch_size": 16, "eval_every": 3, "checkpoint_every": 3, "log_every": 1,
              "eval_batches": 1, "progress": False}
TINY_EVAL = {"iw_samples": 0, "n_samples": 4, "n_reconstructions": 4}


class Quadratic(nn.Module):
    """E(x) = 1/2 (x - mu)^T P (x - mu), P = L L^T (L lower triangular with a positive diagonal)."""

    def __init__(self, mu, precision):
        super().__init__()
        chol = torch.linalg.cholesky(torch.as_tensor(precision, dtype=torch.float64))
        self.mu = nn.Parameter(torch.as_tensor(mu, dtype=torch.float64).float())
        self.log_diag = nn.Parameter(chol.diagonal().log().float())
        self.off = nn.Parameter(torch.tril(chol, -1).float())

    def precision(self):
        chol = torch.tril(self.off, -1) + torch.diag(self.log_diag.exp())
        return chol @ chol.T

    def forward(self, x):
        d = x - self.mu
        return 0.5 * ((d @ self.precision()) * d).sum(-1)


def vector_ebm(energy, **params):
    """A data_ebm on 2-D vectors (no value range: chains start from N(0, I)) with ``energy``."""
    model = build_model(("data_ebm", _params(**params)), (2,), "vector", None)
    model.energy = energy
    return model


def _params(**params):
    return build_config({"model": {"name": "data_ebm", "energy": TINY_ENERGY, **params}}).model[1]


def test_langevin_from_noise_has_the_discretised_gaussian_law():
    """Target exp(-E / c^2) with E quadratic (precision P): the chain x <- x - s/2 P (x - mu) +
    c sqrt(s) xi is a Gaussian AR(1) whose stationary law is N(mu, c^2 (P - s P^2 / 4)^-1)
    exactly (the O(s) excess over c^2 P^-1); from N(0, I) it contracts by |1 - s k / 2| per step
    (k an eigenvalue of P), here <= 0.975^400 ~ 4e-5. 20000 chains: mean tolerance 0.03
    (~6 standard errors), covariance 5 %."""
    torch.manual_seed(0)
    mu, prec, s, c = torch.tensor([1.0, -2.0]), torch.tensor([[1.0, 0.6], [0.6, 4.0]]), 0.05, 0.7
    model = vector_ebm(Quadratic(mu, prec), steps=400, step_size=s, noise=c)
    x = model.sample(20000).double()
    cov_chain = c**2 * torch.linalg.inv(prec - s * prec @ prec / 4).double()
    torch.testing.assert_close(x.mean(0), mu.double(), atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), cov_chain, atol=0.05 * cov_chain.abs().max().item(), rtol=0)
    assert not torch.allclose(cov_chain, c**2 * torch.linalg.inv(prec).double(), rtol=0.02)   # bias seen
    assert all(q.grad is None for q in model.parameters())                                   # no param grads


@pytest.mark.slow
def test_contrastive_divergence_learns_a_gaussians_precision():
    """CD with Langevin negatives (c = 1, K = 150 from N(0, I)) on data N(m, diag(1/4, 1)):
    the quadratic energy's mean goes to m and its precision to the value whose chain law
    matches the data, k* = (1 - sqrt(1 - s k)) / (s / 2) per axis (k* = 4.22, 1.03 at s = 0.05;
    the chain's stationary variance is 1 / (k* (1 - s k* / 4))). Tolerance 10 %, fixed seed."""
    torch.manual_seed(0)
    s, true_prec, m = 0.05, torch.tensor([4.0, 1.0]), torch.tensor([1.0, -1.0])
    energy = Quadratic(torch.zeros(2), torch.eye(2))
    model = vector_ebm(energy, steps=150, step_size=s, noise=1.0)
    (spec,) = model.updates()
    assert spec.name == "ebm" and {id(q) for q in spec.params} == {id(q) for q in energy.parameters()}
    opt = torch.optim.Adam(spec.params, lr=0.02)
    k_star = (1 - torch.sqrt(1 - s * true_prec)) / (s / 2)
    err0 = (energy.precision().diagonal() - k_star).abs().max().item()
    for _ in range(400):
        x = m + torch.randn(256, 2) / true_prec.sqrt()
        loss, logs = model("ebm", x, {"step": 0})
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert set(logs) == {"loss", "cd", "e_real", "e_neg"}
    p = energy.precision().detach()
    torch.testing.assert_close(p.diagonal(), k_star, rtol=0.1, atol=0)
    assert abs(p[0, 1].item()) < 0.15 * k_star.min().item()
    assert (p.diagonal() - k_star).abs().max().item() < 0.1 * err0
    torch.testing.assert_close(energy.mu.detach(), m, atol=0.1, rtol=0)


def test_energy_score_matches_a_hand_computation():
    samples = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    x = torch.tensor([[0.0, 0.0], [6.0, 8.0]])
    # x0: mean dist (0 + 5) / 2 = 2.5; x1: (10 + 5) / 2 = 7.5; spread = mean_{j != k} = 5
    torch.testing.assert_close(energy_score(samples, x), torch.tensor([2.5 - 2.5, 7.5 - 2.5]))


def test_noise_init_is_uniform_over_the_value_range_and_sample_steps():
    model = build_model(("data_ebm", _params(steps=7)), (1, 8, 8), "image", (-1.0, 1.0))
    torch.manual_seed(0)
    x0 = model.init_samples(4000)
    assert x0.shape == (4000, 1, 8, 8) and x0.min() >= -1 and x0.max() <= 1
    assert abs(x0.mean().item()) < 0.01 and abs(x0.var().item() - 1 / 3) < 0.01
    for mcmc, k in ((0, 7), (3, 3)):                                      # mcmc = 0: the training K
        torch.manual_seed(1)
        got = model.sample(5, mcmc=mcmc)
        torch.manual_seed(1)
        assert torch.equal(got, model.chain(model.init_samples(5), k))
    out = model.evaluate(x0[:3])
    assert set(out) == {"loss", "energy", "energy_gap"} and all(v.shape == (3,) for v in out.values())


def test_replay_buffer_ring_and_restarts():
    model = vector_ebm(Quadratic(torch.zeros(2), torch.eye(2)), steps=1, buffer_size=5, reinit=0.25)
    model._push(torch.arange(8.0).view(4, 2))
    assert int(model.replay_count) == 4 and int(model.replay_next) == 4
    model._push(torch.arange(100.0, 106.0).view(3, 2))                  # wraps: slots 4, 0, 1
    assert int(model.replay_count) == 5 and int(model.replay_next) == 2
    torch.testing.assert_close(model.replay, torch.tensor(
        [[102.0, 103], [104, 105], [4, 5], [6, 7], [100, 101]]))
    torch.manual_seed(0)
    x0, restart = model._training_start(4000)
    from_buffer = (x0.unsqueeze(1) == model.replay.unsqueeze(0)).all(-1).any(-1)
    assert torch.equal(from_buffer, ~restart)
    assert abs(restart.float().mean().item() - 0.25) < 0.03


def _tiny_vae_run(run_dir):
    raw = read_yaml(ROOT / "configs" / "digits_conv_vae.yaml")
    raw["run"]["dir"] = str(run_dir)
    raw["data"]["limit"] = 200
    tiny_net = {"name": "conv", "channels": [4, 8]}
    raw["model"].update(encoder=tiny_net, decoder=tiny_net)
    raw["train"].update(TINY_TRAIN)
    raw["eval"] = dict(TINY_EVAL)
    train_run(build_config(raw))
    return run_dir


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    """A tiny trained run of configs/digits_conv_vae.yaml (the init run of ebm_from_vae_digits)."""
    torch.manual_seed(0)
    return _tiny_vae_run(tmp_path_factory.mktemp("vae") / "digits_conv_vae")


def _ebm_cfg(config, run_dir, **model):
    raw = read_yaml(ROOT / "configs" / config)
    raw["run"]["dir"] = str(run_dir)
    raw["data"]["limit"] = 200
    raw["model"].update(energy=TINY_ENERGY, steps=3, **model)
    raw["train"].update(TINY_TRAIN)
    raw["eval"] = dict(TINY_EVAL)
    return build_config(raw)


def test_vae_init_is_frozen_saved_and_does_not_move_the_rng(tmp_path, vae_run):
    cfg = _ebm_cfg("ebm_from_vae_digits.yaml", tmp_path / "ebm", init_run=str(vae_run))
    data, model = prepare(cfg)
    _, _, vae = load_run(vae_run)
    assert isinstance(model, DataEBM) and model.init_model is not None
    for k, v in vae.state_dict().items():                                 # the trained (EMA, best) weights
        assert torch.equal(model.init_model.state_dict()[k], v), k
    _, noise_model = prepare(_ebm_cfg("ebm_digits.yaml", tmp_path / "noise"))
    for a, b in zip(model.energy.parameters(), noise_model.energy.parameters()):
        assert torch.equal(a, b)                                           # loading the run used no RNG
    frozen = {k: v.clone() for k, v in model.init_model.state_dict().items()}
    (spec,) = model.updates()
    assert {id(q) for q in spec.params} == {id(q) for q in model.energy.parameters()}
    assert not any(q.requires_grad for q in model.init_model.parameters())
    torch.manual_seed(3)
    x0 = model.init_samples(6)
    torch.manual_seed(3)
    torch.testing.assert_close(x0, vae.sample(6))                         # chains start at VAE samples

    trainer = Trainer(cfg, model, data)
    energy0 = [q.detach().clone() for q in model.energy.parameters()]
    trainer.fit()
    assert not model.init_model.training and trainer.model.training
    assert all(q.grad is None for q in model.init_model.parameters())
    for k, v in model.init_model.state_dict().items():
        assert torch.equal(v, frozen[k]), k
    assert any(not torch.equal(a, b) for a, b in zip(energy0, model.energy.parameters()))
    saved = load_checkpoint(tmp_path / "ebm" / "checkpoints" / LAST)["model"]
    for k, v in frozen.items():                                            # stored with the EBM run
        assert torch.equal(saved[f"init_model.{k}"], v), k


def test_missing_or_bad_init_run_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="model: init_run: required when init is 'run'"):
        build_config({"model": {"name": "data_ebm", "init": "run"}})
    with pytest.raises(ConfigError, match="model: init_run: only used with init: run"):
        build_config({"model": {"name": "data_ebm", "init_run": "runs/x"}})
    cfg = _ebm_cfg("ebm_from_vae_digits.yaml", tmp_path / "ebm", init_run=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=r"model.init_run: .*nope: not a run folder \(no config.yaml\)"):
        prepare(cfg)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.yaml").write_text((ROOT / "configs" / "digits_conv_vae.yaml").read_text())
    with pytest.raises(ConfigError, match=r"model.init_run: .*broken: cannot load it"):
        prepare(_ebm_cfg("ebm_from_vae_digits.yaml", tmp_path / "ebm", init_run=str(tmp_path / "broken")))
    res = subprocess.run([sys.executable, "-m", "energyvae", "train", "--config",
                          "configs/ebm_from_vae_digits.yaml", f"run.dir={tmp_path / 'cli'}",
                          f"model.init_run={tmp_path / 'nope'}"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("energyvae: error: model.init_run:")


def test_init_run_with_other_data_is_rejected(tmp_path, vae_run):
    cfg = _ebm_cfg("ebm_from_vae_digits.yaml", tmp_path / "ebm", init_run=str(vae_run))
    raw = {**cfg.raw, "data": {**cfg.raw["data"], "scale": "pm1"}}
    with pytest.raises(ConfigError, match="its data value range"):
        prepare(build_config(raw))


def test_resume_is_exact_with_a_replay_buffer(tmp_path, kill_training_at):
    def cfg(d):
        return _ebm_cfg("ebm_digits.yaml", d, buffer_size=40, reinit=0.3, alpha=0.1)
    ref = train_run(cfg(tmp_path / "ref"))
    assert Path(ref["paths"]["samples"]).stat().st_size > 0
    c = cfg(tmp_path / "run")
    data, model = prepare(c)
    kill_training_at(4, lambda: Trainer(c, model, data).fit())
    data, model = prepare(c)
    resumed = Trainer(c, model, data, resume=True)
    resumed.fit()
    want = load_checkpoint(tmp_path / "ref" / "checkpoints" / LAST)["model"]
    got = resumed.model.state_dict()
    assert int(got["replay_count"]) == 40                                  # 6 steps x 16 > 40: wrapped
    for k, v in got.items():
        assert torch.equal(v, want[k]), k


def test_shipped_configs_train_end_to_end(tmp_path, vae_run):
    """Both configs as shipped (nets and chains), a few steps; the from-VAE one with a tiny VAE run."""
    over = ["train.steps=3", "train.batch_size=16", "train.eval_every=3", "train.checkpoint_every=3",
            "train.eval_batches=1", "train.progress=false", "eval.n_samples=4", "eval.n_reconstructions=4",
            "data.limit=100", "model.steps=5"]
    for name, extra in (("ebm_digits", []), ("ebm_from_vae_digits", [f"model.init_run={vae_run}"])):
        cfg = load_config(ROOT / "configs" / f"{name}.yaml", [f"run.dir={tmp_path / name}", *over, *extra])
        result = train_run(cfg)
        for key in ("samples", "reconstructions", "loss_curves", "metrics"):
            assert Path(result["paths"][key]).stat().st_size > 0
        test = result["metrics"]["test"]
        assert set(test) == {"loss", "energy", "energy_gap"} and test["loss"] == test["loss"]
        _, _, model = load_run(tmp_path / name)
        assert model.sample(3, mcmc=2).shape == (3, 1, 8, 8)
    shipped = load_config(ROOT / "configs" / "ebm_from_vae_digits.yaml").model[1]
    assert shipped.init == "run" and shipped.init_run == "runs/digits_conv_vae"
