"""NCP-VAE (models/priors/schemes/ncp.py) against closed forms: with the classifier that is
exactly optimal for two known Gaussians, the reweighted prior's log-density is the aggregate
Gaussian's up to a constant, SIR samples have its moments and the classifier's ln Z estimate is
0; a trained classifier recovers the true log-ratio; the scheme trains and resumes exactly."""
import math

import pytest
import torch
from torch import nn

from energyvae.errors import ConfigError
from energyvae.models.base import PRIORS
from energyvae.models.priors.schemes.ncp import log_ratio

M, MU, S = 2, torch.tensor([0.8, -0.5]), 0.7          # aggregate posterior q = N(MU, S^2 I)


def _log_q(z):
    return (-0.5 * ((z - MU) / S).pow(2) - math.log(S) - 0.5 * math.log(2 * math.pi)).sum(-1)


def _log_p(z):
    return (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)


class OptimalTilt(nn.Module):
    """f(z) = -(ln q(z) - ln p(z)): the logit of the Bayes-optimal classifier, negated."""

    def forward(self, z):
        return (-(_log_q(z) - _log_p(z))).unsqueeze(-1)


def _prior(**scheme):
    prior = PRIORS.build({"name": "ebm", "energy": {"name": "tilted", "hidden": [32, 32]},
                          "scheme": {"name": "ncp", **scheme}}, "model.prior", latent_dim=M)
    return prior


def test_optimal_classifier_gives_the_aggregate_density_sir_moments_and_log_z():
    prior = _prior(sir_proposals=400)
    prior.energy_net.f = OptimalTilt()
    z = torch.randn(1000, M) * 2
    diff = prior.log_prob(z) - _log_q(z)
    assert torch.allclose(diff, diff[0].expand_as(diff), atol=1e-5)         # equal up to a constant
    assert diff[0].item() == pytest.approx(M / 2 * math.log(2 * math.pi), abs=1e-5)
    torch.manual_seed(0)
    x = prior.sample(20000)
    # SIR with 400 proposals: its bias is O(1 / proposals) here, far below the tolerances
    assert torch.allclose(x.mean(0), MU, atol=0.03), x.mean(0)
    assert torch.allclose(x.std(0), torch.full((M,), S), atol=0.03), x.std(0)
    log_z, se = prior.scheme.log_partition(prior, n=200_000)
    assert abs(log_z) < 4 * se + 1e-3 and se < 0.01                          # Z = E_p[q / p] = 1


def test_trained_classifier_recovers_the_log_ratio():
    torch.manual_seed(0)
    prior = _prior(lr=3e-3)
    opt = torch.optim.Adam(prior.energy_net.parameters(), lr=3e-3)
    for _ in range(1500):
        state = {"z_posterior": MU + S * torch.randn(256, M)}
        loss, logs = prior.update_loss("classifier", None, state)
        opt.zero_grad()
        loss.backward()
        opt.step()
    z = MU + 1.2 * torch.randn(2000, M)                # where both densities have mass
    learned, true = log_ratio(prior, z).detach(), _log_q(z) - _log_p(z)
    corr = torch.corrcoef(torch.stack([learned, true]))[0, 1]
    assert corr > 0.95, corr                            # measured 0.977 (seed 0)
    assert (learned - true).abs().median() < 0.25
    assert float(logs["accuracy"]) > 0.6


def test_ncp_needs_the_tilted_energy_and_keeps_the_base_kl():
    with pytest.raises(ConfigError, match="tilted"):
        PRIORS.build({"name": "ebm", "energy": {"name": "mlp"}, "scheme": {"name": "ncp"}}, "model.prior",
                     latent_dim=M)
    from energyvae.models.posterior import DiagGaussian
    q = DiagGaussian(torch.randn(5, M), torch.rand(5, M) + 0.5)
    assert torch.allclose(_prior().kl(q), q.kl_standard_normal())


@pytest.mark.parametrize("reconstruction", ["bernoulli", "energy_score", "fast_energy_score"])
def test_ncp_vae_two_stage_trains_and_resumes_exactly(tmp_path, kill_training_at, reconstruction):
    from energyvae.config import build_config
    from energyvae.train import LAST, load_checkpoint
    from helpers import run

    def cfg(d, steps=20):
        return build_config({
            "run": {"dir": str(d)}, "data": {"name": "digits"},
            "model": {"latent_dim": 3, "encoder": {"name": "mlp", "hidden": [16]},
                      "decoder": {"name": "mlp", "hidden": [16]}, "reconstruction": {"name": reconstruction},
                      "prior": {"name": "ebm", "energy": {"name": "tilted", "hidden": [8]},
                                "scheme": {"name": "ncp", "two_stage_at": 10}}},
            "train": {"steps": steps, "batch_size": 32, "eval_every": 5, "checkpoint_every": 5, "log_every": 5,
                      "progress": False, "ema": 0.9}})
    ref = run(cfg(tmp_path / "ref"))
    c = cfg(tmp_path / "k")
    kill_training_at(13, lambda: run(c))            # inside stage 2
    resumed = run(c, resume=True)
    a = load_checkpoint(tmp_path / "ref" / "checkpoints" / LAST)["model"]
    b = load_checkpoint(tmp_path / "k" / "checkpoints" / LAST)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a) and resumed.step == 20
    # after the VAE update stops its validation loss is frozen: best follows the latest classifier
    assert load_checkpoint(tmp_path / "ref" / "checkpoints" / "best.safetensors")["step"] == 20
    # stage 2 (steps 10-19) moves the classifier only: the VAE's weights are those after stage 1
    stage1 = run(cfg(tmp_path / "s1", steps=10)).model.state_dict()
    for k, v in ref.model.state_dict().items():
        moved = not torch.equal(v, stage1[k])
        assert moved == k.startswith("prior.energy_net"), k
