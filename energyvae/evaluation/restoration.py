"""Deprecated alias: the restoration metrics moved to :mod:`energyvae.imaging.quality`."""
from .._deprecation import warn_moved
from ..imaging.quality import *  # noqa: F401,F403
from ..imaging.quality import consistency, psnr, restoration_metrics, ssim, ssim_window  # noqa: F401

warn_moved(__name__, "energyvae.imaging.quality")
