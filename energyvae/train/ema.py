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
        """One ``torch._foreach_lerp_`` over all parameters and one ``_foreach_copy_`` of the
        buffers (the per-tensor loop cost 8 % of an MLP VAE step)."""
        decay = min(self.decay, (1.0 + step) / (10.0 + step))
        ema_p, src_p = list(self.model.parameters()), [p.detach() for p in model.parameters()]
        if ema_p:
            torch._foreach_lerp_(ema_p, src_p, 1.0 - decay)
        ema_b, src_b = list(self.model.buffers()), list(model.buffers())
        if ema_b:
            torch._foreach_copy_(ema_b, src_b)

    def state_dict(self):
        return self.model.state_dict()

    def load_state_dict(self, sd):
        self.model.load_state_dict(sd)
