"""Deprecated alias: the ``restore`` command moved to :mod:`energyvae.commands.restore`
(``save_compare`` to :mod:`energyvae.viz`)."""


def __getattr__(name: str):
    """The old names, with a DeprecationWarning (removed in 0.2)."""
    import importlib

    from .._deprecation import warn_moved
    where = "energyvae.viz" if name == "save_compare" else "energyvae.commands.restore"
    value = getattr(importlib.import_module(where), name)
    warn_moved(f"energyvae.restoration.files.{name}", f"{where}.{name}")
    return value
