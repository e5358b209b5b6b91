"""Deprecated alias: moved to :mod:`energyvae.mcmc.diagnostics`."""
from .._deprecation import warn_moved
from ..mcmc.diagnostics import *  # noqa: F401,F403
from ..mcmc.diagnostics import chain_diagnostics, drift_z, effective_sample_size, split_rhat  # noqa: F401

warn_moved(__name__, "energyvae.mcmc.diagnostics")
