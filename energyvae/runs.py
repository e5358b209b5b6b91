"""A run folder: build the data and model of a config, and load a finished run back (for
``energyvae sample`` / ``reconstruct`` / ``evaluate`` / ``restore``). Training a run and writing
its artifacts is :mod:`energyvae.commands.train`; this module is what the commands share and no
lower layer imports it (a model that needs another run, ``data_ebm``'s ``init_run``, is handed
:func:`load_run` through :class:`~energyvae.models.base.ModelContext`).

Layout of ``run.dir``::

    config.yaml            the validated config (all defaults filled in)
    data.json              the data's name, kind, shape and info: sample / evaluate without the data
    metrics.jsonl          train / val records;  tb/  TensorBoard logs
    checkpoints/{last,best}.safetensors (+ .json)
    samples.png  reconstructions.png  loss_curves.png  metrics.json
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from .config import Config, load_config
from .data import data_from_spec, load_data
from .errors import CheckpointError, ConfigError, DataError
from .models import build_model
from .train import BEST, LAST, load_checkpoint
from ._deprecation import warn_moved


def prepare(cfg: Config, data=None):
    """Load the data (unless given) and build the (untrained) model of a config."""
    data = load_data(cfg.data) if data is None else data
    torch.manual_seed(cfg.train.seed)          # the initial weights depend on the seed only
    try:
        model = build_model(cfg.model, data.shape, data.kind, data.preprocess.value_range,
                            load_run=load_run)
    except MemoryError:
        raise ConfigError("model: its parameters do not fit in memory (check the sizes in the "
                          "model section)") from None
    except RuntimeError as e:
        if "can't allocate memory" not in str(e) and "out of memory" not in str(e):
            raise
        raise ConfigError(f"model: its parameters do not fit in memory (check the sizes in the "
                          f"model section): {str(e).splitlines()[-1][:160]}") from None
    return data, model


DATA_SPEC = "data.json"


def load_run_data(cfg: Config, run_dir: Path, need_data: bool = True, spec_only: bool = False):
    """The run's data. ``spec_only``: only what its ``data.json`` describes (shape, kind,
    preprocessing; empty splits), nothing loaded or split: what sampling, restoring or decoding
    needs. Otherwise the data is loaded; when that fails (a run copied to another machine) and
    ``need_data`` is False, the ``data.json`` bundle is used, with a warning saying so."""
    spec_path = run_dir / DATA_SPEC
    if spec_only and spec_path.is_file():
        data = _data_from_file(cfg, spec_path, "")
        data.missing_reason = "not loaded: this command reads only the run's data.json"
        return data
    try:
        return load_data(cfg.data)
    except DataError as e:
        if need_data or not spec_path.is_file():
            raise
        data = _data_from_file(cfg, spec_path, f" ({e})")
        data.missing_reason = str(e)
        warnings.warn(f"the run's data is not available ({e}); working without it from "
                      f"{spec_path}", stacklevel=3)
        return data


def _data_from_file(cfg: Config, spec_path: Path, why: str):
    try:
        spec = json.loads(spec_path.read_text())
    except (ValueError, UnicodeDecodeError, OSError) as err:
        raise DataError(f"{spec_path}: unreadable{why or f' ({err})'}") from None
    return data_from_spec(cfg.data, spec)


def load_run(run_dir: str | Path, checkpoint: str = "best", ema: bool = True, need_data: bool = True,
             spec_only: bool = False):
    """(cfg, data, model) of a trained run; the model in eval mode on CPU. With
    ``need_data=False`` a run whose training data is gone (copied to another machine) still
    loads, from its ``data.json``: ``data.available`` is then False and its splits are empty
    (enough to sample and decode). ``spec_only=True`` never loads the data: the bundle comes
    from ``data.json`` (``energyvae sample`` and ``restore``; a run older than ``data.json``
    falls back to loading it)."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise CheckpointError(f"{run_dir}: not a run folder (no config.yaml)")
    cfg = load_config(cfg_path)
    cfg.run.dir = str(run_dir)
    data, model = prepare(cfg, load_run_data(cfg, run_dir, need_data, spec_only))
    name = {"best": BEST, "last": LAST}[checkpoint]
    path = run_dir / "checkpoints" / name
    if checkpoint == "best" and not path.exists():
        path = run_dir / "checkpoints" / LAST
    state = load_checkpoint(path)
    weights = state["ema"] if ema and state.get("ema") is not None else state["model"]
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: does not match the run's model ({str(e).splitlines()[0][:200]})") from None
    return cfg, data, model.eval()


_MOVED = {"train_run": "energyvae.commands.train", "finalize": "energyvae.commands.train",
          "save_samples": "energyvae.commands.sample", "save_reconstructions": "energyvae.commands.sample"}


def __getattr__(name: str):
    """Deprecated aliases of names that moved to :mod:`energyvae.commands` (removed in 0.2)."""
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    warn_moved(f"energyvae.runs.{name}", f"{_MOVED[name]}.{name}")
    return getattr(importlib.import_module(_MOVED[name]), name)
