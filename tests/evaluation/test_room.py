"""The room meter (energyvae/evaluation/room.py) on synthetic latents of known KL to N(0, I),
and its VAE plumbing (posterior draws, the paired IW NLL with a flow as the prior).

Targets and tolerances (16 dims, 20k training / 5k validation / 10k test points, MAF 4 x
[128, 128], lr 3e-3, patience 5; seeds fixed; measured on one CPU thread, each fit 4-18 s):

- N(0, I): the held-out room must be ~0, |room| < 0.05 nats (measured: 0.000, the fit never
  beat its N(0, I) start on validation), and no epoch's validation room may exceed +0.05
  (no spurious room from overfitting).
- the whitened mixture (4 of 16 dims a 10-cluster mixture, within-cluster std 0.25, whitened;
  the other 12 N(0, 1)): KL = 2.742 +- 0.004 nats (Monte Carlo, 200k points, exact density).
  The MAF's room is a model fit scored on held-out points, so it is a lower bound on the KL in
  expectation: asserted in [0.5 KL, KL + 0.1] (measured: 2.06 +- 0.02, 75 %; the exact density
  reads 2.72 on the same test points).
- a diagonal Gaussian N(mu, diag s^2), which an affine MAF contains: KL = 0.646 in closed
  form; asserted |room - KL| < 0.1 (measured 0.61).
"""
import math

import pytest
import torch

from energyvae.evaluation.room import (FlowLogProb, WhitenedMixture, fit_maf, log_standard_normal,
                                       ncp_classifier, paired_prior_nll, posterior_samples, room)
from energyvae.models.priors.flow import make_flow

DIM = 16
FIT = {"hidden": (128, 128), "lr": 3e-3, "patience": 5}


def splits(sample, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return sample(20000, g), sample(5000, g), sample(10000, g)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.mark.slow
def test_room_reads_zero_on_standard_normal():
    target = WhitenedMixture(DIM, within_std=None)
    assert target.kl() == (0.0, 0.0)
    z_train, z_val, z_test = splits(target.sample)
    flow, info = fit_maf(z_train, z_val, **FIT)
    r = room(flow, z_test)
    assert abs(r["mean"]) < 0.05, r
    assert max(info["val_room_per_epoch"]) < 0.05, info["val_room_per_epoch"]
    assert info["stopped"].startswith("patience")


@pytest.mark.slow
def test_room_recovers_most_of_the_mixture_kl():
    target = WhitenedMixture(DIM, mix_dims=4, clusters=10, within_std=0.25, seed=0)
    kl, kl_se = target.kl()
    assert abs(kl - 2.742) < 0.02 and kl_se < 0.01          # the target is the one documented above
    z_train, z_val, z_test = splits(target.sample)
    # whitened: a Gaussian fit would see N(0, I)
    assert torch.allclose(z_train.mean(0), torch.zeros(DIM), atol=0.05)
    assert torch.allclose(torch.cov(z_train.T), torch.eye(DIM), atol=0.05)
    flow, info = fit_maf(z_train, z_val, **FIT)
    r = room(flow, z_test)
    oracle = (target.log_prob(z_test) - log_standard_normal(z_test.double())).mean().item()
    assert 0.5 * kl <= r["mean"] <= kl + 0.1, (r, kl)
    assert r["mean"] <= oracle + 0.05          # no density beats the truth on the same points (up to noise)
    assert 0 < r["stderr"] < 0.05 and info["best_epoch"] > 0


@pytest.mark.slow
def test_room_recovers_an_affine_reachable_kl():
    s2, mu = torch.linspace(0.6, 1.6, DIM), torch.linspace(-0.3, 0.3, DIM)
    kl = 0.5 * (s2 + mu ** 2 - 1 - s2.log()).sum().item()

    def sample(n, gen):
        return mu + s2.sqrt() * torch.randn(n, DIM, generator=gen)
    z_train, z_val, z_test = splits(sample)
    flow, _ = fit_maf(z_train, z_val, **FIT)
    assert abs(room(flow, z_test)["mean"] - kl) < 0.1


def test_room_averages_draws_per_image_and_zero_for_the_start():
    flow = make_flow(DIM, 2, (8,))                    # starts as N(0, I) exactly
    z = torch.randn(3, 50, DIM)
    r = room(flow, z)
    assert r["n"] == 50 and abs(r["mean"]) < 1e-5
    assert torch.allclose(FlowLogProb(flow).log_prob(z), log_standard_normal(z), atol=1e-4)
    target = WhitenedMixture(DIM, mix_dims=4, within_std=0.25)
    r = room(target, z)                              # any object with log_prob
    assert r["n"] == 50 and math.isfinite(r["mean"])


def test_fit_maf_without_validation_set_holds_out_a_fraction():
    z = torch.randn(1000, 4)
    flow, info = fit_maf(z, max_epochs=2, hidden=(8,), val_fraction=0.2)
    assert info["n_val"] == 200 and info["n_train"] == 800 and info["epochs"] <= 2
    assert len(info["val_log_lik"]) == info["epochs"] + 1


@pytest.mark.slow
def test_ncp_classifier_accuracy():
    normal = WhitenedMixture(DIM, within_std=None)
    mixture = WhitenedMixture(DIM, mix_dims=4, clusters=10, within_std=0.25, seed=0)
    none = ncp_classifier(*splits(normal.sample), hidden=(128, 128))
    some = ncp_classifier(*splits(mixture.sample), hidden=(128, 128))
    assert abs(none["accuracy"] - 0.5) < 0.02 and abs(none["dv_room"]) < 0.05
    assert some["accuracy"] > 0.8 and 0.5 * 2.742 < some["dv_room"] < 2.742 + 0.2


def tiny_vae():
    from energyvae.config import build_config
    from energyvae.runs import prepare
    cfg = build_config({"data": {"name": "digits", "binarize": True},
                        "model": {"latent_dim": 4, "encoder": {"hidden": [32]}, "decoder": {"hidden": [32]}}})
    data, model = prepare(cfg)
    return data, model.eval()


def test_posterior_samples_are_seeded_and_leave_the_rng_alone():
    data, model = tiny_vae()
    state = torch.get_rng_state()
    a = posterior_samples(model, data, "train", n_images=30, per_image=2, seed=5, batch=7)
    assert torch.equal(torch.get_rng_state(), state)
    b = posterior_samples(model, data, "train", n_images=30, per_image=2, seed=5, batch=7)
    assert a.shape == (2, 30, 4) and torch.equal(a, b)
    assert not torch.equal(a[0], a[1])


def test_paired_prior_nll_is_paired():
    """The untrained MAF is N(0, I) exactly: with the same inputs and draws its IW NLL equals
    the model's own to float precision, so the paired difference and its stderr are ~0."""
    data, model = tiny_vae()
    res = paired_prior_nll(model, data, FlowLogProb(make_flow(4, 2, (8,))), k=10, max_examples=40,
                           batch_size=16, seed=2)
    assert res["examples"] == 40 and res["difference"]["n"] == 40
    assert abs(res["difference"]["mean"]) < 1e-4 and res["difference"]["stderr"] < 1e-4
    assert abs(res["nll_prior"] - res["nll_model_prior"]) < 1e-4
