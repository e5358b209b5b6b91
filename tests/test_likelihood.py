"""Test log-likelihoods: an unnormalised prior goes through AIS and must agree with the
same prior evaluated as a normalised density."""
import math

import torch

from energyvae.config import build_config
from energyvae.evaluation.likelihood import test_log_likelihood as log_likelihood
from energyvae.models.priors import StandardNormal
from energyvae.runs import prepare


class UnnormalisedNormal(StandardNormal):
    """exp(-1/2 ||z||^2) without its normaliser: ln Z = m/2 ln 2 pi."""
    normalized = False

    def log_prob(self, z):
        return -0.5 * z.pow(2).sum(-1)


def test_ais_nll_matches_normalised_prior():
    cfg = build_config({"data": {"name": "digits", "binarize": True},
                        "model": {"latent_dim": 4, "encoder": {"hidden": [32]}, "decoder": {"hidden": [32]}}})
    data, model = prepare(cfg)
    model.eval()
    ref = log_likelihood(model, data, k=20, max_examples=50, seed=3)
    model.prior = UnnormalisedNormal(4)
    est = log_likelihood(model, data, k=20, max_examples=50, seed=3, ais_chains=128, ais_temps=200)
    true_log_z = 2 * math.log(2 * math.pi)
    assert abs(est["ais"]["log_z"] - true_log_z) < 3 * est["ais"]["stderr"] + 1e-3
    assert abs(est["nll"] - ref["nll"]) < 3 * est["ais"]["stderr"] + 1e-3
    assert "bits_per_dim" in est and est["bits_per_dim"] > 0


def test_non_likelihood_objectives_report_why():
    cfg = build_config({"data": {"name": "digits"},
                        "model": {"latent_dim": 2, "posterior": {"name": "delta"},
                                  "encoder": {"hidden": [8]}, "decoder": {"hidden": [8]}}})
    data, model = prepare(cfg)
    assert "deterministic posterior" in log_likelihood(model, data, k=2, max_examples=4)["note"]
