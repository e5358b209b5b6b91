"""Exponential moving average of model weights (used for evaluation and sampling)."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """theta_ema <- d_t * theta_ema + (1 - d_t) * theta after optimisation step t (0-based), with
    the warm-up d_t = min(decay, (1 + t) / (10 + t)) (as in TensorFlow's ExponentialMovingAverage
    with num_updates): without it the average keeps decay^t of the initial weights (37 % after
    1000 steps at decay 0.999), and short runs would be evaluated half untrained.

    Buffers (e.g. running scales) are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1.0 + step) / (10.0 + step))
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1.0 - decay)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)

    def state_dict(self):
        return self.model.state_dict()

    def load_state_dict(self, sd):
        self.model.load_state_dict(sd)
