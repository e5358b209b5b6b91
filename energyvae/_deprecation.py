"""Aliases kept for one release where a module or a name moved (the layer levelling of 0.1.x).

A shim module at an old path calls :func:`warn_moved` and re-exports the new module's names; a
name that moved *up* the layer order is served by a module-level ``__getattr__``, which the
import-order test (tests/project/test_layers.py) exempts because it runs only when an old name is used."""
from __future__ import annotations

import warnings


def warn_moved(old: str, new: str, stacklevel: int = 3) -> None:
    warnings.warn(f"{old} moved to {new}; the old path is removed in energyvae 0.2",
                  DeprecationWarning, stacklevel=stacklevel)
