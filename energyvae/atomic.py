"""Atomic file writes: every file a run or a command publishes (config, metrics, figures,
checkpoint side-cars, evaluation outputs) goes through a temporary file in the same folder and
``os.replace``, so a reader, or a ``--resume`` after a kill -9 at any instant, sees the old file
or the whole new one, never a partial one. A failed write removes its temporary file."""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable


def _new_file_mode() -> int:
    """What open() gives a new file now: 0o666 minus the current umask (0644 under 022), read
    from /proc where it exists (no umask round-trip that other threads could see)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | Path, write: Callable[[str], object], fsync: bool = False) -> Path:
    """Call ``write(tmp_path)`` and rename the result over ``path``; ``fsync`` flushes the
    bytes to disk before the rename (checkpoints: a power cut then leaves the old file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:       # mkstemp would make the file 0600; O_EXCL with 0666 lets the umask decide
        tmp = str(path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            break
        except FileExistsError:
            continue
    try:
        write(tmp)
        try:          # writers that create their own file (safetensors: 0600) get the usual mode
            os.chmod(tmp, _new_file_mode())
        except OSError:
            pass      # a file system without modes (some FUSE mounts): keep what it gave
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
