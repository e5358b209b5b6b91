"""Kill -9 a short training run at random instants, resume it each time, and check that it ends
with exactly the weights, optimizer state and metrics of an uninterrupted run (issue 15).

    python scripts/kill_resume.py                 # 20 kills, seed 0
    python scripts/kill_resume.py --kills 5 --seed 3 --keep /tmp/kr

One run is killed ``--kills`` times in a row; after each kill it is resumed with
``energyvae train --config ... --resume``. The instants are drawn (seeded) from these kinds:

- ``time``: SIGKILL from outside after a random wall time (it may land in start-up, a step,
  an evaluation, a write, or the end-of-run figures);
- ``step``: the process kills itself just before a random step (between two updates);
- ``checkpoint``: inside a checkpoint write: half of the safetensors bytes written to the
  temporary file, then SIGKILL;
- ``sidecar``: after a checkpoint was renamed into place, before its JSON side-car was written;
- ``metrics``: inside a ``metrics.jsonl`` append: half a line written, then SIGKILL;
- ``config``: inside the ``config.yaml`` write at the start of the session.

In-process kinds kill the child with ``os.kill(os.getpid(), SIGKILL)`` from a patched writer,
which is exactly what a kill -9 at that instant leaves on disk. The final check compares every
tensor of ``checkpoints/last`` and ``checkpoints/best`` with the uninterrupted run's (bit for
bit), and the loss values of every ``metrics.jsonl`` record (timings excluded). Exit status 0
when everything matches; a line per kill says what it hit.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "digits_vae.yaml"
# checkpoint_every a multiple of log_every: a resumed run's log windows line up with the
# uninterrupted run's, so the metrics records can be compared exactly
OVERRIDES = ["model.latent_dim=3", "model.encoder.hidden=[16]", "model.decoder.hidden=[16]",
             "train.batch_size=32", "train.progress=false", "train.steps=60", "train.log_every=5",
             "train.eval_every=10", "train.checkpoint_every=10", "train.eval_batches=2",
             "eval.iw_samples=0", "eval.n_samples=16", "eval.n_reconstructions=8"]
KINDS = ["time", "step", "checkpoint", "sidecar", "metrics", "config"]
TIMING_KEYS = {"sec_per_step", "seconds", "seconds_this_session", "seconds_to_sample"}


def _child(kind: str, arg: int, argv: list[str]) -> None:
    """Run ``energyvae train argv`` with a self-kill installed at instant (kind, arg)."""
    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if kind == "step":
        from energyvae.train import Trainer
        real = Trainer.train_step

        def train_step(self, x):
            if self.step == arg:
                die()
            return real(self, x)
        Trainer.train_step = train_step
    elif kind in ("checkpoint", "sidecar"):
        from energyvae.train import checkpoint
        calls = {"n": 0}
        if kind == "checkpoint":
            real_save = checkpoint.save_file

            def save_file(tensors, path, metadata=None):
                calls["n"] += 1
                real_save(tensors, path, metadata=metadata)
                if calls["n"] == arg:
                    data = Path(path).read_bytes()
                    Path(path).write_bytes(data[: len(data) // 2])
                    die()
            checkpoint.save_file = save_file
        else:
            real_text = checkpoint.atomic_write_text

            def atomic_write_text(path, text):
                calls["n"] += 1
                if calls["n"] == arg:
                    die()
                return real_text(path, text)
            checkpoint.atomic_write_text = atomic_write_text
    elif kind == "metrics":
        from energyvae.train import logger
        calls = {"n": 0}
        real_log = logger.MetricsLogger.log

        def log(self, step, split, values):
            calls["n"] += 1
            if calls["n"] == arg:
                line = json.dumps({"step": step, "split": split, **{k: logger._plain(v) for k, v in values.items()}})
                with self.path.open("a") as f:
                    f.write(line[: len(line) // 2])
                die()
            return real_log(self, step, split, values)
        logger.MetricsLogger.log = log
    elif kind == "config":
        from energyvae.train import trainer
        real_text = trainer.atomic_write_text

        def atomic_write_text(path, text):
            if Path(path).name == "config.yaml":
                from energyvae import atomic

                def torn(p):
                    Path(p).write_text(text[: len(text) // 2])
                    die()
                atomic.atomic_write(path, torn)
            return real_text(path, text)
        trainer.atomic_write_text = atomic_write_text
    from energyvae.cli import main
    sys.exit(main(["train", *argv]))


def _launch(kind: str, arg: float, argv: list[str]) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    if kind == "none" or kind == "time":
        cmd = [sys.executable, "-m", "energyvae", "train", *argv]
    else:
        cmd = [sys.executable, __file__, "--child", kind, str(int(arg)), "--", *argv]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if kind == "time":
        try:
            proc.wait(timeout=arg)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    else:
        proc.wait()
    err = proc.stderr.read().decode(errors="replace").strip()
    if proc.returncode not in (0, -signal.SIGKILL):
        raise SystemExit(f"run failed (status {proc.returncode}) after kind={kind} arg={arg}:\n{err[-2000:]}")
    return proc.returncode


def _saved_step(run_dir: Path) -> int:
    from energyvae.errors import CheckpointError
    from energyvae.train import LAST, load_checkpoint
    try:
        return int(load_checkpoint(run_dir / "checkpoints" / LAST)["step"])
    except CheckpointError:
        return 0


def _flat(obj, prefix="", out=None):
    import torch
    out = {} if out is None else out
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flat(v, f"{prefix}.{k}", out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _flat(v, f"{prefix}.{i}", out)
    elif prefix.rsplit(".", 1)[-1] not in TIMING_KEYS:
        out[prefix] = obj
    return out


def compare(ref: Path, run: Path) -> list[str]:
    """Differences between two finished runs (empty: identical weights, state and metrics)."""
    import torch

    from energyvae.train import BEST, LAST, load_checkpoint
    from energyvae.train.logger import read_metrics
    problems = []
    for name in (LAST, BEST):
        a = _flat(load_checkpoint(ref / "checkpoints" / name))
        b = _flat(load_checkpoint(run / "checkpoints" / name))
        # RNG states are checked through the weights; the run folders differ by name
        a = {k: v for k, v in a.items() if ".rng." not in k and k != ".config.run.dir"}
        b = {k: v for k, v in b.items() if ".rng." not in k and k != ".config.run.dir"}
        if a.keys() != b.keys():
            problems.append(f"{name}: different entries {sorted(a.keys() ^ b.keys())[:5]}")
        for k in a.keys() & b.keys():
            same = (torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) and isinstance(b[k], torch.Tensor)
                    else a[k] == b[k])
            if not same:
                problems.append(f"{name}: {k} differs")
    strip = lambda recs: [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in recs]  # noqa: E731
    ma, mb = strip(read_metrics(ref)), strip(read_metrics(run))
    if ma != mb:
        problems.append(f"metrics.jsonl differs ({len(ma)} vs {len(mb)} records)")
    for f in ("samples.png", "metrics.json"):
        if not (run / f).is_file():
            problems.append(f"{f} missing")
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=KINDS)
    p.add_argument("--keep", help="folder for the two runs (default: a temporary one, removed)")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args.child[0], int(args.child[1]), args.rest)
        return 0
    root = Path(args.keep or tempfile.mkdtemp(prefix="kill_resume_"))
    shutil.rmtree(root / "ref", ignore_errors=True)
    shutil.rmtree(root / "killed", ignore_errors=True)
    ref, run = root / "ref", root / "killed"
    rng = random.Random(args.seed)
    t = time.perf_counter()
    _launch("none", 0, ["--config", str(CONFIG), *OVERRIDES, f"run.dir={ref}"])
    full = time.perf_counter() - t
    print(f"uninterrupted run: {full:.1f} s")
    steps = int(next(o for o in OVERRIDES if o.startswith("train.steps=")).split("=")[1])
    base = ["--config", str(CONFIG), *OVERRIDES, f"run.dir={run}"]
    started, hits = False, []
    for i in range(args.kills):
        kind = args.kinds[i % len(args.kinds)] if i < len(args.kinds) else rng.choice(args.kinds)
        now = _saved_step(run) if started else 0
        if kind == "step" and now >= steps:     # only the end-of-run outputs are left to write
            kind = "time"
        arg = {"time": lambda: rng.uniform(0.3, 0.8 * full),
               "step": lambda: rng.randint(now, steps - 1),
               "checkpoint": lambda: rng.randint(1, 2), "sidecar": lambda: rng.randint(1, 4),
               "metrics": lambda: rng.randint(1, 6), "config": lambda: 1}[kind]()
        status = _launch(kind, arg, base + (["--resume"] if started else []))
        started = run.exists()        # killed before the run made its folder: nothing to resume
        hit = "killed" if status else "finished before the kill"
        print(f"kill {i + 1:2d}: {kind:10s} at {arg:7.2f}  resumed from step {now:3d}  -> {hit}")
        hits.append(status != 0)
        if status == 0:                       # finished: start a fresh run for the remaining kills
            shutil.rmtree(run)
            started = False
    _launch("none", 0, base + (["--resume"] if started else []))
    problems = compare(ref, run)
    print(f"{sum(hits)} of {len(hits)} kills landed; final state "
          f"{'identical to the uninterrupted run' if not problems else 'DIFFERS'}")
    for line in problems[:20]:
        print("  " + line)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
