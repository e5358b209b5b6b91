"""Batch normalisation whose training statistics are those of the global batch under DDP.

``batch_norm(channels, mode)`` returns

- ``mode="global"``: :class:`GlobalBatchNorm2d`. In one process it *is* ``nn.BatchNorm2d`` (the
  same forward, buffers and state-dict keys). In training mode with an initialised
  ``torch.distributed`` process group of more than one process, the per-channel mean and
  (biased) variance used to normalise, and those folded into the running statistics, are
  those of the global batch: two all-reduces (sum with the element count, then the sum of
  squared deviations: the two-pass, cancellation-free variance), each differentiable (the
  gradient of a sum over processes is the sum of the processes' gradients), so the forward,
  the gradients that DDP averages and the running statistics equal those of one process on the
  concatenated batch (to float rounding, with the equal shards the trainer gives;
  ``tests/nets/test_paper_nets.py`` checks it with two gloo processes). It works with gloo on CPU and with nccl on CUDA, where
  ``nn.SyncBatchNorm`` refuses CPU tensors, and it needs no conversion step in the trainer
  (``nn.SyncBatchNorm.convert_sync_batchnorm``), which the nets cannot ask of it.
- ``mode="local"``: plain ``nn.BatchNorm2d``: each process normalises with its own shard's
  statistics (the authors' single-GPU behaviour; under DDP the result then depends on the
  number of processes, and DDP's buffer broadcast keeps rank 0's running statistics).

Every process must run the same train-mode forwards (a collective waits for all of them);
evaluation, sampling and the EMA copy run in eval mode, which uses the running statistics and
never communicates. Exact resume: ``running_mean``, ``running_var`` and ``num_batches_tracked``
are buffers, so they are in ``state_dict()`` and hence in every checkpoint, and the EMA copy
takes the live model's buffers (``train/ema.py``).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.distributed as dist
from torch import nn

BatchNormMode = Literal["global", "local"]


class _SumOverProcesses(torch.autograd.Function):
    """``y = sum_r x_r`` on every process; backward: the sum of the processes' gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        g = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(g)
        return g


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with global-batch statistics under ``torch.distributed`` (module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _distributed()):
            return super().forward(x)
        self._check_input_dim(x)
        dtype, x = x.dtype, x.float()             # statistics in float32 (as batch_norm under autocast)
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = (1, c) + (1,) * (x.dim() - 2)
        local = torch.cat([x.sum(dims), x.new_full((1,), x.numel() // c)])
        total = _SumOverProcesses.apply(local)
        n = total[c].detach()
        mean = total[:c] / n
        centred = x - mean.view(shape)
        var = _SumOverProcesses.apply(centred.pow(2).sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), f)
                self.running_var.lerp_(var.detach() * n / (n - 1).clamp_min(1), f)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(dtype)


def batch_norm(channels: int, mode: BatchNormMode = "global") -> nn.BatchNorm2d:
    """A 2-d batch norm over ``channels`` channels: global-batch (default) or per-process statistics."""
    return GlobalBatchNorm2d(channels) if mode == "global" else nn.BatchNorm2d(channels)
