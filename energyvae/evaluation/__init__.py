"""Evaluation: feature-based sample metrics (FID, KID, IS, precision/recall), likelihoods
(importance-weighted NLL, bits/dim, AIS for unnormalised energies), restoration metrics and
the ``energyvae evaluate`` / ``energyvae report`` back ends."""
