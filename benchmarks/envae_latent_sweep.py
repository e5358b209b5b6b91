"""Benchmark: paper 000's Tables 4 / 7 — EnVAE vs FEnVAE across latent dimensions, with the
two factors behind FEnVAE's local-linearity approximation: the encoder's Lipschitz estimate
and the mean posterior variance (energyvae.evaluation.latent).

    python -m benchmarks.envae_latent_sweep --dataset digits --steps 3000
"""
from __future__ import annotations

import argparse

if not __package__:  # started as a file, python benchmarks/NAME.py: rerun as python -m benchmarks.NAME
    import _as_module  # noqa: F401  (benchmarks/_as_module.py; it does not return)
from benchmarks.common import envae_overrides, ROOT, header, now, run_variants, table, write  # noqa: E402

OBJECTIVES = {"EnVAE (M=10)": "{name: energy_score, samples: 10}",
              "FEnVAE": "{name: fast_energy_score, variant: single}",
              "FEnVAE (sigmoid output)": "{name: fast_energy_score, variant: single, output: sigmoid}",
              "FEnVAE (antithetic)": "{name: fast_energy_score, variant: antithetic}"}
COLUMNS = ["fid_rec", "fid_gen", "posterior_variance", "lipschitz_pairs", "lipschitz_jacobian"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--latent-dims", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--alpha", type=float, default=0.01, help="KL weight (as in envae_table1.py)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    variants = {f"{name}, m={m}": [f"model.reconstruction={spec}", f"model.latent_dim={m}"]
                for m in args.latent_dims for name, spec in OBJECTIVES.items()}
    t0 = now()
    rows = run_variants(variants, config="configs/fenvae_fashion.yaml",
                        common=envae_overrides(args.dataset, args.alpha, args.steps),
                        seeds_for=lambda _: [args.seed], columns=COLUMNS,
                        metrics=("fid_gen", "fid_rec", "latent"),
                        runs_dir=ROOT / "runs" / f"bench_envae_latent_{args.dataset}")
    lines = header(f"Paper 000, Tables 4/7 on {args.dataset}: latent dimension sweep",
                   f"{args.steps} steps x batch 64 per run, alpha {args.alpha}, seed {args.seed}",
                   now() - t0, rows)
    lines += ["- latent diagnostics on 500 test images: Lipschitz = the paper's sup ratio over all pairs, "
              "and the max spectral norm of the encoder-mean Jacobian (200 images); variance = mean sigma^2", "",
              *table("objective, latent dim", COLUMNS, rows)]
    write(f"envae_latent_sweep_{args.dataset}", lines, rows)


if __name__ == "__main__":
    main()
