"""Benchmark (issue 14): CPU training-step speed of energyvae against a bare PyTorch loop and
pythae 0.1.2, and default torch threads against 1 thread on a loaded machine.

Part 1, step time (one process, ``torch.set_num_threads(1)``). Three implementations train the
same nets from the same initial weights on the same batches of Fashion-MNIST (grey levels in
[0, 1], ``data: {name: fashion-mnist, scale: "01"}``, loaded by ``energyvae.data.load_data``;
Bernoulli cross-entropy on grey levels for all three):

- minimal: the naive bare-PyTorch loop: encoder -> (mean, logvar), z = mean + exp(logvar/2) eps,
  decoder logits, ``binary_cross_entropy_with_logits`` summed per image + closed-form KL,
  batch mean; ``zero_grad``, ``backward``, ``torch.optim.Adam`` (defaults: no fused/foreach
  on CPU). No EMA, no logging, no finiteness check.
- energyvae: ``Trainer.train_step(x)`` of a model built from a config dict
  (``energyvae.config.build_config`` -> ``energyvae.runs.prepare`` / ``build_model`` ->
  ``energyvae.train.Trainer``, as in benchmarks/envae_speed.py), with ``train.ema: 0.999`` as
  the shipped configs use: forward, the device-side finiteness flag, backward, fused Adam, the device-side log sums, the foreach EMA update.
  Not timed: the ``fit`` loop around it (batch indexing and preprocessing, progress bar,
  metrics/eval/checkpoint steps).
- pythae: ``pythae.models.VAE`` (``VAEConfig(reconstruction_loss="bce")``) with custom
  ``BaseEncoder``/``BaseDecoder`` wrapping the same nets (benchmarks/pythae_nets.py; the decoder
  applies a sigmoid since pythae's BCE takes probabilities). Timed: the body of pythae's
  ``BaseTrainer.train_step`` loop for one batch: ``model(DatasetOutput(data=x), epoch=...,
  dataset_size=..., uses_ddp=False)`` inside its (CPU: null) amp context, then
  ``_optimizers_step`` (``zero_grad``, ``loss.backward()``, ``Adam.step()``), then
  ``loss.item()`` and its NaN check. Not timed: the DataLoader (collation into DatasetOutput),
  the per-step callbacks (progress bar), the per-epoch ``model.train()``/``model.update()``.

Nets: MLP 784-512-512-16 (energyvae ``mlp``, hidden [512, 512], its default activation, which
is ELU: ``MLPParams.activation`` in energyvae/nets/mlp.py; ``--mlp-activation`` changes it for
all three) and the conv VAE of configs/fashion_vae.yaml (``conv`` 32-64-128, latent 32,
ReLU), replicated layer by layer for the minimal loop and pythae; the script asserts equal
parameter shapes and counts, copies energyvae's initial weights into both replicas, checks that
the replica nets compute the same outputs and that the three losses agree on the first batch
under the same random seed. Batch sizes 64, 128, 1024.

Timing is interleaved: after warm-up steps, each round draws one batch per (net, batch size)
and runs every implementation for ``--steps-per-round`` steps on it, in round-robin order that
alternates between rounds, so slow drifts of a shared machine hit all alike; a row gives the
median (IQR) over all timed steps. FLOPs of one training step (forward + backward; the optimizer
and EMA are elementwise and not counted) are counted with ``torch.utils.flop_counter
.FlopCounterMode`` on the minimal loop's step (the same nets: the same count for all three);
achieved GFLOP/s = FLOPs / median step time, compared with this machine's 1-thread float32
matmul rate, a 1024x1024x1024 ``torch.mm`` timed in every round of the same run.

Part 2, threads under load. The script starts a concurrent CPU load itself
(``--load-procs`` busy-loop Python processes, default: usable cores - 1, i.e. "the other cores
are busy") and stops it at the end, also on error or SIGTERM. It then runs the CLI,
``energyvae train --config configs/digits_vae.yaml`` and ``configs/fashion_binarized_mlp.yaml``,
for ``--thread-steps`` steps with cheap evaluation (``eval.iw_samples=0``, one validation
batch, small sample grids, no intermediate checkpoints), twice per round in alternating order:
with default threads (the subprocess environment has no OMP_NUM_THREADS, MKL_NUM_THREADS,
OPENBLAS_NUM_THREADS or OMP_WAIT_POLICY, and no ``train.threads``), with 1 thread, and as
before ``train.threads`` existed (every usable core, ``OMP_WAIT_POLICY=ACTIVE``: OpenMP's
spin-waiting); first under the load, then (the load stopped) without. ``--quick`` runs the digits config only.
The step time is the median ``sec_per_step`` of the run's metrics.jsonl "train" records after
the first (each record averages ``log_every`` steps); the process wall time is recorded too.
The 1-thread run passes ``train.threads=1`` when energyvae's TrainConfig has that field, and
falls back to ``OMP_NUM_THREADS=1`` in the environment otherwise (``ONE_THREAD_VIA`` below, or
``--one-thread-via``, switches between the two).

pythae is never a dependency of energyvae: the script installs it into its own folder,
``<work>/pythae_site`` (default work folder ``runs/bench_speed/``, git-ignored) with
``pip install --no-deps --target``: pythae 0.1.2 plus those of its pure-Python requirements
that .venv lacks (pinned in ``PYTHAE_PACKAGES``: pydantic 2 with pydantic-core,
annotated-types, typing-inspection, and imageio); cloudpickle, numpy, scikit-learn, scipy,
torch, tqdm and typing-extensions are used from .venv and are never installed or upgraded
(everything is installed with ``--no-deps``; the backport ``dataclasses`` is skipped, it would
shadow the standard library). The script then runs itself again with that folder first on
PYTHONPATH (``relaunch_with_site``; it never edits ``sys.path``), and imports pythae. pythae 0.1.2
imports and runs against torch 2.13 / numpy 2.4 / pydantic 2.14 as they are: no fix (older
pydantic, patch) was needed.

    python -m benchmarks.speed                                 # full: 10 + 3 rounds, batch 64 128 1024
    python -m benchmarks.speed --quick --out /tmp/speed_smoke  # smoke test (1 round, batch 64)
    python -m benchmarks.speed --skip-threads --batch-sizes 128 --rounds 5
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import importlib.metadata
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

if not __package__:  # started as a file, python benchmarks/NAME.py: rerun as python -m benchmarks.NAME
    import _as_module  # noqa: F401  (benchmarks/_as_module.py; it does not return)
from benchmarks import pythae_nets  # noqa: E402
from benchmarks.common import ROOT, command, slug  # noqa: E402
from energyvae.config import TrainConfig, build_config  # noqa: E402
from energyvae.models import build_model  # noqa: E402
from energyvae.nets.mlp import MLPParams  # noqa: E402
from energyvae.runs import prepare  # noqa: E402
from energyvae.train import Trainer  # noqa: E402

# How the 1-thread CLI run gets its thread count: "auto" = ``train.threads=1`` when energyvae's
# TrainConfig has that field, else OMP_NUM_THREADS=1 in its environment; "config" / "env" force one.
ONE_THREAD_VIA = "auto"

# pythae and those of its requirements that .venv may lack, pinned; all installed --no-deps.
PYTHAE_PACKAGES = {"pythae": "0.1.2", "pydantic": "2.14.4", "pydantic-core": "2.50.5",
                   "annotated-types": "0.8.0", "typing-inspection": "0.4.5", "imageio": "2.38.2"}
PYTHAE_FROM_VENV = ("cloudpickle", "numpy", "scikit-learn", "scipy", "torch", "tqdm", "typing-extensions")
NEVER_INSTALL = ("torch", "numpy")

# removed from every CLI run's environment (the 1-thread run via "env" sets the first three to 1)
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY")
THREAD_CASES = [("digits MLP VAE", "configs/digits_vae.yaml", []),
                ("Fashion MLP VAE", "configs/fashion_binarized_mlp.yaml", ["train.epochs=null"])]
MATMUL_N = 1024
# Set in the process that install_pythae relaunched with pythae's folder on PYTHONPATH: the install
# record and the caller's PYTHONPATH (given back to the subprocesses this script starts).
RELAUNCHED = "ENERGYVAE_BENCH_SPEED_PYTHAE"


# -- pythae in its own folder ---------------------------------------------------------------
def _venv_has(dist: str) -> bool:
    try:
        importlib.metadata.version(dist)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def install_pythae(work: Path, log=print) -> dict:
    """Install pythae 0.1.2 (and what .venv lacks of its requirements) into ``work/pythae_site``
    with ``pip --no-deps --target`` (or reuse that install), then run this same command again
    with the folder first on PYTHONPATH (:func:`relaunch_with_site`: this process does not come
    back from here). In that second process: check the install, import pythae from the folder
    and return the install record."""
    site = (work / "pythae_site").resolve()
    handed = os.environ.pop(RELAUNCHED, None)
    if handed is None:
        relaunch_with_site(site, pip_install_pythae(site, log))
    info, pythonpath = json.loads(handed)
    if pythonpath is None:           # the CPU load and the CLI runs get the caller's PYTHONPATH back
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = pythonpath
    for name in NEVER_INSTALL:
        assert not (site / name).exists(), f"{site / name}: pip must not install {name} here"
    import pydantic
    import pythae.models  # noqa: F401
    version = importlib.metadata.version("pythae")
    info.update(pythae=version, pydantic=pydantic.VERSION, site=str(site))
    assert version == PYTHAE_PACKAGES["pythae"], version
    assert Path(pythae.__file__).resolve().is_relative_to(site), f"pythae must come from {site}"
    assert not Path(torch.__file__).resolve().is_relative_to(site), "torch must come from .venv"
    return info


def relaunch_with_site(site: Path, info: dict):
    """Replace this process by the same command (same interpreter, options, arguments, working
    directory) with ``site`` first on PYTHONPATH, so that the interpreter itself puts it on
    sys.path ahead of .venv's site-packages: pythae and the pinned packages beside it import
    from there, torch and the rest from .venv. ``info`` (the install record) and the caller's
    PYTHONPATH travel in the environment variable RELAUNCHED."""
    env = dict(os.environ)
    caller = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join([str(site), *([caller] if caller else [])])
    env[RELAUNCHED] = json.dumps([info, caller])
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def pip_install_pythae(site: Path, log=print) -> dict:
    """pip-install pythae and the pinned packages that .venv lacks into ``site``, unless an
    earlier run did (its record ``bench_install.json`` is there); returns the record."""
    marker = site / "bench_install.json"
    missing = [d for d in PYTHAE_FROM_VENV if not _venv_has(d)]
    if missing:
        raise RuntimeError(f"pythae needs {', '.join(missing)} from .venv (this script installs no "
                           f"torch/numpy/scipy/...): pip install them into .venv first")
    if marker.exists() and json.loads(marker.read_text()).get("packages") is not None:
        info = json.loads(marker.read_text())
        info["reused"] = True
    else:
        wanted = [f"{name}=={ver}" for name, ver in PYTHAE_PACKAGES.items()
                  if name == "pythae" or not _venv_has(name)]
        assert not any(w.split("==")[0] in NEVER_INSTALL for w in wanted)
        if site.exists():
            shutil.rmtree(site)
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile",
               "--disable-pip-version-check", "--target", str(site), *wanted]
        log("installing pythae: " + " ".join(cmd[2:]))
        try:
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        except subprocess.CalledProcessError as e:
            raise SystemExit(f"installing pythae failed (exit {e.returncode}; is PyPI reachable?); "
                             f"rerun with --skip-pythae to time the other two only") from None
        info = {"packages": wanted, "command": " ".join(["python", *cmd[1:]]).replace(str(ROOT) + "/", ""),
                "reused": False}
        marker.write_text(json.dumps(info, indent=2))
    return info


# -- the three implementations --------------------------------------------------------------
def energyvae_config(arch: str, batch_size: int, seed: int, run_dir: Path, activation: str) -> dict:
    if arch == "mlp":
        net = {"name": "mlp", "hidden": [512, 512], "activation": activation}
        model = {"latent_dim": 16, "encoder": dict(net), "decoder": dict(net),
                 "reconstruction": {"name": "bernoulli"}}
        data = {"name": "fashion-mnist", "scale": "01"}
        ema, lr = 0.999, 1e-3
    else:                                        # the model section of configs/fashion_vae.yaml
        shipped = yaml.safe_load((ROOT / "configs" / "fashion_vae.yaml").read_text())
        model, data = shipped["model"], shipped["data"]
        ema, lr = shipped["train"]["ema"], shipped["train"]["lr"]
    train = {"steps": 10 ** 6, "batch_size": batch_size, "lr": lr, "ema": ema, "seed": seed,
             "progress": False, "device": "cpu"}
    if "threads" in {f.name for f in dataclasses.fields(TrainConfig)}:
        train["threads"] = 1                     # the benchmark's 1 thread, whatever the default
    return {"run": {"dir": str(run_dir)}, "data": data, "model": model, "train": train}


class Minimal:
    """The naive bare-PyTorch VAE loop."""

    def __init__(self, enc, dec, lr):
        self.enc, self.dec = enc.train(), dec.train()
        self.opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=lr)

    def loss(self, x):
        mean, logvar = self.enc(x).chunk(2, dim=-1)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        logits = self.dec(z)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        kl = -0.5 * (1 + logvar - mean.pow(2) - logvar.exp()).sum(1)
        return (recon + kl).mean()

    def step(self, x):
        self.opt.zero_grad()
        loss = self.loss(x)
        loss.backward()
        self.opt.step()


class Pythae:
    """pythae's VAE stepped as its BaseTrainer.train_step does for one batch."""

    def __init__(self, model, lr, dataset_size):
        from pythae.data.datasets import DatasetOutput
        self.DatasetOutput, self.model, self.n = DatasetOutput, model.train(), dataset_size
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)   # BaseTrainer.set_optimizer

    def loss(self, x):
        return self.model(self.DatasetOutput(data=x), epoch=1, dataset_size=self.n, uses_ddp=False).loss

    def step(self, x):
        inputs = self.DatasetOutput(data=x)
        with contextlib.nullcontext():           # BaseTrainer.amp_context without amp
            out = self.model(inputs, epoch=1, dataset_size=self.n, uses_ddp=False)
        loss = out.loss                          # BaseTrainer._optimizers_step
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        value = out.loss.item()
        if value != value:
            raise ArithmeticError("NaN detected in train loss")


