"""Deprecated alias: AIS moved to :mod:`energyvae.mcmc.ais`, the GRBM closed forms to
:mod:`energyvae.mcmc.grbm`."""
from .._deprecation import warn_moved
from ..mcmc.ais import *  # noqa: F401,F403
from ..mcmc.ais import AISResult, ais_log_partition, annealing_schedule  # noqa: F401
from ..mcmc.grbm import grbm_energy, grbm_exact_log_partition  # noqa: F401

warn_moved(__name__, "energyvae.mcmc.ais / energyvae.mcmc.grbm")
