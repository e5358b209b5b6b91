"""User-facing errors. The CLI prints their message on one line and exits with status 2."""


class EnergyVAEError(Exception):
    """Base class of every error caused by the user's input rather than by a bug."""


class ConfigError(EnergyVAEError):
    """An unknown key, a wrong type or an out-of-range value in a config."""


class DataError(EnergyVAEError):
    """A missing, truncated or malformed data file, or data of the wrong shape."""


class CheckpointError(EnergyVAEError):
    """A missing, corrupt or incompatible checkpoint."""


class DivergenceError(EnergyVAEError):
    """Training produced a non-finite loss or parameter; no checkpoint was written for it."""
