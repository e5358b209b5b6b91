"""``energyvae train``: train (or resume) the run of a config, then write its end-of-run
artifacts: test metrics, the IW bound, samples, reconstructions and loss curves."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..atomic import atomic_write_text
from ..config import Config
from ..evaluation.likelihood import test_log_likelihood
from ..runs import prepare
from ..train import Trainer, evaluate_split
from ..train.distributed import init_distributed, shutdown
from ..train.logger import read_metrics
from ..viz import plot_loss_curves
from .sample import save_reconstructions, save_samples


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


@torch.no_grad()
def finalize(cfg: Config, model, data, summary: dict) -> dict:
    """Test metrics, IW bound (or the exact test NLL of an exact-density model), samples,
    reconstructions and loss curves of a trained run."""
    run_dir, ec = Path(cfg.run.dir), cfg.eval
    model.eval()
    dev = next(model.parameters()).device
    paths = {}
    with torch.random.fork_rng():
        torch.manual_seed(cfg.train.seed)
        test = evaluate_split(model, data.test, data.preprocess, dev, seed=cfg.train.seed)
        metrics = {"test": test, "n_test": len(data.test),
                   "units": model.metric_units}
        if ec.iw_samples > 0 or model.exact_likelihood:
            ll = test_log_likelihood(model, data, k=ec.iw_samples, max_examples=ec.iw_max_examples,
                                     seed=cfg.train.seed)
            if "nll" in ll:
                ll.pop("per_image_ll", None)            # per-image values: energyvae evaluate's file
                metrics["exact" if ll.get("exact") else "iw"] = ll
        t = time.perf_counter()
        paths["samples"] = save_samples(run_dir / "samples.png", model, data, ec.n_samples)
        metrics["seconds_to_sample"] = time.perf_counter() - t
        # every model reconstructs (a data-space EBM: its Langevin from the data, a diagnostic)
        paths["reconstructions"] = save_reconstructions(run_dir / "reconstructions.png", model, data,
                                                         ec.n_reconstructions)
    paths["loss_curves"] = plot_loss_curves(read_metrics(run_dir), run_dir / "loss_curves.png")
    metrics["train"] = summary
    metrics["data"] = data.info
    metrics["parameters"] = sum(p.numel() for p in model.parameters())
    paths["metrics"] = run_dir / "metrics.json"
    atomic_write_text(paths["metrics"], json.dumps(metrics, indent=2, default=str))
    return {"metrics": metrics, "paths": {k: str(v) for k, v in paths.items()}}
