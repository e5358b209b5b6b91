"""The chain runner's record: per-chain statistics after each step (energy, mean coordinate),
kept on the device while the chain runs and moved to the host once at the end, and their
diagnostics (split R-hat, ESS, drift: :mod:`.diagnostics`). Every sampler that traces
(``trace=True``) fills a :class:`TraceRecorder` step by step and returns its :class:`ChainTrace`."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .diagnostics import chain_diagnostics


@dataclass
class ChainTrace:
    """What one sampler run leaves for diagnosis: per-chain statistics after each step.

    ``energy`` / ``mean_coordinate``: [T, C] E(z) and the mean of z's coordinates of each chain
    after each of the T steps; ``warmup``: the leading steps that adapted the sampler (not
    stationary by design); ``acceptance``: mean Metropolis acceptance after warm-up (None for
    unadjusted samplers); ``step_size``: the step used after warm-up.
    """
    energy: torch.Tensor
    mean_coordinate: torch.Tensor
    warmup: int = 0
    acceptance: float | None = None
    step_size: float | None = None

    def diagnostics(self) -> dict:
        """Split R-hat / ESS of both statistics (:mod:`.diagnostics`), the acceptance
        rate, the step size and the energy trace's start and end means."""
        d = chain_diagnostics({"energy": self.energy, "mean_coordinate": self.mean_coordinate}, self.warmup)
        d.update(steps=self.energy.shape[0], chains=self.energy.shape[1], warmup=self.warmup,
                 acceptance=self.acceptance, step_size=self.step_size,
                 energy_first=float(self.energy[0].mean()), energy_last=float(self.energy[-1].mean()))
        return d

    def mean_energy(self) -> list[float]:
        """The mean energy over chains after each step."""
        return self.energy.mean(1).tolist()


class TraceRecorder:
    """Collects the statistics of ``ChainTrace`` step by step (does nothing when disabled)."""

    def __init__(self, enabled: bool):
        self.enabled, self.energy, self.coord = enabled, [], []

    def __call__(self, z: torch.Tensor, e: torch.Tensor | None = None, energy: nn.Module | None = None) -> None:
        if self.enabled:
            if e is None:
                with torch.no_grad():
                    e = energy(z)
            self.energy.append(e.detach())            # on the device: no host read per step
            self.coord.append(z.detach().double().mean(-1))

    def result(self, **kw) -> ChainTrace | None:
        if not self.enabled:
            return None
        return ChainTrace(torch.stack(self.energy).double().cpu(), torch.stack(self.coord).double().cpu(), **kw)

