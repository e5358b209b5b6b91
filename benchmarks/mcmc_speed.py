"""Benchmark: the MCMC kernels (energyvae.mcmc.kernels) against the loops they replaced, one
torch thread, interleaved rounds in one process.

    python -m benchmarks.mcmc_speed                      # the full sizes below (a few minutes)
    python -m benchmarks.mcmc_speed --steps 300 --temps 200 --rounds 2   # a quick look

Parts (each timed as the median over ``--rounds`` rounds; within a round every variant runs once,
in an order that alternates between rounds, so a shared machine's drifts hit all alike):

- **MALA** on a 64 x 64 GRBM (paper 002's prior; W std 1/sqrt(m + h), b ~ N(0, 0.5^2), mu 0,
  sigma 1), 1000 chains x ``--steps`` steps (warm-up 10 %): the old sampler
  (benchmarks/_mcmc_reference.py: autograd energy + gradient, a host read every step) against
  today's (the kernels, the GRBM's closed-form gradient, device-side adaptation). The *floor*
  is ``steps + 1`` closed-form energy + gradient calls on the same chains, timed in the same
  round; the ratio sampler / floor is the sampler's own overhead. ``compile: true`` runs the same
  step under ``torch.compile`` (its compilation, once, is timed apart). Both samplers' final mean
  energy is printed (the same law: they should agree within the chains' spread).
- **AIS** on a 64 x 16 GRBM (exact ln Z by enumerating 2^16 hidden states), 256 chains x
  ``--temps`` temperatures, MALA transitions (what ``evaluate --metrics nll`` uses) and HMC
  (10 leapfrog steps): old against today's (closed-form gradient); the estimates are checked
  against the exact ln Z (difference / stderr).
- **EC chain**: EC-VAE's conditional Langevin chain (K = 15, the CPU ResNet energy of
  configs/ecvae_fashion_cpu.yaml on 1 x 28 x 28, batch 64) against its floor, K energy forward +
  backward passes on the same batch (the chain cannot do less).
- **Restoration chain**: the consistent Langevin chain of ``energyvae restore`` (inpainting
  projection, K = 50) against K energy forward + backward passes.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics

import torch

from benchmarks._mcmc_reference import OldMALA, old_ais_log_partition
from benchmarks.common import header, now, write
from energyvae.mcmc.ais import ais_log_partition
from energyvae.mcmc.kernels import autograd_grad_fn
from energyvae.models.energy_calibration import conditional_langevin
from energyvae.models.priors.energies import GRBMEnergy
from energyvae.models.priors.samplers import MALA, MALAParams
from energyvae.nets.energy import DATA_ENERGIES
from energyvae.restoration.operators import Inpaint
from energyvae.restoration.zero_shot import consistent_langevin


def _grbm(m: int, h: int, seed: int) -> GRBMEnergy:
    torch.manual_seed(seed)
    e = GRBMEnergy(m, h, (m + h) ** -0.5)
    with torch.no_grad():
        e.b.normal_(0, 0.5)
    return e


def _time(fn) -> float:
    t = now()
    fn()
    return now() - t


def _rounds(variants: dict, rounds: int) -> dict:
    """Median wall seconds of each variant over interleaved rounds (order alternates)."""
    times = {k: [] for k in variants}
    names = list(variants)
    for r in range(rounds):
        for k in (names if r % 2 == 0 else names[::-1]):
            times[k].append(_time(variants[k]))
    return {k: statistics.median(v) for k, v in times.items()}


def mala_part(args) -> dict:
    e = _grbm(64, 64, 0)
    p = MALAParams(steps=args.steps, warmup=max(args.steps // 10, 4))
    new, old = MALA(64, p), OldMALA(64, p)
    compiled = MALA(64, dataclasses.replace(p, compile=True))
    out = {}

    def run(sampler, key):
        def f():
            torch.manual_seed(1)
            z, _ = sampler.sample(e, args.chains)
            out[key] = float(e(z).detach().mean())
        return f
    z = torch.randn(args.chains, 64)
    first = _time(run(compiled, "compiled"))                  # compiles (cached for the rounds)
    variants = {"old MALA": run(old, "old"), "MALA (kernels)": run(new, "new"),
                "MALA (kernels, compile: true)": run(compiled, "compiled"),
                "floor: closed-form E + grad": lambda: [e.energy_and_grad(z) for _ in range(args.steps + 1)],
                "autograd E + grad": lambda: [autograd_grad_fn(e)(z) for _ in range(args.steps + 1)]}
    t = _rounds(variants, args.rounds)
    t["speed-up (old / new)"] = t["old MALA"] / t["MALA (kernels)"]
    t["new / floor"] = t["MALA (kernels)"] / t["floor: closed-form E + grad"]
    t["speed-up, compiled (old / compiled)"] = t["old MALA"] / t["MALA (kernels, compile: true)"]
    t["compiled / floor"] = t["MALA (kernels, compile: true)"] / t["floor: closed-form E + grad"]
    t["compiled: compile + first run (s)"] = first
    t["old / its autograd floor"] = t["old MALA"] / t["autograd E + grad"]
    t["mean energy of the samples: old, new, compiled"] = f"{out['old']:.2f}, {out['new']:.2f}, {out['compiled']:.2f}"
    return t


def ais_part(args, transition: str) -> dict:
    e = _grbm(64, 16, 2)
    exact = float(e.exact_log_partition())
    res = {}

    def run(key, f):
        def g():
            res[key] = f()
        return g
    kw = dict(n_chains=256, n_temps=args.temps, transition=transition, seed=3)
    variants = {
        f"old AIS ({transition})": run("old", lambda: old_ais_log_partition(e, 64, **kw)),
        f"AIS (kernels, {transition})": run("new", lambda: ais_log_partition(e, 64, energy_and_grad=e.energy_and_grad,
                                                                              **kw)),
    }
    t = _rounds(variants, args.rounds)
    t["speed-up (old / new)"] = t[f"old AIS ({transition})"] / t[f"AIS (kernels, {transition})"]
    for k in ("old", "new"):
        r = res[k]
        t[f"{k}: ln Z - exact (in stderr)"] = f"{r.log_z - exact:+.3f} ({(r.log_z - exact) / r.stderr:+.1f}); ESS {r.ess:.0f}"
    return t


def chain_part(args, which: str) -> dict:
    torch.manual_seed(4)
    shape = (1, 28, 28)
    energy = DATA_ENERGIES.build({"name": "resnet", "channels": [16, 32, 64], "blocks": 1, "head": 64},
                                 "energy", data_shape=shape)
    x0 = torch.rand(64, *shape)
    k = 15 if which == "ec" else 50
    op = Inpaint(torch.rand(shape) > 0.5) if which == "restore" else None

    def chain():
        if which == "ec":
            conditional_langevin(energy, x0, k, 0.025, noise=5e-4 / 0.025**0.5)
        else:
            consistent_langevin(energy, x0, op, steps=k, step_size=1e-3, noise=0.01)

    fn = autograd_grad_fn(energy)
    variants = {f"{which} chain, K = {k}": chain, f"floor: {k} energy fwd + bwd": lambda: [fn(x0) for _ in range(k)]}
    t = _rounds(variants, args.rounds)
    t["chain / floor"] = t[f"{which} chain, K = {k}"] / t[f"floor: {k} energy fwd + bwd"]
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000, help="MALA steps (warm-up: 10 %%)")
    ap.add_argument("--chains", type=int, default=1000)
    ap.add_argument("--temps", type=int, default=1000, help="AIS temperatures")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = now()
    parts = {"MALA, GRBM 64 x 64": mala_part(args), "AIS, GRBM 64 x 16 (MALA)": ais_part(args, "mala"),
             "AIS, GRBM 64 x 16 (HMC)": ais_part(args, "hmc"), "EC-VAE conditional chain": chain_part(args, "ec"),
             "restoration consistent chain": chain_part(args, "restore")}
    rows = {part: {"values": vals} for part, vals in parts.items()}
    lines = header("MCMC kernels: speed against the loops they replaced", f"MALA {args.chains} chains x {args.steps} "
                   f"steps; AIS 256 chains x {args.temps} temperatures; median of {args.rounds} interleaved rounds",
                   now() - t0, rows)
    for part, vals in parts.items():
        lines += ["", f"## {part}", "", "| quantity | value |", "|---|---:|"]
        lines += [f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in vals.items()]
    write("mcmc_speed", lines, rows)


if __name__ == "__main__":
    main()