class EnergyVAE:
    def __init__(self, trainer):
        self.trainer = trainer

    def step(self, x):
        t = self.trainer
        before = t.step
        t.train_step(x)
        if t.step == before:                     # the loop in fit() advances the step counter
            t.step += 1


def step_flops(minimal: Minimal, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    enc, dec = copy.deepcopy(minimal.enc), copy.deepcopy(minimal.dec)
    m = Minimal.__new__(Minimal)
    m.enc, m.dec = enc, dec
    with FlopCounterMode(display=False) as fc:
        m.loss(x).backward()
    return fc.get_total_flops()


def time_matmul(a, b, c, reps: int = 5) -> float:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b, out=c)
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def q(v: list[float]) -> tuple[float, float, float]:
    v = sorted(v)
    if len(v) < 2:
        return v[0], v[0], v[0]
    qs = statistics.quantiles(v, n=4, method="inclusive")
    return statistics.median(v), qs[0], qs[2]


def part_step_time(args, work: Path, log=print) -> dict:
    torch.set_num_threads(1)
    data = None
    groups = []
    g = torch.Generator().manual_seed(args.seed)
    for arch in ("mlp", "conv"):
        for bs in args.batch_sizes:
            cfg = build_config(energyvae_config(arch, bs, args.seed, work / "inproc" / f"{arch}_b{bs}",
                                                args.mlp_activation))
            if data is None:
                data, model = prepare(cfg)
            else:                                # same data; initial weights from the seed only
                torch.manual_seed(cfg.train.seed)
                model = build_model(cfg.model, data.shape, data.kind, data.preprocess.value_range)
            trainer = Trainer(cfg, model, data)
            shape = tuple(data.shape)
            spec = cfg.raw["model"]
            if arch == "mlp":
                nets = lambda: pythae_nets.mlp_nets(shape, spec["latent_dim"], spec["encoder"]["hidden"],
                                                    spec["encoder"]["activation"])
            else:
                nets = lambda: pythae_nets.conv_nets(shape, spec["latent_dim"], spec["encoder"]["channels"],
                                                     spec["encoder"].get("activation", "relu"))
            x0 = data.preprocess(data.train.x[torch.randint(len(data.train), (bs,), generator=g)])
            z0 = torch.randn(bs, spec["latent_dim"], generator=g)
            impls = {}
            enc, dec = nets()
            for what, src, dst, inp in (("encoder", model.encoder, enc, x0), ("decoder", model.decoder, dec, z0)):
                pythae_nets.copy_weights(src, dst, f"{arch} {what}")
                pythae_nets.check_same_function(src, dst, inp, f"{arch} {what}")
            minimal = Minimal(enc, dec, cfg.train.lr)
            impls["minimal"] = minimal
            impls["energyvae"] = EnergyVAE(trainer)
            n_e = pythae_nets.n_params(model)
            counts = {"minimal": pythae_nets.n_params(enc, dec), "energyvae": n_e}
            if not args.skip_pythae:
                penc, pdec = nets()
                pythae_nets.copy_weights(model.encoder, penc, f"{arch} encoder (pythae)")
                pythae_nets.copy_weights(model.decoder, pdec, f"{arch} decoder (pythae)")
                pmodel = pythae_nets.pythae_vae(penc, pdec, shape, spec["latent_dim"])
                impls["pythae"] = Pythae(pmodel, cfg.train.lr, len(data.train))
                counts["pythae"] = pythae_nets.n_params(pmodel)
            assert len(set(counts.values())) == 1, f"{arch}: parameter counts differ: {counts}"
            # the same loss on the same batch under the same seed (before any step)
            losses = {}
            with torch.no_grad():
                for name, impl in impls.items():
                    with torch.random.fork_rng():
                        torch.manual_seed(1234)
                        if name == "energyvae":
                            losses[name] = float(trainer.model("vae", x0, {})[0])
                        else:
                            losses[name] = float(impl.loss(x0))
            spread = (max(losses.values()) - min(losses.values())) / abs(losses["minimal"])
            assert spread < 1e-3, f"{arch} b{bs}: first-batch losses disagree: {losses}"
            flops = step_flops(minimal, x0)
            groups.append({"arch": arch, "batch": bs, "impls": impls, "x0": x0, "params": n_e,
                           "losses": losses, "loss_spread": spread, "flops": flops,
                           "times": {k: [] for k in impls}, "cpu": {k: [] for k in impls}})
            log(f"{arch} batch {bs}: {n_e} parameters in each implementation, first-batch losses "
                + ", ".join(f"{k} {v:.4f}" for k, v in losses.items())
                + f"; {flops / 1e9:.3f} GFLOP per step")
    torch.set_num_threads(1)                     # whatever a Trainer may have set
    threads = torch.get_num_threads()
    assert threads == 1, threads

    a, b, c = (torch.randn(MATMUL_N, MATMUL_N) for _ in range(3))
    time_matmul(a, b, c, 2)
    mm_times = []
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    for grp in groups:                           # warm-up, untimed
        for impl in grp["impls"].values():
            for _ in range(args.warmup):
                impl.step(grp["x0"])
    for r in range(args.rounds):
        for gi, grp in enumerate(groups):
            x = data.preprocess(data.train.x[torch.randint(len(data.train), (grp["batch"],), generator=g)])
            names = list(grp["impls"])
            if (r + gi) % 2:
                names.reverse()
            for name in names:
                impl = grp["impls"][name]
                for _ in range(args.steps_per_round):
                    t, cp = time.perf_counter(), time.process_time()
                    impl.step(x)
                    grp["times"][name].append(time.perf_counter() - t)
                    grp["cpu"][name].append(time.process_time() - cp)
            mm_times.append(time_matmul(a, b, c))
        log(f"round {r + 1}/{args.rounds}: " + "; ".join(
            f"{grp['arch']} b{grp['batch']} " + " ".join(
                f"{k} {statistics.median(v) * 1e3:.2f}" for k, v in grp["times"].items())
            for grp in groups) + " ms")
    seconds = time.perf_counter() - t_start
    load_after = os.getloadavg()
    mm = statistics.median(mm_times)
    mm_rate = 2 * MATMUL_N ** 3 / mm / 1e9
    rows = []
    for grp in groups:
        med = {k: statistics.median(v) for k, v in grp["times"].items()}
        for name, v in grp["times"].items():
            m, q1, q3 = q(v)
            gflops = grp["flops"] / m / 1e9
            rows.append({"net": grp["arch"], "batch": grp["batch"], "implementation": name,
                         "parameters": grp["params"], "median_ms": m * 1e3, "q1_ms": q1 * 1e3,
                         "q3_ms": q3 * 1e3, "median_cpu_ms": statistics.median(grp["cpu"][name]) * 1e3,
                         "vs_pythae": m / med["pythae"] if "pythae" in med else None,
                         "vs_minimal": m / med["minimal"], "gflop_per_step": grp["flops"] / 1e9,
                         "gflops": gflops, "matmul_share": gflops / mm_rate, "n": len(v),
                         "times_s": v})
    return {"rows": rows, "matmul_ms": mm * 1e3, "matmul_gflops": mm_rate,
            "matmul_ms_all": [t * 1e3 for t in mm_times], "threads": threads,
            "load_before": load_before, "load_after": load_after, "seconds": seconds,
            "checks": [{"net": g_["arch"], "batch": g_["batch"], "parameters": g_["params"],
                        "first_batch_losses": g_["losses"], "relative_spread": g_["loss_spread"]}
                       for g_ in groups]}


