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
    assert est["ais"]["log_z_qagg_bound"] < true_log_z + 0.05 and "nll_unreliable" not in est
    assert "bits_per_dim" in est and est["bits_per_dim"] > 0


class FarModeEnergy(UnnormalisedNormal):
    """exp(-1/2 ||z - 30||^2): all mass 30 units from the origin, where AIS from N(0, I) with a
    short schedule cannot follow; ln Z = m/2 ln 2 pi still."""

    def log_prob(self, z):
        return -0.5 * (z - 30.0).pow(2).sum(-1)


def test_aggregate_posterior_bound_flags_ais_that_missed_the_mass():
    """Posteriors near the far mode: the q_agg importance-sampling bound is a valid lower bound
    (below the true ln Z) yet above the failed AIS value, and the NLL is flagged."""
    from energyvae.evaluation.likelihood import log_z_aggregate_posterior_bound
    cfg = build_config({"data": {"name": "digits", "binarize": True},
                        "model": {"latent_dim": 4, "encoder": {"hidden": [32]}, "decoder": {"hidden": [32]}}})
    data, model = prepare(cfg)
    model.eval()
    with torch.no_grad():                       # move every posterior mean onto the far mode
        model.encoder.body[-1].bias[:4] += 30.0
    model.prior = FarModeEnergy(4)
    true_log_z = 2 * math.log(2 * math.pi)
    bound = log_z_aggregate_posterior_bound(model, data, n_data=200, seed=1)
    assert bound < true_log_z + 0.05
    est = log_likelihood(model, data, k=5, max_examples=20, seed=3, ais_chains=32, ais_temps=20)
    assert est["ais"]["log_z"] < bound - 1 and "missed" in est["nll_unreliable"]


def test_non_likelihood_objectives_report_why():
    cfg = build_config({"data": {"name": "digits"},
                        "model": {"latent_dim": 2, "posterior": {"name": "delta"},
                                  "encoder": {"hidden": [8]}, "decoder": {"hidden": [8]}}})
    data, model = prepare(cfg)
    assert "deterministic posterior" in log_likelihood(model, data, k=2, max_examples=4)["note"]
