"""A run folder: build data + model from a config, train, write the end-of-run artifacts, and
load a finished run back (for ``energyvae sample`` / ``reconstruct``).

Layout of ``run.dir``::

    config.yaml            the validated config (all defaults filled in)
    data.json              the data's name, kind, shape and info: sample / evaluate without the data
    metrics.jsonl          train / val records;  tb/  TensorBoard logs
    checkpoints/{last,best}.safetensors (+ .json)
    samples.png  reconstructions.png  loss_curves.png  metrics.json
"""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import torch

from .atomic import atomic_write_text
from .config import Config, load_config
from .data import data_from_spec, load_data
from .errors import CheckpointError, ConfigError, DataError
from .evaluation.likelihood import test_log_likelihood
from .models import build_model
from .train import BEST, LAST, Trainer, evaluate_split, load_checkpoint
from .train.distributed import init_distributed, shutdown
from .train.logger import read_metrics


def prepare(cfg: Config, data=None):
    """Load the data (unless given) and build the (untrained) model of a config."""
    data = load_data(cfg.data) if data is None else data
    torch.manual_seed(cfg.train.seed)          # the initial weights depend on the seed only
    try:
        model = build_model(cfg.model, data.shape, data.kind, data.preprocess.value_range)
    except MemoryError:
        raise ConfigError("model: its parameters do not fit in memory (check the sizes in the "
                          "model section)") from None
    except RuntimeError as e:
        if "can't allocate memory" not in str(e) and "out of memory" not in str(e):
            raise
        raise ConfigError(f"model: its parameters do not fit in memory (check the sizes in the "
                          f"model section): {str(e).splitlines()[-1][:160]}") from None
    return data, model


def train_run(cfg: Config, resume: bool = False, fallback: bool = False,
              announce=None) -> dict | None:
    """Train (or resume) the run of ``cfg``; on rank 0 also write the final artifacts.
    ``fallback``: see :class:`~energyvae.train.Trainer`. ``announce(line)`` (the CLI: print)
    receives a start line naming the run folder, data, model size, device and threads."""
    info = init_distributed(cfg.train.device)
    try:
        data, model = prepare(cfg)
        trainer = Trainer(cfg, model, data, resume=resume, info=info, fallback=fallback)
        if announce is not None and info.is_main:
            n = sum(p.numel() for p in model.parameters())
            where = f"from step {trainer.step}" if trainer.step else "from step 0"
            announce(f"training {cfg.run.dir} {where} of {trainer.total_steps}: {data.name} "
                     f"{tuple(data.shape)} ({len(data.train)} train examples), {type(model).__name__} "
                     f"with {n:,} parameters, on {trainer.device} with {trainer.threads} thread(s)"
                     + (f" x {info.world} processes" if info.world > 1 else ""))
        summary = trainer.fit()
        if not info.is_main:
            return None
        return finalize(cfg, trainer.eval_model(), data, summary)
    finally:
        shutdown(info)


def save_samples(path: Path, model, data, n: int, mcmc: int = 0) -> Path:
    """A grid of ``n`` samples (a 2-D scatter of at least 2000 for toy data); ``mcmc`` > 0 refines
    them by that many Langevin steps of the model's data-space energy (EC-VAE "w/ MCMC")."""
    from .viz import plot_points_2d, save_image_grid
    draw = (lambda k: model.sample(k, mcmc=mcmc)) if mcmc else model.sample
    if data.kind == "image":
        return save_image_grid(data.preprocess.to_unit(draw(n)).cpu(), path)
    n = max(n, 2000)
    reference = data.test.x[:n] if len(data.test) else None
    return plot_points_2d(draw(n).cpu(), path, reference=reference, title="samples")


