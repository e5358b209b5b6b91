"""The training loop shared by every model.

Per step: take the step's batch (a deterministic function of seed, epoch and position, so a
resumed run sees the same data), then run each of the model's updates (own optimizer, own
loss, optional gradient clipping), then the EMA. Every ``eval_every`` steps the (EMA) model is
evaluated on the validation split; every ``checkpoint_every`` steps ``last`` is written, and
``best`` whenever the validation loss improves. A non-finite loss or parameter stops the run
with :class:`DivergenceError` before anything is written, so the last good checkpoint stays.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from ..config import Config, dump_config
from ..errors import CheckpointError, ConfigError, DivergenceError
from .checkpoint import load_checkpoint, save_checkpoint
from .distributed import DistInfo, all_finite, gather_objects, init_distributed
from .ema import EMA
from .logger import MetricsLogger

LAST, BEST = "last.safetensors", "best.safetensors"


class BatchStream:
    """Indices of each step's local batch: epoch-wise permutations as DistributedSampler makes
    them, so that the union of the processes' batches at a step equals the 1-process batch."""

    def __init__(self, n: int, global_batch: int, seed: int, info: DistInfo):
        if global_batch % info.world:
            raise ConfigError(f"train.batch_size {global_batch} is not divisible by the {info.world} processes")
        self.local = global_batch // info.world
        self.sampler = DistributedSampler(range(n), num_replicas=info.world, rank=info.rank,
                                          shuffle=True, seed=seed, drop_last=True)
        self.steps_per_epoch = len(self.sampler) // self.local
        if self.steps_per_epoch == 0:
            raise ConfigError(f"train.batch_size {global_batch} is larger than the training set ({n})")
        self._epoch, self._perm = None, None

    def indices(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self.sampler.set_epoch(epoch)
            self._epoch, self._perm = epoch, torch.tensor(list(iter(self.sampler)))
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


class Trainer:
    def __init__(self, cfg: Config, model: torch.nn.Module, data, resume: bool = False,
                 info: DistInfo | None = None):
        self.cfg, self.data, self.tc = cfg, data, cfg.train
        self.info = info or init_distributed(cfg.train.device)
        self.device = self.info.device
        self.run_dir = Path(cfg.run.dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        torch.manual_seed(self.tc.seed + self.info.rank)
        self.model = model.to(self.device).train()
        self.updates = self.model.updates()
        self.optimizers = {u.name: torch.optim.Adam(
            u.params, lr=u.lr or self.tc.lr, betas=u.betas or self.tc.betas,
            weight_decay=self.tc.weight_decay if u.weight_decay is None else u.weight_decay)
            for u in self.updates}
        self.ema = EMA(self.model, self.tc.ema) if self.tc.ema > 0 else None
        self.stream = BatchStream(len(data.train), self.tc.batch_size, self.tc.seed, self.info)
        self.total_steps = self.tc.steps or self.tc.epochs * self.stream.steps_per_epoch
        self.step, self.best = 0, {"metric": "loss", "value": math.inf, "step": None}
        self.seconds_before, self._t0 = 0.0, None     # training time of earlier sessions (resume)
        self.wrapped = self.model
        if self.info.enabled:
            self.wrapped = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)
        if resume:
            self._resume()
        elif self.info.is_main and (self.ckpt_dir / LAST).exists():
            raise ConfigError(f"{self.run_dir} already holds a run; pass --resume to continue it "
                              f"or choose another run.dir")

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

    def _resume(self) -> None:
        path = self.ckpt_dir / LAST
        if not path.exists():
            raise CheckpointError(f"--resume: no checkpoint at {path}")
        state = load_checkpoint(path)
        try:
            self.model.load_state_dict(state["model"])
            if self.ema and state["ema"] is not None:
                self.ema.load_state_dict(state["ema"])
            for k, o in self.optimizers.items():
                o.load_state_dict(state["optimizers"][k])
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
        self.seconds_before = float(state.get("seconds", 0.0))
        if self.best["value"] is None:
            self.best["value"] = math.inf

    # -- the loop --------------------------------------------------------------------------
    def _check(self, loss: torch.Tensor, update: str) -> None:
        if not all_finite(loss, self.info):
            raise DivergenceError(
                f"non-finite loss ({loss.item()}) in update '{update}' at step {self.step + 1}; "
                f"stopped without writing a checkpoint (last good: {self.ckpt_dir / LAST}, "
                f"step {self._last_saved})")

    def train_step(self, x: torch.Tensor) -> dict:
        state, logs = {"step": self.step}, {}
        for u in self.updates:
            if self.step % u.every or not u.start <= self.step < (math.inf if u.stop is None else u.stop):
                continue
            opt = self.optimizers[u.name]
            opt.zero_grad(set_to_none=True)
            loss, ulogs = self.wrapped(u.name, x, state)
            self._check(loss, u.name)
            loss.backward()
            clip = u.grad_clip or self.tc.grad_clip
            if clip:
                gn = torch.nn.utils.clip_grad_norm_(u.params, clip)
                ulogs = {**ulogs, "grad_norm": gn}
            opt.step()
            self.model.after_update(u.name, state)
            prefix = "" if u.name == "vae" else f"{u.name}/"
            logs.update({prefix + k: float(v) for k, v in ulogs.items()})
        if self.ema:
            self.ema.update(self.model, self.step)
        return logs

    def eval_model(self) -> torch.nn.Module:
        return self.ema.model if self.ema else self.model

    def fit(self) -> dict:
        tc, main = self.tc, self.info.is_main
        logger = MetricsLogger(self.run_dir, self.step) if main else None
        if main:
            (self.run_dir / "config.yaml").write_text(dump_config(self.cfg))
        self._last_saved = self.step if self.step else None
        bar = None
        if main and tc.progress:
            import sys

            from tqdm.auto import tqdm
            bar = tqdm(total=self.total_steps, initial=self.step, desc="train", dynamic_ncols=True,
                       mininterval=0.2 if sys.stderr.isatty() else 30.0)
        self._t0 = t0 = time.perf_counter()
        t_window, window_steps = t0, 0
        preprocess, train_x = self.data.preprocess, self.data.train.x
        try:
            while self.step < self.total_steps:
                x = preprocess(train_x[self.stream.indices(self.step)]).to(self.device)
                logs = self.train_step(x)
                self.step += 1
                window_steps += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{logs.get('loss', float('nan')):.3f}", refresh=False)
                done = self.step == self.total_steps
                if main and (self.step % tc.log_every == 0 or done):
                    now = time.perf_counter()
                    logs["sec_per_step"] = (now - t_window) / window_steps
                    t_window, window_steps = now, 0
                    logger.log(self.step, "train", logs)
                do_eval = self.step % tc.eval_every == 0 or done
                do_ckpt = self.step % tc.checkpoint_every == 0 or done
                rng = self._rng_state() if (do_eval or do_ckpt) else None
                if do_eval and main:
                    val = evaluate_split(self.eval_model(), self.data.val, preprocess, self.device,
                                         max_batches=tc.eval_batches, seed=tc.seed)
                    logger.log(self.step, "val", val)
                    if bar is not None:
                        bar.set_postfix(loss=f"{logs.get('loss', float('nan')):.3f}",
                                        val=f"{val['loss']:.3f}", refresh=False)
                    if val["loss"] < self.best["value"]:
                        self.best = {"metric": "loss", "value": val["loss"], "step": self.step}
                        self._save(BEST, rng)
                if do_ckpt and main:
                    self._save(LAST, rng)
                    self._last_saved = self.step
        finally:
            if bar is not None:
                bar.close()
            if logger is not None:
                logger.close()
        session = time.perf_counter() - t0
        return {"steps": self.step, "seconds": self.seconds_before + session, "seconds_this_session": session,
                "best": self.best}
