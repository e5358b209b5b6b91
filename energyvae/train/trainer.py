"""The training loop shared by every model.

Per step: take the step's batch (a deterministic function of seed, epoch and position, so a
resumed run sees the same data), then run each of the model's updates (own optimizer, own
loss, optional gradient clipping), then the EMA. Every ``eval_every`` steps the (EMA) model is
evaluated on the validation split; every ``checkpoint_every`` steps ``last`` is written, and
``best`` whenever the validation loss improves.

The hot loop never waits for the device (no host synchronisation in a step that neither
logs, evaluates nor checkpoints): log values are summed on the device and read every
``log_every`` steps (a record holds the window's mean); the finiteness guard keeps, per
update, the first step whose loss was non-finite as a device tensor and reads it at log,
evaluation and checkpoint steps (and when a step raises), so a divergence stops the run with
:class:`DivergenceError` naming that step before anything is written, and the last good
checkpoint stays. Optimizers (``train.optimizer`` adam / adamw, ``train.lr_schedule``:
see train/schedules.py) use ``fused=True`` (one kernel for all tensors; on this
project's CPU 0.80x the step time of the per-tensor loop on the MLP VAE), the EMA one
``torch._foreach_lerp_`` every ``train.ema_every`` steps and at evaluation/checkpoint steps.
Options for large runs: ``train.precision`` (bf16/fp16 autocast, a GradScaler per update
for fp16, its state checkpointed), ``train.compile``, ``train.channels_last``,
``train.data_on_device``; DDP uses ``find_unused_parameters`` only
when a probe step shows parameters without a gradient (or the model has several updates).
``train.threads`` is resolved by :mod:`energyvae.train.threads`.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..atomic import atomic_write_text, remove_stale_temporaries
from ..config import Config, dump_config
from ..errors import CheckpointError, ConfigError, DivergenceError
from ..models.base import Model, StepState
from .checkpoint import load_checkpoint, save_checkpoint
from .distributed import DistInfo, gather_objects, init_distributed
from .ema import EMA
from .logger import MetricsLogger
from .schedules import lr_factor, make_optimizer
from .threads import apply_threads, available_cores, local_processes, step_flops

LAST, BEST = "last.safetensors", "best.safetensors"


class BatchStream:
    """Indices of each step's local batch: epoch-wise permutations exactly as
    ``DistributedSampler(shuffle=True, drop_last=True)`` makes them (``randperm`` seeded by
    seed + epoch, the same first ``total`` indices, every ``world``-th from ``rank``), built as
    a tensor (on ``device``) rather than a Python list, so that the union of the processes'
    batches at a step equals the 1-process batch."""

    def __init__(self, n: int, global_batch: int, seed: int, info: DistInfo,
                 device: torch.device | None = None):
        if global_batch % info.world:
            raise ConfigError(f"train.batch_size {global_batch} is not divisible by the {info.world} processes")
        self.n, self.seed, self.world, self.rank = n, seed, info.world, info.rank
        self.local = global_batch // info.world
        per_rank = math.ceil((n - info.world) / info.world) if n % info.world else n // info.world
        self.total = per_rank * info.world
        self.steps_per_epoch = per_rank // self.local
        if self.steps_per_epoch == 0:
            raise ConfigError(f"train.batch_size {global_batch} is larger than the training set ({n})")
        self.device = device or torch.device("cpu")
        self._epoch, self._perm = None, None

    def indices(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            g = torch.Generator()
            g.manual_seed(self.seed + epoch)
            perm = torch.randperm(self.n, generator=g)[:self.total][self.rank:self.total:self.world]
            self._epoch, self._perm = epoch, perm.to(self.device)
        return self._perm[i * self.local:(i + 1) * self.local]


@torch.no_grad()
def evaluate_split(model, split, preprocess, device, batch_size=500, max_batches=None, seed=0) -> dict:
    """Mean of ``model.evaluate`` over a split, with a fixed RNG seed (binarization, z draws)
    that leaves the training RNG untouched."""
    was_training = model.training
    model.eval()
    totals, count = {}, 0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for b, start in enumerate(range(0, len(split), batch_size)):
            if max_batches is not None and b >= max_batches:
                break
            x = preprocess(split.x[start:start + batch_size]).to(device)
            for k, v in model.evaluate(x).items():
                totals[k] = totals.get(k, 0.0) + v.double().sum().item()
            count += x.shape[0]
    model.train(was_training)
    return {k: v / max(count, 1) for k, v in totals.items()}


#: "no divergence yet" in the finiteness guard's first-bad-step tensors
NO_STEP = 2**62


def _match_param_layout(opt: torch.optim.Optimizer) -> None:
    """Give loaded optimizer state the memory layout (strides) of its parameter: checkpoints
    store contiguous tensors, and the fused kernels assume state and parameter share strides
    (a channels_last weight with a contiguous exp_avg would be updated element-misaligned)."""
    for group in opt.param_groups:
        for p in group["params"]:
            for key, v in opt.state.get(p, {}).items():
                if isinstance(v, torch.Tensor) and v.shape == p.shape and v.stride() != p.stride():
                    opt.state[p][key] = torch.empty_like(p, dtype=v.dtype).copy_(v)


class Trainer:
    def __init__(self, cfg: Config, model: torch.nn.Module, data, resume: bool = False,
                 info: DistInfo | None = None, fallback: bool = False):
        """``resume`` continues from ``checkpoints/last``; when that file is unreadable or
        corrupt, ``fallback`` (CLI ``--resume-fallback``) continues from ``checkpoints/best``
        instead (an earlier step) rather than stopping. A run folder without a checkpoint (a
        run killed before its first one) starts again from step 0; a missing folder is an
        error."""
        if not isinstance(model, Model):
            raise TypeError(f"Trainer: the model must subclass energyvae.models.base.Model (the trainer's "
                            f"contract), got {type(model).__name__}")
        self.cfg, self.data, self.tc = cfg, data, cfg.train
        self.info = info or init_distributed(cfg.train.device)
        self.device = self.info.device
        self.run_dir = Path(cfg.run.dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        torch.manual_seed(self.tc.seed + self.info.rank)
        self.model = model.to(self.device).train()
        if self.tc.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.updates = self.model.updates()
        self.train_x = self._place_data(data.train.x)
        self.stream = BatchStream(len(data.train), self.tc.batch_size, self.tc.seed, self.info,
                                  device=self.train_x.device)
        self.threads = self._set_threads()
        self.optimizers = {u.name: make_optimizer(
            self.tc.optimizer, u.params, u.lr or self.tc.lr, u.betas or self.tc.betas,
            self.tc.weight_decay if u.weight_decay is None else u.weight_decay)
            for u in self.updates}
        self._scheduled = self.tc.lr_schedule != "constant" or self.tc.warmup_steps > 0
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group.setdefault("initial_lr", group["lr"])
        self.scalers = ({u.name: torch.amp.GradScaler(self.device.type) for u in self.updates}
                        if self.tc.precision == "fp16" else {})
        self.ema = EMA(self.model, self.tc.ema, self.tc.ema_every) if self.tc.ema > 0 else None
        self.total_steps = self.tc.steps or self.tc.epochs * self.stream.steps_per_epoch
        self.step, self.best = 0, {"metric": "loss", "value": math.inf, "step": None}
        self.seconds_before, self._t0 = 0.0, None     # training time of earlier sessions (resume)
        self._first_bad = {u.name: torch.full((), NO_STEP, dtype=torch.long, device=self.device)
                           for u in self.updates}
        self._log_sums, self._log_counts = {}, {}
        self._last_saved, self._postfix = None, {}
        self.wrapped = self.model
        if self.info.enabled:
            self.wrapped = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self._has_unused_parameters())
        self.loss_fn = self.wrapped
        if self.tc.compile:
            import torch._inductor.config as inductor_config
            inductor_config.fallback_random = True       # the eager RNG stream: exact resume
            self.loss_fn = torch.compile(self.wrapped)
        if resume:
            self._resume(fallback)
        elif self.info.is_main and (self.ckpt_dir / LAST).exists():
            raise ConfigError(f"{self.run_dir} already holds a run; pass --resume to continue it "
                              f"or choose another run.dir")

    # -- set-up ----------------------------------------------------------------------------
    def _place_data(self, x: torch.Tensor) -> torch.Tensor:
        """The raw training tensor on the training device when ``data_on_device`` says so
        (auto: on CUDA when it takes under a quarter of the free memory)."""
        mode = self.tc.data_on_device
        if self.device.type != "cuda" or mode == "no":
            return x
        if mode == "auto":
            free, _ = torch.cuda.mem_get_info(self.device)
            if x.numel() * x.element_size() > free / 4:
                return x
        return x.to(self.device)

    def _set_threads(self) -> int:
        """Apply ``train.threads`` (auto: measure the step's FLOPs on a copy of the model when
        more than one thread is possible at all)."""
        flops = None
        if self.tc.threads == "auto" and available_cores() // local_processes() > 1:
            with torch.random.fork_rng(devices=[]):
                x = self.data.preprocess(self.data.train.x[:self.stream.local]).to(self.device)
            flops = step_flops(self.model, self._format(x), self.updates[0].name)
        return apply_threads(self.tc.threads, flops)

    def _has_unused_parameters(self) -> bool:
        """Whether DDP needs ``find_unused_parameters``: several updates (each uses a part of the
        model), or a probe backward of the one update on a copy leaves a parameter without a
        gradient."""
        if len(self.updates) > 1:
            return True
        probe = copy.deepcopy(self.model)
        names = {id(p): n for n, p in self.model.named_parameters()}
        wanted = {names[id(p)] for p in self.updates[0].params}
        try:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                x = self.data.preprocess(self.data.train.x[:2]).to(self.device)
                loss, _ = probe(self.updates[0].name, self._format(x), {"step": 0})
                loss.backward()
        except Exception:
            return True
        return any(p.grad is None for n, p in probe.named_parameters() if n in wanted)

    def _format(self, x: torch.Tensor) -> torch.Tensor:
        if self.tc.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def _autocast(self):
        if self.tc.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.tc.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def batch(self, step: int) -> torch.Tensor:
        """The preprocessed local batch of ``step`` on the training device, augmented by
        ``data.augment`` (flips drawn from (seed, step, position in the global batch): resume and
        DDP stay exact)."""
        raw = self.train_x[self.stream.indices(step)]
        raw = self.data.augment_batch(raw, seed=self.tc.seed, step=step, rank=self.info.rank, world=self.info.world)
        x = self.data.preprocess(raw).to(self.device, non_blocking=True)
        return self._format(x)

    # -- checkpoints -----------------------------------------------------------------------
    def _rng_state(self) -> dict:
        local = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            local["cuda"] = torch.cuda.get_rng_state(self.device)
        return {"ranks": gather_objects(local, self.info)}

    def _state(self, rng: dict) -> dict:
        return {"step": self.step, "model": self.model.state_dict(),
                "ema": self.ema.state_dict() if self.ema else None,
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "scalers": {k: sc.state_dict() for k, sc in self.scalers.items()},
                "rng": rng, "best": self.best, "config": self.cfg.raw, "seconds": self._seconds(),
                "info": {"world_size": self.info.world}}

    def _seconds(self) -> float:
        """Training wall time so far, summed over sessions (a resumed run keeps counting)."""
        return self.seconds_before + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)

    def _save(self, name: str, rng: dict) -> None:
        for p in self.model.parameters():
            if not torch.isfinite(p).all():
                raise DivergenceError(f"non-finite parameters at step {self.step}; "
                                      f"checkpoint {name} not written")
        save_checkpoint(self.ckpt_dir / name, self._state(rng))

    def _resume(self, fallback: bool = False) -> None:
        path = self.ckpt_dir / LAST
        if not path.exists() and not (self.ckpt_dir / BEST).exists():
            if not self.run_dir.is_dir():
                raise CheckpointError(f"--resume: no checkpoint at {path} (no run folder {self.run_dir})")
            if (self.run_dir / "metrics.json").exists():
                raise CheckpointError(f"--resume: {self.run_dir} holds a finished run without checkpoints; "
                                      f"nothing to continue (train into another run.dir)")
            warnings.warn(f"{self.run_dir}: no checkpoint to resume from (the run stopped before its "
                          f"first one); starting from step 0", stacklevel=3)
            return
        if not path.exists():             # killed after the first evaluation, before the first `last`
            path = self.ckpt_dir / BEST
        try:
            state = load_checkpoint(path)
        except CheckpointError as e:
            other = self.ckpt_dir / BEST
            if path == other or not other.exists():
                raise
            if not fallback:
                raise CheckpointError(f"{e}; pass --resume-fallback to continue from {other} "
                                      f"(an earlier step) instead") from None
            state = load_checkpoint(other)
            warnings.warn(f"{e}; continuing from {other} (step {int(state['step'])})", stacklevel=3)
            path = other
        try:
            self.model.load_state_dict(state["model"])
            if self.ema and state["ema"] is not None:
                self.ema.load_state_dict(state["ema"])
            for k, o in self.optimizers.items():
                o.load_state_dict(state["optimizers"][k])
                _match_param_layout(o)
                for group in o.param_groups:          # checkpoints from before schedules existed
                    group.setdefault("initial_lr", group["lr"])
            for k, sc in self.scalers.items():
                if k in state.get("scalers", {}):
                    sc.load_state_dict(state["scalers"][k])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{path}: does not match this config's model "
                                  f"({str(e).splitlines()[0][:200]})") from None
        ranks = state["rng"]["ranks"]
        if len(ranks) != self.info.world:
            raise CheckpointError(f"{path} was written by {len(ranks)} processes; resume with as many")
        torch.set_rng_state(ranks[self.info.rank]["torch"])
        if "cuda" in ranks[self.info.rank] and self.device.type == "cuda":
            torch.cuda.set_rng_state(ranks[self.info.rank]["cuda"], self.device)
        self.step, self.best = int(state["step"]), state["best"]
        if self.ema:
            self.ema.last = self.step - 1           # checkpoints are written right after an EMA sync
        self.seconds_before = float(state.get("seconds", 0.0))
        if self.best["value"] is None:
            self.best["value"] = math.inf

    # -- the loop --------------------------------------------------------------------------
    def _note_finite(self, loss: torch.Tensor, update: str) -> None:
        """Remember (on the device, no synchronisation) the first step with a non-finite loss."""
        bad = ~torch.isfinite(loss.detach()).all()
        here = torch.where(bad, torch.full_like(self._first_bad[update], self.step), NO_STEP)
        self._first_bad[update] = torch.minimum(self._first_bad[update], here)

    def check_finite(self) -> None:
        """Raise DivergenceError when any update's loss was non-finite at a step so far (on
        any process: the earliest over them); one host synchronisation."""
        names = list(self._first_bad)
        first = torch.stack([self._first_bad[n] for n in names])
        if self.info.enabled:
            dist.all_reduce(first, op=dist.ReduceOp.MIN)
        first = first.tolist()
        bad = [(s, n) for s, n in zip(first, names) if s < NO_STEP]
        if bad:
            step, update = min(bad)
            last = (f"{self.ckpt_dir / LAST}, step {self._last_saved}" if self._last_saved
                    else "none was written yet")
            raise DivergenceError(
                f"non-finite loss in update '{update}' at step {step + 1}; stopped at step "
                f"{self.step} without writing a checkpoint (last good checkpoint: {last})")

    def _accumulate(self, prefix: str, logs: dict) -> None:
        for k, v in logs.items():
            key = prefix + k
            v = v.detach().reshape(()).to(torch.float64) if isinstance(v, torch.Tensor) else float(v)
            self._log_sums[key] = self._log_sums[key] + v if key in self._log_sums else v
            self._log_counts[key] = self._log_counts.get(key, 0) + 1

    def read_logs(self) -> dict:
        """Means of the log values since the last call (one host synchronisation)."""
        keys = list(self._log_sums)
        tensors = [k for k in keys if isinstance(self._log_sums[k], torch.Tensor)]
        values = dict(zip(tensors, torch.stack([self._log_sums[k].to(self.device) for k in tensors]).tolist())
                      if tensors else ())
        out = {k: values.get(k, self._log_sums[k]) / self._log_counts[k] for k in keys}
        self._log_sums, self._log_counts = {}, {}
        return out

    def train_step(self, x: torch.Tensor) -> dict:
        """Every due update of the model on batch ``x``, then the EMA; returns this step's log
        values (device tensors: reading them synchronises) and adds them to the log window."""
        state, logs = StepState(step=self.step), {}
        for u in self.updates:
            if self.step % u.every or not u.start <= self.step < (math.inf if u.stop is None else u.stop):
                continue
            opt, scaler = self.optimizers[u.name], self.scalers.get(u.name)
            if self._scheduled:
                factor = lr_factor(self.step, self.total_steps, self.tc.lr_schedule, self.tc.warmup_steps,
                                   self.tc.min_lr_ratio)
                for group in opt.param_groups:
                    group["lr"] = group["initial_lr"] * factor
            opt.zero_grad(set_to_none=True)
            with self._autocast():
                loss, ulogs = self.loss_fn(u.name, x, state)
            self._note_finite(loss, u.name)
            (scaler.scale(loss) if scaler is not None else loss).backward()
            clip = u.grad_clip or self.tc.grad_clip
            if clip:
                if scaler is not None:
                    scaler.unscale_(opt)
                gn = torch.nn.utils.clip_grad_norm_(u.params, clip)
                ulogs = {**ulogs, "grad_norm": gn}
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            self.model.after_update(u.name, state)
            prefix = "" if u.name == "vae" else f"{u.name}/"
            self._accumulate(prefix, ulogs)
            logs.update({prefix + k: v for k, v in ulogs.items()})
        if self.ema:
            self.ema.update(self.model, self.step)
        return logs

    def _main_update_stopped(self) -> bool:
        """True after a two-stage model's main update stopped (NCP, EVaLP ``two_stage_at``): its
        validation loss no longer moves while the later parts (a classifier, a prior) still
        train, so ``best`` follows the latest evaluation instead of a stage-1 checkpoint."""
        return any(u.name == self.model.MAIN_UPDATE and u.stop is not None and self.step > u.stop
                   for u in self.updates)

    @torch.no_grad()
    def _tensorboard_images(self, logger: MetricsLogger, n: int = 16) -> None:
        """Samples and reconstructions of the evaluation weights at an evaluation step, under a
        forked RNG (the training stream, hence resume, is unchanged)."""
        if logger.tb is None or self.data.kind != "image":
            return
        model, to_unit = self.eval_model(), self.data.preprocess.to_unit
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            was = model.training
            model.eval()
            try:
                logger.images(self.step, "samples", to_unit(model.sample(n)))
                x = self.data.preprocess(self.data.val.x[:n]).to(self.device)
                logger.images(self.step, "reconstructions", to_unit(torch.cat([x, model.reconstruct(x)])))
            except Exception as e:          # a figure must never stop training
                warnings.warn(f"TensorBoard images at step {self.step} skipped: {type(e).__name__}: {e}",
                              stacklevel=2)
            finally:
                model.train(was)

    def eval_model(self) -> torch.nn.Module:
        return self.ema.model if self.ema else self.model

    def fit(self) -> dict:
        tc, main = self.tc, self.info.is_main
        logger = MetricsLogger(self.run_dir, self.step) if main else None
        if main:
            for folder in (self.run_dir, self.ckpt_dir):     # what a writer killed mid-write left
                remove_stale_temporaries(folder)
            atomic_write_text(self.run_dir / "config.yaml", dump_config(self.cfg))
            if getattr(self.data, "available", True):
                atomic_write_text(self.run_dir / "data.json", json.dumps(self.data.spec(), indent=2, default=str))
        self._last_saved = self.step if self.step else None
        self._log_sums, self._log_counts = {}, {}
        bar = None
        if main and tc.progress:
            import sys

            from tqdm.auto import tqdm
            bar = tqdm(total=self.total_steps, initial=self.step, desc="train", dynamic_ncols=True,
                       mininterval=0.2 if sys.stderr.isatty() else 30.0)
        self._t0 = t0 = time.perf_counter()
        t_window, window_steps = t0, 0
        try:
            while self.step < self.total_steps:
                try:
                    self.train_step(self.batch(self.step))
                except (DivergenceError, KeyboardInterrupt):
                    raise
                except Exception:
                    self.check_finite()       # a step that fails after a divergence: report that
                    raise
                self.step += 1
                window_steps += 1
                if bar is not None:
                    bar.update(1)
                done = self.step == self.total_steps
                do_log = self.step % tc.log_every == 0 or done
                do_eval = self.step % tc.eval_every == 0 or done
                do_ckpt = self.step % tc.checkpoint_every == 0 or done
                if not (do_log or do_eval or do_ckpt):
                    continue
                self.check_finite()
                if self.ema and (do_eval or do_ckpt):
                    self.ema.update(self.model, self.step - 1, sync=True)
                if do_log:
                    logs = self.read_logs()
                    if main:
                        now = time.perf_counter()
                        logs["sec_per_step"] = (now - t_window) / window_steps
                        t_window, window_steps = now, 0
                        logger.log(self.step, "train", logs)
                        self._postfix["loss"] = f"{logs.get('loss', float('nan')):.3f}"
                rng = self._rng_state() if (do_eval or do_ckpt) else None
                if do_eval and main:
                    val = evaluate_split(self.eval_model(), self.data.val, self.data.preprocess, self.device,
                                         max_batches=tc.eval_batches, seed=tc.seed)
                    logger.log(self.step, "val", val)
                    self._tensorboard_images(logger)
                    self._postfix["val"] = f"{val['loss']:.3f}"
                    if val["loss"] < self.best["value"] or self._main_update_stopped():
                        self.best = {"metric": "loss", "value": val["loss"], "step": self.step}
                        self._save(BEST, rng)
                if bar is not None:
                    bar.set_postfix(self._postfix, refresh=False)
                if do_ckpt and main:
                    self._save(LAST, rng)
                    self._last_saved = self.step
            if main and self.step == self.total_steps:
                flat = {f"train.{k}": v for k, v in vars(self.tc).items()}
                flat.update({"model": self.cfg.model[0], "data": self.cfg.data.name})
                logger.hparams(flat, {"best_val_loss": self.best["value"]})
        finally:
            if bar is not None:
                bar.close()
            if logger is not None:
                logger.close()
        session = time.perf_counter() - t0
        return {"steps": self.step, "seconds": self.seconds_before + session, "seconds_this_session": session,
                "best": self.best}