def save_reconstructions(path: Path, model, data, n: int, split: str = "test") -> Path:
    from .viz import plot_points_2d, save_reconstruction_pairs
    dev = next(model.parameters()).device
    x = data.preprocess(getattr(data, split).x[:n]).to(dev)
    x_hat = model.reconstruct(x)
    if data.kind == "image":
        to_unit = data.preprocess.to_unit
        return save_reconstruction_pairs(to_unit(x).cpu(), to_unit(x_hat).cpu(), path)
    return plot_points_2d(x_hat.cpu(), path, reference=x.cpu(), title="reconstructions")


@torch.no_grad()
def finalize(cfg: Config, model, data, summary: dict) -> dict:
    """Test metrics, IW bound (or the exact test NLL of an exact-density model), samples,
    reconstructions and loss curves of a trained run."""
    from .viz import plot_loss_curves
    run_dir, ec = Path(cfg.run.dir), cfg.eval
    model.eval()
    dev = next(model.parameters()).device
    paths = {}
    with torch.random.fork_rng():
        torch.manual_seed(cfg.train.seed)
        test = evaluate_split(model, data.test, data.preprocess, dev, seed=cfg.train.seed)
        metrics = {"test": test, "n_test": len(data.test),
                   "units": getattr(model, "metric_units", "nats per example")}
        if ec.iw_samples > 0 or getattr(model, "exact_likelihood", False):
            ll = test_log_likelihood(model, data, k=ec.iw_samples, max_examples=ec.iw_max_examples,
                                     seed=cfg.train.seed)
            if "nll" in ll:
                ll.pop("per_image_ll", None)            # per-image values: energyvae evaluate's file
                metrics["exact" if ll.get("exact") else "iw"] = ll
        t = time.perf_counter()
        paths["samples"] = save_samples(run_dir / "samples.png", model, data, ec.n_samples)
        metrics["seconds_to_sample"] = time.perf_counter() - t
        if hasattr(model, "reconstruct"):               # a data-space EBM has no encoder
            paths["reconstructions"] = save_reconstructions(run_dir / "reconstructions.png", model, data,
                                                             ec.n_reconstructions)
    paths["loss_curves"] = plot_loss_curves(read_metrics(run_dir), run_dir / "loss_curves.png")
    metrics["train"] = summary
    metrics["data"] = data.info
    metrics["parameters"] = sum(p.numel() for p in model.parameters())
    paths["metrics"] = run_dir / "metrics.json"
    atomic_write_text(paths["metrics"], json.dumps(metrics, indent=2, default=str))
    return {"metrics": metrics, "paths": {k: str(v) for k, v in paths.items()}}


DATA_SPEC = "data.json"


def load_run_data(cfg: Config, run_dir: Path, need_data: bool = True):
    """The run's data; when it cannot be loaded (a run copied to another machine) and
    ``need_data`` is False, a data-free bundle from the run's ``data.json`` (empty splits, the
    shape, kind and preprocessing the model needs), with a warning saying so."""
    try:
        return load_data(cfg.data)
    except DataError as e:
        spec_path = run_dir / DATA_SPEC
        if need_data or not spec_path.is_file():
            raise
        try:
            spec = json.loads(spec_path.read_text())
        except (ValueError, UnicodeDecodeError):
            raise DataError(f"{spec_path}: unreadable ({e})") from None
        data = data_from_spec(cfg.data, spec)
        data.missing_reason = str(e)
        warnings.warn(f"the run's data is not available ({e}); working without it from "
                      f"{spec_path}", stacklevel=3)
        return data


def load_run(run_dir: str | Path, checkpoint: str = "best", ema: bool = True, need_data: bool = True):
    """(cfg, data, model) of a trained run; the model in eval mode on CPU. With
    ``need_data=False`` a run whose training data is gone (copied to another machine) still
    loads, from its ``data.json``: ``data.available`` is then False and its splits are empty
    (enough to sample and decode)."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise CheckpointError(f"{run_dir}: not a run folder (no config.yaml)")
    cfg = load_config(cfg_path)
    cfg.run.dir = str(run_dir)
    data, model = prepare(cfg, load_run_data(cfg, run_dir, need_data))
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
