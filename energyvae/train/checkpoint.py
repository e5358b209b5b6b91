"""Checkpoints as one safetensors file whose metadata carries the JSON part.

Tensors (model, EMA, optimizer state, RNG states) go in the safetensors body; everything
else (step, optimizer hyper-parameters, config, scalars) is JSON in the file's metadata under
"energyvae", so one atomic rename publishes a consistent checkpoint. A human-readable copy of
the JSON is written beside it (``NAME.json``). Writes go to a temp file in the same folder,
are fsync'ed and renamed over the old file. Loading never unpickles anything.

Integrity: the metadata also holds a SHA-256 digest of every tensor's bytes and of the JSON
part (``energyvae_digest``); loading recomputes them and refuses a file whose bytes changed
(a flipped bit in a weight would otherwise be sampled from without a word), and refuses
non-finite floating-point tensors. Files written before digests existed load unchecked.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..atomic import atomic_write, atomic_write_text
from ..errors import CheckpointError

META_KEY = "energyvae"
DIGEST_KEY = "energyvae_digest"


def _tensor_digest(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and raw bytes."""
    h = hashlib.sha256(f"{t.dtype}:{tuple(t.shape)}:".encode())
    if t.numel():
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _digests(tensors: dict, meta: str) -> str:
    return json.dumps({"meta": hashlib.sha256(meta.encode()).hexdigest(),
                       "tensors": {k: _tensor_digest(v) for k, v in sorted(tensors.items())}})


def _flatten_state(prefix: str, obj: Any, tensors: dict) -> Any:
    """Move every tensor of a nested dict/list into ``tensors``; return the JSON skeleton."""
    if isinstance(obj, torch.Tensor):
        name = prefix
        while name in tensors:                 # a name another entry already took: keep both
            name += "~"
        tensors[name] = obj.detach().cpu().contiguous()
        return {"__tensor__": name}
    if isinstance(obj, dict):
        items = []
        for i, (k, v) in enumerate(obj.items()):
            # tensor keys name their parameter (s.model.encoder.net.0.weight); the index only
            # where a name is not a string or is taken
            name = f"{prefix}.{k}" if isinstance(k, str) and f"{prefix}.{k}" not in tensors else f"{prefix}.{i}"
            items.append([_flatten_state(f"{prefix}.k{i}", k, tensors), _flatten_state(name, v, tensors)])
        return {"__dict__": items}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_flatten_state(f"{prefix}.{i}", v, tensors) for i, v in enumerate(obj)],
                "tuple": isinstance(obj, tuple)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot checkpoint a {type(obj).__name__} at {prefix}")


def _unflatten_state(skel: Any, tensors: dict) -> Any:
    if isinstance(skel, dict):
        if "__tensor__" in skel:
            return tensors[skel["__tensor__"]]
        if "__dict__" in skel:
            return {_unflatten_state(k, tensors): _unflatten_state(v, tensors) for k, v in skel["__dict__"]}
        if "__list__" in skel:
            items = [_unflatten_state(v, tensors) for v in skel["__list__"]]
            return tuple(items) if skel.get("tuple") else items
    return skel


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Atomically write ``state`` (a nested dict of tensors and JSON values) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten_state("s", state, tensors)
    meta = json.dumps(skeleton)
    # safetensors refuses tensors sharing storage; contiguous clones are cheap at our sizes
    tensors = {k: v.clone() for k, v in tensors.items()}
    metadata = {META_KEY: meta, DIGEST_KEY: _digests(tensors, meta)}

    def write(tmp: str) -> None:
        try:
            save_file(tensors, tmp, metadata=metadata)
        except OSError:
            raise
        except Exception as e:       # safetensors reports write failures (disk full, file size limit) as its own error
            raise CheckpointError(f"{path}: could not write the checkpoint ({e})") from None

    atomic_write(path, write, fsync=True)
    readable = {k: v for k, v in state.items() if k in ("step", "config", "best", "info")}
    atomic_write_text(path.with_suffix(".json"), json.dumps(readable, indent=2, default=str))


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
        skeleton = json.loads(meta[META_KEY])
        digests = json.loads(meta[DIGEST_KEY]) if DIGEST_KEY in meta else None
    except Exception as e:  # any failure to parse a user's file is the same error for them
        raise CheckpointError(f"{path}: not a readable energyvae checkpoint ({type(e).__name__})") from None
    if digests is not None:
        try:
            ok = digests == json.loads(_digests(tensors, meta[META_KEY]))
        except Exception:
            ok = False
        if not ok:
            raise CheckpointError(f"{path}: checksum mismatch: the file was changed or corrupted after "
                                  f"it was written")
    for k, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(f"{path}: holds non-finite values (NaN or inf) in {k}; refusing to use it")
    return _unflatten_state(skeleton, tensors)
