"""Benchmark: paper 000's beta walk (Fig. 24) — the energy-score exponent beta in
{0.1, 0.5, 1, 2} under one network and budget: FID of reconstructions and samples, and a
figure with one row of reconstructions and one of samples per beta (same test images, same
latent draws for every beta).

    python -m benchmarks.envae_beta_walk --dataset digits --steps 3000

beta = 2 is only proper (the score reduces to ||E X - x||^2 and ignores the spread), so the
walk shows what the strictly proper beta < 2 adds. The objective defaults to the library's
bounded one-sample FEnVAE (``variant: antithetic``); ``--objective envae`` uses EnVAE (M = 10).
"""
from __future__ import annotations

import argparse

import torch

if not __package__:  # started as a file, python benchmarks/NAME.py: rerun as python -m benchmarks.NAME
    import _as_module  # noqa: F401  (benchmarks/_as_module.py; it does not return)
from benchmarks.common import envae_overrides, RESULTS, ROOT, header, now, run_variants, slug, table, write  # noqa: E402

OBJECTIVES = {"fenvae": "fast_energy_score, variant: antithetic", "envae": "energy_score, samples: 10"}
COLUMNS = ["fid_rec", "fid_gen", "is_gen"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--betas", type=float, nargs="+", default=[0.1, 0.5, 1.0, 2.0])
    ap.add_argument("--objective", choices=sorted(OBJECTIVES), default="fenvae")
    ap.add_argument("--alpha", type=float, default=0.01, help="KL weight (as in envae_table1.py)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-images", type=int, default=12, help="images per row of the figure")
    args = ap.parse_args()
    from energyvae.runs import load_run
    from energyvae.viz.analysis import plot_beta_walk

    variants = {f"beta={b:g}": [f"model.reconstruction={{name: {OBJECTIVES[args.objective]}, beta: {b}}}"]
                for b in args.betas}
    runs_dir = ROOT / "runs" / f"bench_envae_beta_{args.objective}_{args.dataset}"
    t0 = now()
    rows = run_variants(variants, config="configs/fenvae_fashion.yaml",
                        common=envae_overrides(args.dataset, args.alpha, args.steps),
                        seeds_for=lambda _: [args.seed], columns=COLUMNS,
                        metrics=("fid_gen", "fid_rec", "is"), runs_dir=runs_dir)
    recon, samples = {}, {}
    for name in variants:
        _, data, model = load_run(runs_dir / f"{slug(name)}_s{args.seed}")
        x = data.preprocess(data.test.x[:args.n_images])
        torch.manual_seed(args.seed)
        z = torch.randn(args.n_images, model.latent_dim)
        with torch.no_grad():
            recon[name] = data.preprocess.to_unit(model.reconstruct(x))
            samples[name] = data.preprocess.to_unit(model.reconstruction.mean(model.decode(z)))
    beta_label = {name: name.split("=")[1] for name in variants}
    data_row = {"data": data.preprocess.to_unit(x)}
    fig = RESULTS / f"envae_beta_walk_{args.objective}_{args.dataset}.png"
    plot_beta_walk({**data_row, **{beta_label[k]: v for k, v in recon.items()}}, fig.with_name(fig.stem + "_recon.png"),
                   title=f"reconstructions ({args.objective}, {args.dataset})")
    plot_beta_walk({beta_label[k]: v for k, v in samples.items()}, fig.with_name(fig.stem + "_samples.png"),
                   title=f"samples from N(0, I) ({args.objective}, {args.dataset})")
    lines = header(f"Paper 000, beta walk ({args.objective}) on {args.dataset}",
                   f"{args.steps} steps x batch 64 per run, alpha {args.alpha}, seed {args.seed}", now() - t0, rows)
    lines += [f"- figures: {fig.stem}_recon.png (first row: data), {fig.stem}_samples.png", "",
              *table("beta", COLUMNS, rows)]
    write(f"envae_beta_walk_{args.objective}_{args.dataset}", lines, rows)


if __name__ == "__main__":
    main()
