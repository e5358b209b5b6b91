"""Measurements of a trained model object (no run folder): samples and their wall time,
reconstructions of a split, the prior sampler's convergence diagnostics, and the wall time of
one training step (on a copy, through :class:`~energyvae.train.Trainer`)."""
from __future__ import annotations

import copy
import dataclasses
import statistics
import tempfile
import time

import torch

from ..train import Trainer


def _batched(fn, n: int, batch: int):
    return torch.cat([fn(min(batch, n - s)) for s in range(0, n, batch)])


@torch.no_grad()
def generate(model, n: int, batch: int = 500) -> tuple[torch.Tensor, float]:
    """n samples in model space and the wall time per sample (seconds)."""
    t = time.perf_counter()
    x = _batched(model.sample, n, batch)
    return x, (time.perf_counter() - t) / n


@torch.no_grad()
def reconstruct(model, data, split: str, n: int, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    dev = next(model.parameters()).device
    raw = getattr(data, split).x[:n]
    xs, recs = [], []
    for s in range(0, len(raw), batch):
        x = data.preprocess(raw[s:s + batch]).to(dev)
        xs.append(x)
        recs.append(model.reconstruct(x))
    return torch.cat(xs), torch.cat(recs)


@torch.no_grad()
def prior_sampler_diagnostics(model, n: int = 1000, seed: int = 0) -> dict | None:
    """The convergence diagnostic of the prior's MCMC sampler on ``n`` chains (the sampler's own
    start), with the sampler's name and settings; None for a prior without one."""
    if not model.has_encoder:
        return None
    prior = model.prior
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        _, tr = prior.sample_traced(n)
        if tr is None:
            return None
        own = prior.generates_without_sampler
    d = tr.diagnostics()
    d["sampler"] = type(prior.sampler).__name__
    d["generates_without_it"] = own
    return d


def describe_diagnostics(d: dict) -> str:
    """One line: sampler, steps, R-hat, drift, acceptance, and whether the chains mixed."""
    acc = f", acceptance {d['acceptance']:.2f}" if d.get("acceptance") is not None else ""
    verdict = "mixed" if d["mixed"] else "NOT mixed (more steps, or another sampler)"
    line = (f"sampler {d['sampler']}, {d['steps']} steps x {d['chains']} chains: split R-hat "
            f"{d['rhat_max']:.3f}, drift {d['drift_max']:.1f} sd{acc}: {verdict}")
    if d.get("generates_without_it"):
        line += " (samples come from the training scheme's own generator, not from this sampler)"
    return line


def time_train_steps(cfg, model, data, steps: int = 20, warmup: int = 3) -> float:
    """Median wall time of one training step (all of the model's updates), measured on a copy
    of the model with fresh optimizers in a scratch folder; the run itself is untouched."""
    with tempfile.TemporaryDirectory() as tmp, torch.random.fork_rng():
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, dir=tmp))
        trainer = Trainer(cfg, copy.deepcopy(model).train(), data)
        times = []
        for i in range(warmup + steps):
            x = trainer.batch(i)
            t = time.perf_counter()
            trainer.train_step(x)
            trainer.step += 1
            times.append(time.perf_counter() - t)
    return statistics.median(times[warmup:])