# -- part 2: default threads vs 1 thread, with and without a concurrent load ------------------
class CPULoad:
    """``n`` busy-loop Python processes, started by ``start`` and always stopped by ``stop``."""

    def __init__(self, n: int):
        self.n, self.procs = n, []

    def start(self):
        env = {k: v for k, v in os.environ.items()}
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], env=env,
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
                      for _ in range(self.n)]

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []


def one_thread_via(choice: str) -> str:
    if choice == "auto":
        return "config" if "threads" in {f.name for f in dataclasses.fields(TrainConfig)} else "env"
    return choice


def energyvae_cli() -> list[str]:
    exe = Path(sys.executable).parent / "energyvae"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "energyvae"]


def default_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in THREAD_ENV_VARS}


def run_cli(config: str, extra: list[str], run_dir: Path, mode: str, via: str, steps: int,
            timeout: float) -> dict:
    if run_dir.exists():
        shutil.rmtree(run_dir)
    log_every = max(1, steps // 10)
    overrides = [*extra, f"train.steps={steps}", f"train.log_every={log_every}",
                 f"train.eval_every={steps}", f"train.checkpoint_every={steps}", "train.eval_batches=1",
                 "train.progress=false", "eval.iw_samples=0", "eval.n_samples=4",
                 "eval.n_reconstructions=4", f"run.dir={run_dir}"]
    env = default_env()
    if mode == OLD_DEFAULT:               # before train.threads: every core, OpenMP spin-waiting
        overrides.append(f"train.threads={usable_cpus()}")
        env["OMP_WAIT_POLICY"] = "ACTIVE"
    if mode == "1 thread":
        if via == "config":
            overrides.append("train.threads=1")
        else:
            env.update({k: "1" for k in THREAD_ENV_VARS[:3]})
    cmd = [*energyvae_cli(), "train", "--config", str(ROOT / config), *overrides]
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        rc, err = proc.returncode, proc.stderr[-2000:]
    except subprocess.TimeoutExpired:
        rc, err = "timeout", f"killed after {timeout:.0f} s"
    wall = time.perf_counter() - t
    recs = []
    if (run_dir / "metrics.jsonl").exists():
        recs = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    sps = [r["sec_per_step"] for r in recs if r.get("split") == "train" and "sec_per_step" in r]
    return {"rc": rc, "wall_s": wall, "sec_per_step": sps[1:] if len(sps) > 1 else sps,
            "median_ms": statistics.median(sps[1:] if len(sps) > 1 else sps) * 1e3 if sps else math.nan,
            "stderr_tail": err if rc != 0 else "", "command": " ".join(cmd[1:]).replace(str(ROOT) + "/", "")}


def default_torch_threads() -> int:
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                         env=default_env(), capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


OLD_DEFAULT = "all cores, spin-wait"


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def part_threads(args, work: Path, log=print) -> dict:
    via = one_thread_via(args.one_thread_via)
    usable = usable_cpus()
    n_load = args.load_procs if args.load_procs is not None else max(1, usable - 1)
    load = CPULoad(n_load)
    results = {"via": via, "load_procs": n_load, "usable_cpus": usable, "steps": args.thread_steps,
               "default_torch_threads": default_torch_threads(), "cases": {}, "load_avg": {}}
    modes = ["default threads", "1 thread", OLD_DEFAULT]
    t0 = time.perf_counter()
    for phase in ("under load", "no load"):
        if phase == "under load":
            load.start()
            time.sleep(1.0)
        try:
            results["load_avg"][phase + " before"] = os.getloadavg()
            for r in range(args.thread_rounds):
                for name, config, extra in (THREAD_CASES[:1] if args.quick else THREAD_CASES):
                    case = results["cases"].setdefault(name, {"config": config, "runs": {}})
                    for mode in (modes if r % 2 == 0 else modes[::-1]):
                        run_dir = work / "threads" / f"{slug(name)}_{slug(phase)}_" \
                                                     f"{slug(mode)}_r{r}"
                        res = run_cli(config, extra, run_dir, mode, via, args.thread_steps, args.thread_timeout)
                        case["runs"].setdefault(f"{phase} / {mode}", []).append(res)
                        log(f"threads {phase}, round {r + 1}, {name}, {mode}: {res['median_ms']:.2f} ms/step, "
                            f"process {res['wall_s']:.1f} s" + (f" (exit {res['rc']})" if res["rc"] != 0 else ""))
                        if res["rc"] != 0:
                            log(res["stderr_tail"])
            results["load_avg"][phase + " after"] = os.getloadavg()
        finally:
            load.stop()
    results["seconds"] = time.perf_counter() - t0
    for case in results["cases"].values():
        summ = {}
        for key, runs in case["runs"].items():
            per_step = [v for r_ in runs for v in r_["sec_per_step"]]
            summ[key] = {"median_ms": statistics.median(per_step) * 1e3 if per_step else math.nan,
                         "wall_s": statistics.median([r_["wall_s"] for r_ in runs]),
                         "ok": all(r_["rc"] == 0 for r_ in runs)}
        for phase in ("under load", "no load"):
            d, o = summ.get(f"{phase} / default threads"), summ.get(f"{phase} / 1 thread")
            if d and o:
                summ[f"{phase} ratio"] = {"step": d["median_ms"] / o["median_ms"], "wall": d["wall_s"] / o["wall_s"]}
            old_ = summ.get(f"{phase} / {OLD_DEFAULT}")
            if old_ and o:
                summ[f"{phase} old ratio"] = old_["median_ms"] / o["median_ms"]
        case["summary"] = summ
    return results


# -- report ---------------------------------------------------------------------------------
def fmt(v, spec=".2f"):
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def report(args, res: dict, wall: float) -> list[str]:
    st, th, inst = res.get("step_time"), res.get("threads"), res.get("pythae_install")
    lines = ["# Training-step speed on CPU: energyvae vs a minimal loop vs pythae; threads under load", "",
             f"- command: `{command()}`".replace(str(ROOT) + "/", ""),
             f"- machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), torch {torch.__version__}, CPU"
             + (f"; pythae {inst['pythae']} (pydantic {inst['pydantic']}) from `{Path(inst['site']).relative_to(ROOT) if Path(inst['site']).is_relative_to(ROOT) else inst['site']}`" if inst else ""),
             f"- seed {args.seed}; wall time of the benchmark {wall:.0f} s"]
    if inst:
        lines.append(f"- pythae installed by this script, never a dependency of energyvae: "
                     f"`{inst['command']}`" + (" (reused)" if inst.get("reused") else ""))
    if st:
        lines += ["", "## Step time, 1 torch thread, interleaved in one process", "",
                  f"- threads: `torch.set_num_threads(1)` (torch.get_num_threads() = {st['threads']}); "
                  f"budget: {args.warmup} warm-up step(s) per implementation, then {args.rounds} round(s) x "
                  f"{args.steps_per_round} step(s) per implementation and (net, batch), round-robin with the "
                  f"order alternating; median (IQR) over the timed steps",
                  f"- load average (1/5/15 min) before {'/'.join(f'{v:.1f}' for v in st['load_before'])}, "
                  f"after {'/'.join(f'{v:.1f}' for v in st['load_after'])}; timed part {st['seconds']:.0f} s",
                  f"- 1-thread float32 matmul rate ({MATMUL_N}x{MATMUL_N} @ {MATMUL_N}x{MATMUL_N}, "
                  f"`torch.mm`, timed every round): {st['matmul_gflops']:.1f} GFLOP/s "
                  f"(median {st['matmul_ms']:.2f} ms)",
                  "- data: Fashion-MNIST 1x28x28 grey levels in [0, 1] (energyvae.data.load_data), Bernoulli "
                  "cross-entropy on grey levels for all three; same nets (parameter shapes asserted equal), "
                  "same initial weights, same batches",
                  f"- nets: MLP 784-512-512-16 ({args.mlp_activation}, energyvae `mlp`) and the conv VAE of "
                  "configs/fashion_vae.yaml (32-64-128, latent 32, ReLU)",
                  "- minimal: bare PyTorch (reparameterise, BCE-with-logits + closed-form KL, Adam defaults). "
                  "energyvae: `Trainer.train_step` with `train.ema: 0.999` (forward, finiteness check, backward, "
                  "Adam, logs, EMA). pythae: the per-batch body of `BaseTrainer.train_step` (model forward in its "
                  "amp context, `_optimizers_step` = zero_grad/backward/Adam step, `loss.item()` + NaN check); not "
                  "its DataLoader, callbacks (progress bar) or per-epoch `model.update()`. Adam non-fused, "
                  "default (for-loop) implementation in all three",
                  "- GFLOP/step: forward + backward of one step counted by `torch.utils.flop_counter.FlopCounterMode` "
                  "on the minimal loop (optimizer/EMA not counted); GFLOP/s = that / median step time; "
                  "'of matmul' = its share of the matmul rate above",
                  "- first-batch loss check (same seed, before training): "
                  + "; ".join(f"{c['net']} b{c['batch']} rel. spread {c['relative_spread']:.1e}" for c in st["checks"]),
                  "",
                  "Ratios are this row's median over pythae's / the minimal loop's at the same net and batch "
                  "(the energyvae rows give energyvae/pythae and energyvae/minimal).", "",
                  "| net | batch | implementation | parameters | median ms/step (IQR) "
                  "| / pythae | / minimal | GFLOP/step | GFLOP/s | of matmul |",
                  "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
        by = {(r["net"], r["batch"], r["implementation"]): r for r in st["rows"]}
        for r in st["rows"]:
            bold = "**" if r["implementation"] == "energyvae" else ""
            lines.append(f"| {r['net']} | {r['batch']} | {r['implementation']} | {r['parameters']:,} | "
                         f"{r['median_ms']:.2f} ({r['q1_ms']:.2f}-{r['q3_ms']:.2f}) | "
                         f"{bold}{fmt(r['vs_pythae'])}{bold} | {bold}{r['vs_minimal']:.2f}{bold} | "
                         f"{r['gflop_per_step']:.3f} | {r['gflops']:.1f} | {100 * r['matmul_share']:.0f} % |")
        tgt = []
        for net, limit in (("mlp", 0.75), ("conv", 0.9)):
            e = by.get((net, 128, "energyvae"))
            if e and e["vs_pythae"] is not None:
                tgt.append(f"energyvae/pythae {net} batch 128 = {e['vs_pythae']:.2f} (target <= {limit}: "
                           f"{'met' if e['vs_pythae'] <= limit else 'not met'})")
        worst = max((r for r in st["rows"] if r["implementation"] == "energyvae"), key=lambda r: r["vs_minimal"])
        tgt.append(f"energyvae/minimal at most {worst['vs_minimal']:.2f} ({worst['net']} batch {worst['batch']}; "
                   f"target <= 1.0: {'met' if worst['vs_minimal'] <= 1.0 else 'not met'})")
        lines += ["", "Issue 14 targets: " + "; ".join(tgt) + "."]
    if th:
        lines += ["", "## Default threads vs 1 thread, with and without a concurrent CPU load", "",
                  f"- load: {th['load_procs']} busy-loop Python process(es) (`python -c 'while True: pass'`) "
                  f"started and stopped by this script, {th['usable_cpus']} usable CPUs; default torch threads "
                  f"of a fresh process here: {th['default_torch_threads']}",
                  f"- runs: `energyvae train --config CONFIG train.steps={th['steps']} ...` (cheap eval: "
                  "eval.iw_samples=0, eval_batches=1, no intermediate checkpoints), default threads (no "
                  "OMP_NUM_THREADS/MKL_NUM_THREADS/OPENBLAS_NUM_THREADS/OMP_WAIT_POLICY in the environment, "
                  "no train.threads) and 1 thread ("
                  + ("`train.threads=1`" if th["via"] == "config" else
                     "OMP_NUM_THREADS=1 in the environment: energyvae has no `train.threads` yet")
                  + f"), alternating order, {args.thread_rounds} round(s); first under the load, then without",
                  "- ms/step: median `sec_per_step` of metrics.jsonl's train records after the first (each "
                  "averages log_every steps); process: median wall seconds of the whole `energyvae train` "
                  "(start-up, data, training, final evaluation and figures)",
                  "- load average (1/5/15 min): " + "; ".join(f"{k} {'/'.join(f'{v:.1f}' for v in val)}"
                                                            for k, val in th["load_avg"].items()),
                  f"- wall time of this part {th['seconds']:.0f} s", "",
                  f"- '{OLD_DEFAULT}' (the behaviour before `train.threads`): `train.threads=<usable CPUs>` "
                  "with `OMP_WAIT_POLICY=ACTIVE`", "",
                  "| run | load | default threads ms/step | 1 thread ms/step | default / 1 thread (step) "
                  f"| default s | 1 thread s | default / 1 thread (process) | {OLD_DEFAULT} ms/step | "
                  "its / 1 thread (step) |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, case in th["cases"].items():
            s = case["summary"]
            for phase in ("under load", "no load"):
                d, o = s.get(f"{phase} / default threads"), s.get(f"{phase} / 1 thread")
                ratio = s.get(f"{phase} ratio", {})
                if not d or not o:
                    continue
                flag = "" if d["ok"] and o["ok"] else " (a run failed: see speed.json)"
                old_ = s.get(f"{phase} / {OLD_DEFAULT}", {})
                lines.append(f"| {name} ({case['config']}){flag} | {phase} | {fmt(d['median_ms'])} | "
                             f"{fmt(o['median_ms'])} | {fmt(ratio.get('step'))} | {d['wall_s']:.1f} | "
                             f"{o['wall_s']:.1f} | {fmt(ratio.get('wall'))} | {fmt(old_.get('median_ms'))} | "
                             f"{fmt(s.get(f'{phase} old ratio'))} |")
        under = [c["summary"].get("under load ratio", {}).get("step") for c in th["cases"].values()]
        under = [u for u in under if u is not None and not math.isnan(u)]
        if under:
            lines += ["", f"Issue 14 target: default threads within 1.2x of 1 thread under load: worst "
                          f"{max(under):.2f} ({'met' if max(under) <= 1.2 else 'not met'})."]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 1 round, batch 64, 20-step CLI runs of the digits config only")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds of part 1 (default 10)")
    ap.add_argument("--steps-per-round", type=int, default=None, help="timed steps per implementation per round (3)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per implementation first")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default 64 128 1024")
    ap.add_argument("--mlp-activation", default=MLPParams().activation,
                    help="activation of the MLP in all three (default: energyvae mlp's default)")
    ap.add_argument("--skip-pythae", action="store_true", help="no pythae rows (nothing installed)")
    ap.add_argument("--skip-threads", action="store_true", help="no part 2 (threads under load)")
    ap.add_argument("--skip-step-time", action="store_true", help="no part 1")
    ap.add_argument("--thread-rounds", type=int, default=None, help="rounds of part 2 (default 3)")
    ap.add_argument("--thread-steps", type=int, default=None, help="train.steps of each CLI run (default 300)")
    ap.add_argument("--thread-timeout", type=float, default=1200.0, help="seconds before a CLI run is killed")
    ap.add_argument("--load-procs", type=int, default=None, help="busy-loop processes (default: usable CPUs - 1)")
    ap.add_argument("--one-thread-via", choices=["auto", "config", "env"], default=ONE_THREAD_VIA)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench_speed"), help="work folder (pythae, run folders)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="results folder")
    args = ap.parse_args()
    quick = args.quick
    args.rounds = args.rounds or (1 if quick else 10)
    args.steps_per_round = args.steps_per_round or (2 if quick else 3)
    args.batch_sizes = args.batch_sizes or ([64] if quick else [64, 128, 1024])
    args.thread_rounds = args.thread_rounds or (1 if quick else 3)
    args.thread_steps = args.thread_steps or (20 if quick else 300)
    if quick:
        args.warmup = min(args.warmup, 1)

    def on_term(signum, frame):                  # so that the finally clauses stop the load
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res: dict = {"args": vars(args), "torch": torch.__version__, "platform": platform.platform(),
                 "cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0))}
    if not args.skip_pythae and not args.skip_step_time:
        res["pythae_install"] = install_pythae(work)
    if not args.skip_step_time:
        res["step_time"] = part_step_time(args, work)
    if not args.skip_threads:
        res["threads"] = part_threads(args, work)
    lines = report(args, res, time.perf_counter() - t0)
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.md").write_text(text)
    (out / "speed.json").write_text(json.dumps(res, indent=2, default=str))
    print(f"written: {out / 'speed.md'}, {out / 'speed.json'}")


if __name__ == "__main__":
    main()
