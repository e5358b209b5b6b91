"""Benchmark: paper 000's Table 1 — reconstruction objectives under one conv network and one
budget: L2, L1, CE, SSIM, InfoVAE, FFL, Student-t, DistVAE, EnVAE (M = 2, 10, 50) and FEnVAE
(M = 2 is the cheapest proper energy score: one pair, two decodes, against FEnVAE's three;
"FEnVAE (antithetic)" is the library's bounded one-sample variant, see energy_score.py).

    python -m benchmarks.envae_table1 --dataset digits --steps 3000
    python -m benchmarks.envae_table1 --dataset fashion-mnist --steps 1000 --skip "FEnVAE (sigmoid output)"

Every variant trains for the same number of steps (same batches), so EnVAE's M decodes per
step cost wall time; seconds per epoch are reported. L2, EnVAE (M=2, 10) and FEnVAE run with
``--seeds`` (default 3); the others with the first seed. FID/IS use the library's feature
network (reference: test split). "vs L2" is the relative FID change, negative = better,
like the paper's table.
"""
from __future__ import annotations

import argparse
import statistics

import torch

if not __package__:  # started as a file, python benchmarks/NAME.py: rerun as python -m benchmarks.NAME
    import _as_module  # noqa: F401  (benchmarks/_as_module.py; it does not return)
from benchmarks.common import envae_overrides, ROOT, cell, header, now, run_variants, write  # noqa: E402



def variants(n_pixels: int, alpha: float) -> dict[str, list[str]]:
    """The objectives; SSIM's weight is the pixel count (1 - SSIM is a mean, the others sums);
    InfoVAE is Zhao et al.'s MMD-VAE setting (no KL, MMD weight lambda = 1000 against a KL
    weight of 1), rescaled like the KL: lambda * alpha; FFL uses the original summed
    reduction so its term is on the scale of the summed L2 base."""
    return {
    "L2": ["model.reconstruction={name: l2}"],
    "L1": ["model.reconstruction={name: l1}"],
    "CE": ["model.reconstruction={name: bernoulli}"],
    "SSIM": [f"model.reconstruction={{name: ssim, weight: {n_pixels}}}"],
    "InfoVAE (MMD)": ["model.reconstruction={name: l2}", "model.kl_weight=0",
                      f"model.calibrators=[{{name: mmd, weight: {1000 * alpha:g}}}]"],
    "FFL": ["model.reconstruction={name: ffl, reduction: sum}"],
    "Student-t": ["model.reconstruction={name: student_t}"],
    "DistVAE": ["model.reconstruction={name: distvae}"],
    "EnVAE (M=2)": ["model.reconstruction={name: energy_score, samples: 2}"],
    "EnVAE (M=10)": ["model.reconstruction={name: energy_score, samples: 10}"],
    "FEnVAE": ["model.reconstruction={name: fast_energy_score, variant: single}"],
    "FEnVAE (sigmoid output)": ["model.reconstruction={name: fast_energy_score, variant: single, output: sigmoid}"],
    "FEnVAE (antithetic)": ["model.reconstruction={name: fast_energy_score, variant: antithetic}"],
    "EnVAE (M=50)": ["model.reconstruction={name: energy_score, samples: 50}"],   # last: the slowest
    }
MULTI_SEED = {"L2", "EnVAE (M=2)", "EnVAE (M=10)", "FEnVAE (antithetic)"}
COLUMNS = ["fid_rec", "fid_gen", "is_gen", "sec_per_epoch"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n", type=int, default=2000, help="samples for the feature metrics")
    ap.add_argument("--only", nargs="*", help="run only these variants")
    ap.add_argument("--skip", nargs="*", default=[], help="leave these variants out")
    ap.add_argument("--alpha", type=float, default=0.01,
                    help="KL weight of every objective (the paper leaves it tunable; 0.01 ~ 2 sigma^2 of "
                         "a Gaussian with sigma ~ 0.07 keeps summed L2 from posterior collapse; not tuned)")
    args = ap.parse_args()
    from energyvae.config import load_config
    from energyvae.data import load_data
    data = load_data(load_config(ROOT / "configs/fenvae_fashion.yaml", [f"data.name={args.dataset}"]).data)
    n_train, n_pixels = len(data.train), int(torch.tensor(data.shape).prod())
    chosen = {k: v for k, v in variants(n_pixels, args.alpha).items() if (not args.only or k in args.only) and k not in args.skip}
    t0 = now()
    rows = run_variants(
        chosen, config="configs/fenvae_fashion.yaml",
        common=envae_overrides(args.dataset, args.alpha, args.steps, args.batch_size),
        seeds_for=lambda name: args.seeds if name in MULTI_SEED else args.seeds[:1],
        columns=["fid_rec", "fid_gen", "is_gen", "train_seconds"], n=args.n,
        metrics=("fid_gen", "fid_rec", "is"), runs_dir=ROOT / "runs" / f"bench_envae_{args.dataset}")
    steps_per_epoch = n_train // args.batch_size
    total_train = sum(sum(r["values"]["train_seconds"]) for r in rows.values())
    for r in rows.values():
        r["values"]["sec_per_epoch"] = [s / args.steps * steps_per_epoch for s in r["values"].pop("train_seconds")]
    l2 = {k: statistics.mean(rows["L2"]["values"][k]) for k in ("fid_rec", "fid_gen")} if "L2" in rows else None

    def vs_l2(name, key):
        if not l2 or name == "L2":
            return "—"
        return f"{100 * (statistics.mean(rows[name]['values'][key]) / l2[key] - 1):+.1f} %"

    lines = header(f"Paper 000, Table 1 on {args.dataset}",
                   f"{args.steps} steps x batch {args.batch_size} per run; seeds {args.seeds} for "
                   f"{', '.join(sorted(MULTI_SEED))}, seed {args.seeds[0]} for the others", now() - t0, rows)
    lines += [f"- training time summed over all runs (when each was trained): {total_train:.0f} s",
              f"- network: configs/fenvae_fashion.yaml (conv 32-64-128, latent 32), alpha = {args.alpha} "
              f"(InfoVAE: 0, with MMD weight {1000 * args.alpha:g}), beta = 1", "",
              "| objective | FID_rec | FID_gen | IS | s / epoch | FID_rec vs L2 | FID_gen vs L2 |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        v = r["values"]
        lines.append(f"| {name} | {cell(v['fid_rec'])} | {cell(v['fid_gen'])} | {cell(v['is_gen'])} | "
                     f"{cell(v['sec_per_epoch'])} | {vs_l2(name, 'fid_rec')} | {vs_l2(name, 'fid_gen')} |")
    write(f"envae_table1_{args.dataset}", lines, rows)


if __name__ == "__main__":
    main()
