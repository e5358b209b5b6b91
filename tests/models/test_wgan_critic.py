"""VAE + WGAN-GP critic (paper 001 Table 10 ablation, calibrator ``wgan``): the critic loss and
gradient penalty against closed forms, decoder-only generator gradient, weight 0 equals a plain
VAE, the critic's W1 estimate between two Gaussians, weight schedule, end-to-end run and resume,
bad params."""
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from energyvae.config import build_config, read_yaml
from energyvae.errors import ConfigError
from energyvae.models.base import CALIBRATORS
from energyvae.models.wgan_critic import WGANCritic, WGANParams, _reject_batch_norm
from energyvae.commands.train import train_run
from energyvae.runs import prepare
from helpers import ROOT, assert_resume_exact, assert_same_weights, fit_recording_calibrators, tiny_vae_cfg

TINY_CRITIC = {"name": "resnet", "channels": [8], "blocks": 1, "head": 8}


class LinearCritic(nn.Module):
    """D(x) = w . flatten(x) + b."""

    def __init__(self, w, b):
        super().__init__()
        self.w, self.b = nn.Parameter(w.clone()), nn.Parameter(torch.tensor(float(b)))

    def forward(self, x):
        return x.flatten(1) @ self.w + self.b


class QuadraticCritic(nn.Module):
    """D(x) = ||x||^2 / 2 (grad = x); one dummy parameter so the update has one."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        return 0.5 * self.scale * x.flatten(1).pow(2).sum(1)


def _cal(critic=None, data_shape=(1, 3, 3), **params):
    cal = CALIBRATORS.build({"name": "wgan", "critic": {"name": "mlp", "hidden": [4]}, **params},
                            data_shape=data_shape)
    if critic is not None:
        cal.critic = critic
    return cal


def test_critic_loss_and_gradient_penalty_of_a_linear_critic_are_exact():
    """Linear D: grad_x D = w at every interpolate, so GP = (||w|| - 1)^2 whatever the draws;
    L_D = w.(mean fake - mean real) + lambda GP, and dL_D/dw = mean fake - mean real
    + 2 lambda (||w|| - 1) w / ||w|| (the penalty's gradient reaches the critic: create_graph)."""
    torch.manual_seed(1)
    w, b, lam = torch.randn(9) * 0.7, 0.3, 10.0
    cal = _cal(LinearCritic(w, b), gp_weight=lam)
    real, fake = torch.randn(32, 1, 3, 3), torch.randn(32, 1, 3, 3) + 0.5
    loss, logs = cal.update_loss("wgan", real, {"step": 7, "wgan_fakes": fake})
    gp = (w.norm() - 1) ** 2
    diff = fake.flatten(1).mean(0) - real.flatten(1).mean(0)
    torch.testing.assert_close(logs["gp"], gp, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logs["wasserstein"], -(w @ diff), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logs["d_real"], (real.flatten(1) @ w + b).mean(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, w @ diff + lam * gp, rtol=1e-5, atol=1e-5)
    loss.backward()
    torch.testing.assert_close(cal.critic.w.grad, diff + 2 * lam * (w.norm() - 1) * w / w.norm(),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cal.critic.b.grad, torch.tensor(0.0), rtol=0, atol=1e-6)


def test_gradient_penalty_is_the_mean_of_per_example_norms_over_all_dims():
    """D = ||x||^2 / 2 and real = fake: every interpolate is x_b itself, grad = x_b, so
    GP = mean_b (||x_b|| - 1)^2 with the norm over all C*H*W dims; W1 estimate 0."""
    x = torch.randn(16, 2, 3, 3) * 0.4
    cal = _cal(QuadraticCritic(), data_shape=(2, 3, 3))
    loss, logs = cal.update_loss("wgan", x, {"step": 0, "wgan_fakes": x.clone()})
    gp = (x.flatten(1).norm(dim=1) - 1).pow(2).mean()
    torch.testing.assert_close(logs["gp"], gp)
    assert logs["wasserstein"] == 0
    torch.testing.assert_close(loss, 10 * gp)


def _grads(module):
    return [p.grad for p in module.parameters()]


def test_generator_term_reaches_the_decoder_only_with_the_exact_gradient(tmp_path):
    """w * (-mean D(g(z))): value and decoder gradient equal the direct autograd of that
    expression (same z from the private stream); encoder, VampPrior pseudo-inputs and critic get
    no gradient; the detached samples are the critic's fakes."""
    w = 2.5
    cfg = tiny_vae_cfg(tmp_path, [{"name": "wgan", "critic": TINY_CRITIC, "weight": w, "n_critic": 1}],
                   prior={"name": "vamp", "components": 4})
    data, model = prepare(cfg)
    (cal,) = model.calibrators
    x = data.preprocess(data.train.x[:16])
    state = {"step": 3}
    term, logs = cal.vae_loss_term(model, x, state)
    assert logs["wgan/weight"] == w
    term.backward()
    assert all(g is None for g in _grads(model.encoder) + _grads(model.prior) + _grads(cal))
    got = _grads(model.decoder)
    assert all(g is not None for g in got) and any(g.abs().sum() > 0 for g in got)

    model.zero_grad(set_to_none=True)
    with cal.private_rng(state, 0, x.device):                    # the same z
        x_gen = model.generate(16)
    torch.testing.assert_close(state["wgan_fakes"], x_gen.detach())
    direct = -w * cal.critic(x_gen).mean()
    torch.testing.assert_close(term, direct)
    torch.testing.assert_close(logs["wgan/g_loss"], direct.detach() / w)
    want = torch.autograd.grad(direct, list(model.decoder.parameters()))
    for g, h in zip(got, want):
        torch.testing.assert_close(g, h)


def test_weight_schedule_warmup_and_n_critic():
    cal = _cal(weight=4.0, warmup=4, n_critic=2)
    assert [cal.weight_at(t) for t in range(8)] == [0.0, 0.0, 2.0, 0.0, 4.0, 0.0, 4.0, 0.0]
    cal = _cal(weight=4.0, n_critic=1)
    assert [cal.weight_at(t) for t in range(3)] == [4.0, 4.0, 4.0]
    assert [_cal(weight=4.0).weight_at(t) for t in range(6)] == [4.0, 0.0, 0.0, 0.0, 0.0, 4.0]   # default 5


def test_steps_without_the_generator_term_still_give_the_critic_its_fakes(tmp_path):
    """n_critic = 2: at odd steps the term is a constant 0 (no graph), g_loss is still logged and
    the fakes are the same samples as a generator step would draw from the private stream."""
    cfg = tiny_vae_cfg(tmp_path, [{"name": "wgan", "critic": TINY_CRITIC, "n_critic": 2}])
    data, model = prepare(cfg)
    (cal,) = model.calibrators
    x = data.preprocess(data.train.x[:16])
    state = {"step": 5}
    term, logs = cal.vae_loss_term(model, x, state)
    assert term.item() == 0 and not term.requires_grad and logs["wgan/weight"] == 0.0
    with torch.no_grad(), cal.private_rng(state, 0, x.device):
        x_gen = model.generate(16)
    torch.testing.assert_close(state["wgan_fakes"], x_gen)
    torch.testing.assert_close(logs["wgan/g_loss"], -cal.critic(x_gen).mean().detach())


def test_weight_zero_trains_exactly_like_a_plain_vae(tmp_path):
    """w = 0: the decoder, encoder, EMA and the global RNG
    (binarization, posterior noise) are as without the calibrator; the critic still trains."""
    plain, _ = fit_recording_calibrators(tiny_vae_cfg(tmp_path / "plain", []))
    wgan, critic0 = fit_recording_calibrators(
        tiny_vae_cfg(tmp_path / "wgan", [{"name": "wgan", "critic": TINY_CRITIC, "weight": 0.0}]))
    assert_same_weights(plain.model, wgan.model)
    assert_same_weights(plain.ema.model, wgan.ema.model)
    assert any(not torch.equal(a, b) for a, b in zip(critic0, wgan.model.calibrators.parameters()))


def test_critic_estimates_w1_between_two_gaussians():
    """Real N(mu1, s^2 I), fake N(mu2, s^2 I) in 2-D: W1 = |mu1 - mu2| = 1, attained by the
    1-Lipschitz critic u.x (u the unit direction). With the soft penalty the optimal linear critic
    is (1 + d / (2 lambda)) u.x, whose estimate is d + d^2 / (2 lambda) = 1.05 (lambda = 10).
    After 300 critic steps (Adam 2e-3, batch 512, seed 0) the estimate on 20000 held-out pairs is
    within 0.1 of W1 (seeds 0-5 gave 1.00-1.07) and the penalty is small."""
    torch.manual_seed(0)
    mu1, mu2, s = torch.tensor([0.3, -0.2]), torch.tensor([0.9, 0.6]), 0.5     # |mu1 - mu2| = 1
    cal = CALIBRATORS.build({"name": "wgan", "critic": {"name": "mlp", "hidden": [32, 32]}}, data_shape=(2,))
    (spec,) = cal.updates()
    opt = torch.optim.Adam(spec.params, lr=2e-3, betas=spec.betas)
    for t in range(300):
        real, fake = mu1 + s * torch.randn(512, 2), mu2 + s * torch.randn(512, 2)
        opt.zero_grad(set_to_none=True)
        loss, logs = cal.update_loss("wgan", real, {"step": t, "wgan_fakes": fake})
        loss.backward()
        opt.step()
    with torch.no_grad():
        real, fake = mu1 + s * torch.randn(20000, 2), mu2 + s * torch.randn(20000, 2)
        est = cal.critic(real).mean() - cal.critic(fake).mean()
    assert abs(est.item() - 1.0) < 0.1, est.item()
    assert logs["gp"] < 0.02


def _digits_cfg(run_dir):
    raw = read_yaml(ROOT / "configs" / "vae_wgan_digits.yaml")
    raw["run"]["dir"] = str(run_dir)
    raw["data"]["limit"] = 300
    tiny = {"name": "conv", "channels": [8, 8]}
    raw["model"].update(encoder=tiny, decoder=tiny)
    raw["model"]["calibrators"][0].update(critic=TINY_CRITIC, warmup=2)
    raw["train"].update(steps=6, batch_size=16, eval_every=2, checkpoint_every=2, eval_batches=1, log_every=1,
                        progress=False)
    raw["eval"] = {"iw_samples": 0, "n_samples": 4, "n_reconstructions": 4}
    return build_config(raw)


def test_vae_wgan_digits_end_to_end_and_exact_resume(tmp_path, kill_training_at):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    result = train_run(_digits_cfg(ref_dir))
    train = [r for r in map(json.loads, (ref_dir / "metrics.jsonl").read_text().splitlines())
             if r["split"] == "train"]
    for key in ("wgan/weight", "wgan/g_loss", "wgan/wasserstein", "wgan/gp", "wgan/loss", "wgan/d_real",
                "wgan/d_fake"):
        assert all(key in r for r in train), key
    assert [r["wgan/weight"] for r in train] == [0.0] * 5 + [10.0]     # n_critic 5, warm-up 2, w 10
    assert Path(result["paths"]["samples"]).stat().st_size > 0

    assert_resume_exact(_digits_cfg, ref_dir, run_dir, kill_training_at)


def test_a_batch_norm_critic_is_rejected():
    with pytest.raises(ConfigError, match="must not use batch norm"):
        _reject_batch_norm(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))
    with pytest.raises(ConfigError, match="must not use batch norm"):
        WGANCritic(WGANParams(critic={"name": "mlp"}), nn.Sequential(nn.Flatten(), nn.BatchNorm1d(4)))


def test_critic_defaults_to_no_spectral_norm():
    assert WGANParams().critic == {"name": "resnet", "spectral_norm": False}
    assert WGANParams(critic={"name": "mlp", "spectral_norm": True}).critic["spectral_norm"] is True


@pytest.mark.parametrize("params, message", [
    ({"weight": -1.0}, "model.calibrators.0: weight: must be >= 0"),
    ({"warmup": -1}, "model.calibrators.0: warmup: must be >= 0"),
    ({"n_critic": 0}, "model.calibrators.0: n_critic: must be >= 1"),
    ({"gp_weight": -1.0}, "model.calibrators.0: gp_weight: must be >= 0"),
    ({"lr": 0.0}, "model.calibrators.0: lr: must be > 0"),
    ({"betas": [0.0, 1.0]}, "model.calibrators.0: betas"),
    ({"critic": {"name": "resnet", "blocks": 0}}, "model.calibrators.0: critic: blocks: must be in"),
    ({"critic": {"name": "nope"}}, "unknown data energy 'nope'"),
    ({"n_crit": 3}, "model.calibrators.0.n_crit: unknown key"),
])
def test_bad_params_are_config_errors(tmp_path, params, message):
    with pytest.raises(ConfigError, match=message):
        tiny_vae_cfg(tmp_path, [{"name": "wgan", **params}])
