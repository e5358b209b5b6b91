"""Optimizers and learning-rate schedules chosen in the ``train:`` config section.

``train.optimizer``: ``adam`` (Kingma & Ba 2015; ``weight_decay`` is L2 added to the gradient)
or ``adamw`` (Loshchilov & Hutter 2019; decoupled weight decay). Both use the fused kernel
where torch has one for the parameters' device and dtype, else the foreach implementation.

``train.lr_schedule`` multiplies every update's learning rate (the VAE's and those of parts
with their own optimizer) by a factor of the step t alone, so a resumed run follows exactly
the schedule of an uninterrupted one (no scheduler state to checkpoint):

- ``constant``: 1;
- ``cosine``:  r + (1 - r) (1 + cos(pi u)) / 2, with u = (t - W) / (T - W) the share of the
  post-warm-up steps done (Loshchilov & Hutter 2017, SGDR without restarts);
- ``linear``:  r + (1 - r) (1 - u);

with r = ``train.min_lr_ratio`` and, for t < W = ``train.warmup_steps``, the linear warm-up
(t + 1) / W (Goyal et al. 2017) in place of the above.
"""
from __future__ import annotations

import math

import torch

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
SCHEDULES = ("constant", "cosine", "linear")


def make_optimizer(name: str, params, lr: float, betas, weight_decay: float) -> torch.optim.Optimizer:
    cls = OPTIMIZERS[name]
    betas = tuple(float(b) for b in betas)
    try:
        return cls(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return cls(params, lr=lr, betas=betas, weight_decay=weight_decay, foreach=True)


def lr_factor(step: int, total: int, schedule: str = "constant", warmup: int = 0,
              min_ratio: float = 0.0) -> float:
    """The learning-rate multiplier of step ``step`` (0-based) of ``total`` (module docstring)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    u = min(1.0, (step - warmup) / max(1, total - warmup))
    shape = 0.5 * (1.0 + math.cos(math.pi * u)) if schedule == "cosine" else 1.0 - u
    return min_ratio + (1.0 - min_ratio) * shape
