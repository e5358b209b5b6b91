"""Benchmark: the baseline VAE family (decoder likelihoods) under one budget and one network.

    python -m benchmarks.baseline_family                       # digits, 6000 steps, seed 0
    python -m benchmarks.baseline_family --dataset fashion-mnist --steps 5000 --seeds 0 1

Each variant is configs/digits_vae.yaml (MLP 256-256, latent 8, batch 128) with overrides.
NLL is the importance-weighted bound (K=100) on the test split in nats; bits/dim of the
binarised Bernoulli model is per binary pixel of binarised data and is not comparable with
the dequantized continuous models' bits/dim (8-bit data); a nats NLL of a density of
dequantized data is not comparable with a mass on binary data either.
"""
from __future__ import annotations

import argparse

if not __package__:  # started as a file, python benchmarks/NAME.py: rerun as python -m benchmarks.NAME
    import _as_module  # noqa: F401  (benchmarks/_as_module.py; it does not return)
from benchmarks.common import ROOT, header, now, run_variants, table, write  # noqa: E402

VARIANTS = {
    "bernoulli (binarised)": ["data.binarize=true", "model.reconstruction={name: bernoulli}"],
    "gaussian, fixed sigma=0.1": ["data.dequantize=uniform",
                                  "model.reconstruction={name: gaussian, scale: fixed, init_scale: 0.1}"],
    "gaussian, learned sigma": ["data.dequantize=uniform", "model.reconstruction={name: gaussian, scale: learned}"],
    "gaussian, calibrated": ["data.dequantize=uniform", "model.reconstruction={name: gaussian, scale: calibrated}"],
    "laplace, calibrated": ["data.dequantize=uniform", "model.reconstruction={name: laplace, scale: calibrated}"],
    "gaussian, calibrated, beta=0.5": ["data.dequantize=uniform", "model.kl_weight=0.5",
                                       "model.reconstruction={name: gaussian, scale: calibrated}"],
}
COLUMNS = ["nll", "bits_per_dim", "fid_gen", "fid_rec", "precision", "recall", "sec_per_step"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--n", type=int, default=2000, help="samples for the feature metrics")
    args = ap.parse_args()
    t0 = now()
    rows = run_variants(VARIANTS, config="configs/digits_vae.yaml",
                        common=[f"data.name={args.dataset}", f"train.steps={args.steps}"],
                        seeds_for=lambda _: args.seeds, columns=COLUMNS, n=args.n,
                        metrics=("fid_gen", "fid_rec", "pr", "nll", "cost"),
                        runs_dir=ROOT / "runs" / f"bench_baselines_{args.dataset}")
    lines = header(f"Baseline VAE family on {args.dataset}",
                   f"{args.steps} steps per run, seeds {args.seeds}", now() - t0, rows)
    lines += ["- nll: importance-weighted, K=100, nats per test example; see the script's docstring "
              "for which rows are comparable", "",
              *table("variant", COLUMNS, rows)]
    write(f"baseline_family_{args.dataset}", lines, rows)


if __name__ == "__main__":
    main()
