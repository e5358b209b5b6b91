"""Benchmark: time per training step of EnVAE / FEnVAE / EC-VAE relative to the plain VAE
(papers 000 and 001).

Every variant is the same conv VAE (encoder/decoder channels 32-64-128, latent 32, the net of
``configs/fashion_vae.yaml``) on 28x28 Fashion-MNIST; only the reconstruction term changes:

- plain VAE: calibrated Gaussian decoder (one decoder pass),
- FEnVAE (``fast_energy_score``): three decoder passes (Eq. 14) or two (the bounded
  ``antithetic`` variant), batched into one call,
- EnVAE (``energy_score``) with M samples (default M in {2, 10, 50, 100}): M decoder passes, in
  calls of ``decode_chunk`` samples (automatic: at most 320 latents per call on CPU), plus the
  float64 Gram-form pairwise term,
- EC-VAE (paper 001): the model of ``--ec-config`` (default ``configs/ecvae_fashion_cpu.yaml``:
  the same VAE with a Bernoulli decoder plus the ``ec`` calibrator, whose step also decodes a
  batch from the prior, runs a 15-step Langevin chain through the energy net and updates it).
  Its step is not a count of decoder passes, so its prediction columns are empty.

Models and optimizers come from the library (config -> ``prepare`` -> ``Trainer``) and each
timed step is ``Trainer.train_step`` on a preprocessed batch (forward, backward, Adam step).
The variants are timed *interleaved*: each round runs every variant for a few steps on the same
batch, in round-robin order, so slow drifts of the machine hit all variants alike; the table
gives the median step time per variant and its ratio to the plain VAE. Both wall time and the
process's CPU time (all threads) are recorded: on a shared machine other jobs inflate the wall
time, less so the CPU time; the load average before and after the run is written down.

Counting model for the predicted ratio: a step costs (forward + backward) of 1 encoder pass and
N decoder passes on a batch of B, backward ~ 2 x forward, so cost ~ 3 (E + N D) with E, D the
encoder and decoder forward costs; ratio to the plain VAE (N = 1) = (E + N D) / (E + D).
Three versions: E = D (mirror nets); E, D weighted by their forward FLOPs counted with
``torch.utils.flop_counter``; and E, D replaced by the measured forward + backward times of the
encoder and of the decoder alone on one batch of B (timed in the same rounds). Not counted: the
loss itself (EnVAE's pairwise distances are O(B M^2 n)), the optimizer step, overheads, and the
change in per-image speed when the decoder runs on more latents per call than B.

    python -m benchmarks.envae_speed --threads 1         # default: 6 rounds x 2 steps, batch 64, M 2 10 50 100
    python -m benchmarks.envae_speed --rounds 8 --batch-size 128 --threads 1
    python -m benchmarks.envae_speed --rounds 1 --samples 2 3 --out /tmp/envae_speed_smoke.md   # smoke test
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

if not __package__:  # started as a file, python benchmarks/NAME.py: rerun as python -m benchmarks.NAME
    import _as_module  # noqa: F401  (benchmarks/_as_module.py; it does not return)
from benchmarks.common import ROOT, command  # noqa: E402
from energyvae.config import build_config, load_config  # noqa: E402
from energyvae.models import build_model  # noqa: E402
from energyvae.runs import prepare  # noqa: E402
from energyvae.train import Trainer  # noqa: E402

FASHION = Path("/usr/share/datasets/fashion-mnist")
NET = {"latent_dim": 32, "encoder": {"name": "conv", "channels": [32, 64, 128]},
       "decoder": {"name": "conv", "channels": [32, 64, 128]}}


def variants(samples: list[int], ec_config: str | None = None) -> list[tuple[str, dict | str, int | None]]:
    """(label, reconstruction spec or config path, decoder passes per step; None: not a pass count)."""
    out = [("plain VAE (gaussian, calibrated)", {"name": "gaussian", "scale": "calibrated"}, 1),
           ("FEnVAE Eq. 14 (fast_energy_score, single)", {"name": "fast_energy_score", "variant": "single"}, 3),
           ("FEnVAE antithetic (fast_energy_score)", {"name": "fast_energy_score", "variant": "antithetic"}, 2)]
    out += [(f"EnVAE M={m} (energy_score)", {"name": "energy_score", "samples": m}, m) for m in samples]
    if ec_config:
        out.append((f"EC-VAE ({ec_config})", ec_config, None))
    return out


def forward_flops(module: torch.nn.Module, inp: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        module(inp)
    return fc.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6, help="round-robin rounds over the variants")
    ap.add_argument("--steps-per-round", type=int, default=2, help="timed steps per variant per round")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per variant before round 1")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--samples", type=int, nargs="+", default=[2, 10, 50, 100], help="EnVAE's M values")
    ap.add_argument("--ec-config", default="configs/ecvae_fashion_cpu.yaml",
                    help="config of the EC-VAE row (relative to the repository; 'none': no EC-VAE row)")
    ap.add_argument("--dataset", default="auto", help="auto: fashion-mnist if installed, else digits")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads (default: torch's choice); on a machine shared with "
                         "other jobs, 1 avoids multi-thread barrier stalls that swamp small steps")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "envae_speed.md"),
                    help="markdown table to write (a smoke run should write elsewhere, e.g. /tmp)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    dataset, note = args.dataset, ""
    if dataset == "auto":
        dataset = "fashion-mnist" if FASHION.is_dir() else "digits"
        if dataset == "digits":
            note = f"{FASHION} not found: 8x8 digits instead of 28x28 Fashion-MNIST"
    t_start = time.perf_counter()
    tmp = tempfile.TemporaryDirectory()
    specs, data = [], None
    ec_config = None if args.ec_config.lower() == "none" else args.ec_config
    train = {"steps": 10 ** 6, "batch_size": args.batch_size, "lr": 1e-3, "ema": 0.0,
             "seed": args.seed, "progress": False, "device": "cpu"}
    for i, (label, recon, passes) in enumerate(variants(args.samples, ec_config)):
        run_dir = os.path.join(tmp.name, f"v{i}")
        if isinstance(recon, str):              # a whole config (EC-VAE): same data, batch, seed
            cfg = load_config(ROOT / recon, [f"run.dir={run_dir}", f"data.name={dataset}", "train.epochs=null"]
                              + [f"train.{k}={v}" for k, v in train.items()])
        else:
            cfg = build_config({
                "run": {"dir": run_dir},
                "data": {"name": dataset, "scale": "01"},
                "model": {**NET, "reconstruction": recon},
                "train": train,
            })
        if data is None:
            data, model = prepare(cfg)
        else:                                    # same data; same initial weights (same seed)
            torch.manual_seed(cfg.train.seed)
            model = build_model(cfg.model, data.shape, data.kind, data.preprocess.value_range)
        specs.append((label, passes, Trainer(cfg, model, data)))

    # one fixed batch per round, shared by all variants
    g = torch.Generator().manual_seed(args.seed)
    n_train = len(data.train)

    def batch():
        return data.preprocess(data.train.x[torch.randint(n_train, (args.batch_size,), generator=g)])

    x0 = batch()
    model0 = specs[0][2].model
    e_flops = forward_flops(model0.encoder, x0)
    d_flops = forward_flops(model0.decoder, torch.zeros(args.batch_size, NET["latent_dim"]))

    load_before = os.getloadavg()
    times: dict[str, list[float]] = {label: [] for label, _, _ in specs}
    pass_times: dict[str, list[float]] = {"encoder": [], "decoder": []}
    z0 = torch.randn(args.batch_size, NET["latent_dim"])

    def time_pass(net, inp):
        t = time.perf_counter()
        net(inp).sum().backward()
        out = time.perf_counter() - t
        net.zero_grad(set_to_none=True)
        return out
    cpu: dict[str, list[float]] = {label: [] for label, _, _ in specs}
    for label, _, trainer in specs:
        for _ in range(args.warmup):
            trainer.train_step(x0)
            trainer.step += 1
    for r in range(args.rounds):
        x = batch()
        order = specs if r % 2 == 0 else specs[::-1]     # alternate the order as well
        for label, _, trainer in order:
            for _ in range(args.steps_per_round):
                t, c = time.perf_counter(), time.process_time()
                trainer.train_step(x)
                times[label].append(time.perf_counter() - t)
                cpu[label].append(time.process_time() - c)
                trainer.step += 1
        for _ in range(args.steps_per_round):
            pass_times["encoder"].append(time_pass(model0.encoder, x))
            pass_times["decoder"].append(time_pass(model0.decoder, z0))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{label.split(' (')[0]} {statistics.median(v):.3f}s" for label, v in times.items()), flush=True)

    load_after = os.getloadavg()
    base = statistics.median(times[specs[0][0]])
    base_cpu = statistics.median(cpu[specs[0][0]])
    ratio_flops = lambda n: (e_flops + n * d_flops) / (e_flops + d_flops)
    t_e, t_d = statistics.median(pass_times["encoder"]), statistics.median(pass_times["decoder"])
    ratio_timed = lambda n: (t_e + n * t_d) / (t_e + t_d)
    lines = [f"# EnVAE / FEnVAE / EC-VAE training-step cost relative to a plain VAE", "",
             f"- command: `{command()}`",
             f"- machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, torch {torch.__version__}, CPU",
             f"- data: {dataset} {tuple(data.shape)}" + (f" ({note})" if note else "")
             + f"; batch {args.batch_size}; seed {args.seed}",
             f"- net: conv encoder/decoder, channels 32-64-128, latent 32 (configs/fashion_vae.yaml); "
             f"forward FLOPs per batch: encoder {e_flops / 1e9:.3f} G, decoder {d_flops / 1e9:.3f} G",
             f"- timing: `Trainer.train_step` (forward + backward + Adam), {args.warmup} warm-up step(s) "
             f"per variant, then {args.rounds} interleaved rounds x {args.steps_per_round} steps "
             f"(round-robin, order alternating); median over the {args.rounds * args.steps_per_round} "
             f"timed steps per variant",
             "- EnVAE decodes its M x B latents in calls of `decode_chunk` samples (automatic: at most "
             "320 latents per call on CPU) and computes the pairwise term in the float64 Gram form "
             "(energyvae/models/reconstruction/energy_score.py)" + (
                 f"; EC-VAE: `{ec_config}` with the data, batch, seed and optimizer settings above "
                 "(Bernoulli decoder, plus the prior decode, Langevin chain and energy update of the "
                 "`ec` calibrator: no pass-count prediction)" if ec_config else ""),
             "- predicted ratio: step cost ~ 3 (E + N D) (1 encoder + N decoder passes, backward ~ 2x "
             "forward), ratio = (E + N D) / (E + D); 'equal' takes E = D, 'FLOPs' weights E and D "
             "by their counted forward FLOPs, 'timed' by the measured forward + backward time of the "
             f"encoder ({t_e * 1e3:.1f} ms) and of the decoder ({t_d * 1e3:.1f} ms) alone on one batch. "
             "The loss (EnVAE pairwise term), optimizer, overheads and batch-size effects "
             "(EnVAE's decoder runs on up to 320 latents per call, not B) are not counted.",
             f"- load average (1/5/15 min) before timing {'/'.join(f'{v:.1f}' for v in load_before)}, "
             f"after {'/'.join(f'{v:.1f}' for v in load_after)} (other jobs share the machine when "
             f"it exceeds the {os.cpu_count()} CPUs)",
             f"- wall time of the benchmark: {time.perf_counter() - t_start:.0f} s", "",
             "| variant | decoder passes | median wall s/step (IQR) | wall ratio | median CPU s/step | CPU ratio "
             "| predicted (E = D) | predicted (FLOPs) | predicted (timed) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, passes, _ in specs:
        v = sorted(times[label])
        q1, q3 = (statistics.quantiles(v, n=4)[0], statistics.quantiles(v, n=4)[2]) if len(v) > 1 else (v[0], v[0])
        med = statistics.median(v)
        med_cpu = statistics.median(cpu[label])
        pred = ("| - | - | - |" if passes is None else
                f"| {(1 + passes) / 2:.2f} | {ratio_flops(passes):.2f} | {ratio_timed(passes):.2f} |")
        lines.append(f"| {label} | {'-' if passes is None else passes} | {med:.3f} ({q1:.3f}-{q3:.3f}) | "
                     f"{med / base:.2f} | {med_cpu:.3f} | {med_cpu / base_cpu:.2f} " + pred)
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    tmp.cleanup()


if __name__ == "__main__":
    main()
