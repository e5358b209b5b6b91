"""How many torch threads a process uses: ``train.threads`` (and ``--threads`` of the
evaluation commands), ``"auto"`` by default.

Why a default that is not "every core": torch's OpenMP threads spin-wait between parallel
regions, so a process with 2 threads on a 2-core machine whose other core is busy (another
job, a second torchrun process) runs its small kernels 2-20x *slower* than with 1 thread.
Measured on the 2-core CPU of this project (median step, batch 128, idle machine, then a
concurrent ``while True: pass``):

==========================  =========  =========  ==================  ===========================
net (training step)         1 thread   2 threads  2 threads, loaded   2 threads, loaded, PASSIVE
==========================  =========  =========  ==================  ===========================
digits MLP 64-256-256-8     5.4 ms     4.8 ms     9.1 ms (1 thr 4.1)  5.0 ms
MLP 784-512-512-16          15.5 ms    11.4 ms    32.7 ms (1 thr 25)  25.5 ms
conv VAE (fashion_vae)      ~80 ms     ~53 ms
==========================  =========  =========  ==================  ===========================

So ``"auto"`` resolves to

    n = cores this process may use (``os.sched_getaffinity``) // local processes of the job
        (torchrun's ``LOCAL_WORLD_SIZE``), at least 1;
    1 when a training step costs less than :data:`SMALL_STEP_FLOPS` (the digits MLP: at most
        a 12 % gain on an idle machine against a 2.2x loss on a loaded one).

and the CLI sets ``OMP_WAIT_POLICY=PASSIVE`` (unless the user set it) before torch is
imported: threads then sleep instead of spinning, which costs ~15 % of the 2-thread speed on
an idle machine but keeps a run near its 1-thread speed when a load arrives after it started.
An explicit integer is used as given, and so is ``OMP_NUM_THREADS`` when the user set it.

The rule deliberately does not look at the machine's current load: the thread count changes
the floating-point reduction order of matmuls and convolutions, so a count that depended on
the load at start would make two runs of one config (or a run and its resume) differ in the
last bits. The passive wait policy is what protects a multi-thread run from a later load.
"""
from __future__ import annotations

import os

import torch

from ..errors import ConfigError

#: below this many FLOPs per training step (forward + backward) more threads only synchronise
SMALL_STEP_FLOPS = 5e8


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def local_processes() -> int:
    """Processes of this job on this machine (torchrun sets LOCAL_WORLD_SIZE)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def auto_threads(step_flops: float | None = None) -> int:
    """The ``"auto"`` rule of the module docstring (``OMP_NUM_THREADS``, when set, wins)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.strip().isdigit() and int(env) >= 1:
        return int(env)
    if step_flops is not None and step_flops < SMALL_STEP_FLOPS:
        return 1
    return max(1, available_cores() // local_processes())


def resolve_threads(setting: int | str | None, step_flops: float | None = None) -> int:
    """Threads for a setting: a positive int as given, ``"auto"``/None by :func:`auto_threads`."""
    if setting is None or setting == "auto":
        return auto_threads(step_flops)
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        raise ConfigError(f"threads: expected 'auto' or an integer >= 1, got {setting!r}")
    return setting


def apply_threads(setting: int | str | None, step_flops: float | None = None) -> int:
    """``torch.set_num_threads`` of the resolved setting; returns the number used."""
    n = resolve_threads(setting, step_flops)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def step_flops(model: torch.nn.Module, x: torch.Tensor, update: str = "vae") -> float | None:
    """FLOPs of one training step (3x the forward of the main update's loss) on the batch
    ``x``, counted with ``torch.utils.flop_counter`` on a copy of the model under a forked RNG
    (so the run's state and random stream are untouched); None when it cannot be counted."""
    import copy

    from torch.utils.flop_counter import FlopCounterMode
    try:
        probe = copy.deepcopy(model)
        with torch.random.fork_rng(devices=[]), torch.no_grad(), \
                FlopCounterMode(display=False) as counter:
            probe(update, x, {"step": 0})
        return 3.0 * counter.get_total_flops()
    except Exception:        # an exotic model: fall back to the core-count rule
        return None
