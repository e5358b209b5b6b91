"""Atomic file writes: every file a run or a command publishes (config, metrics, figures,
checkpoint side-cars, evaluation outputs) goes through a temporary file in the same folder and
``os.replace``, so a reader, or a ``--resume`` after a kill -9 at any instant, sees the old file
or the whole new one, never a partial one. A failed write removes its temporary file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()        # what open() would give a new file (0644 under umask 022)


def atomic_write(path: str | Path, write: Callable[[str], object], fsync: bool = False) -> Path:
    """Call ``write(tmp_path)`` and rename the result over ``path``; ``fsync`` flushes the
    bytes to disk before the rename (checkpoints: a power cut then leaves the old file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _MODE)          # mkstemp makes 0600: the group may read checkpoints and figures
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: Path(p).write_text(text, encoding="utf-8"))


def remove_stale_temporaries(folder: str | Path) -> int:
    """Delete the temporary files a killed writer left in ``folder`` (``.NAME.*.tmp``); the
    number removed."""
    n = 0
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.glob(".*.tmp"):
            if p.is_file():
                p.unlink(missing_ok=True)
                n += 1
    return n
