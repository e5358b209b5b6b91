"""Paper 000's Table 6 / Fig. 5 on digits: EnVAE's FID and training time against the number of
samples M = 10, 20, 50, 100, under one conv network and one budget.

    python -m benchmarks.envae_table6 --steps 1000 --seeds 0 1 2

Every M trains for the same steps and batches (configs/fenvae_fashion.yaml's nets, KL weight
0.01: benchmarks/common.envae_overrides). FID_rec / FID_gen use the library's digits feature
network against the test split. "train s" is each run's own wall time on one thread, not
interleaved and not protected from other jobs on the machine: indicative only (the cost ratio of
a step at each M, measured interleaved, is benchmarks/envae_speed.py's results/envae_speed.md).
Cells: mean ± std over seeds.
"""
from __future__ import annotations

import argparse

import torch

if not __package__:  # started as a file, python benchmarks/NAME.py: rerun as python -m benchmarks.NAME
    import _as_module  # noqa: F401  (benchmarks/_as_module.py; it does not return)
from benchmarks.common import ROOT, envae_overrides, header, now, run_variants, table, write  # noqa: E402

SAMPLES = (10, 20, 50, 100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = now()
    variants = {f"EnVAE (M={m})": [f"model.reconstruction={{name: energy_score, samples: {m}}}"] for m in SAMPLES}
    columns = ["fid_rec", "fid_gen", "train_seconds"]
    rows = run_variants(variants, config="configs/fenvae_fashion.yaml",
                        common=envae_overrides("digits", 0.01, args.steps, 64), seeds_for=lambda _: args.seeds,
                        columns=columns, metrics=("fid_gen", "fid_rec"), n=args.n,
                        runs_dir=ROOT / "runs" / "bench_envae_table6")
    lines = header("Paper 000 Table 6 on digits: EnVAE FID and time against M",
                   f"{args.steps} steps at batch 64, KL weight 0.01, seeds {args.seeds}", now() - t0, rows)
    shown = {k: {"values": {"fid_rec": r["values"]["fid_rec"], "fid_gen": r["values"]["fid_gen"],
                            "train s": r["values"]["train_seconds"]}} for k, r in rows.items()}
    lines += ["", *table("M", ["fid_rec", "fid_gen", "train s"], shown)]
    write("envae_table6_digits", lines, rows)


if __name__ == "__main__":
    main()
