"""Benchmark: paper 002's Table 1 — EBM priors on toy 2-D data (8 gaussians, checkerboard,
2 spirals, U1..U4): held-out NLL per model and a figure grid (rows: datasets; columns: ground
truth, then each model's samples, then each model's density).

    python -m benchmarks.ebm_prior_toy --steps 2000 --seeds 0 1 2

Models (paper 002, section 4.1), all with the paper's toy nets (configs/toy2d_vae.yaml:
DenseNet blocks, hidden 16, depth 4, weight norm, 2-D latent, learned-scale Gaussian decoder):
VAE (N(0, I) prior); EVAE and ECVAE (GRBM prior trained by the importance-weighted partition
estimator, learned posterior sigma / fixed sigma = 1); SSM and Adv. (GRBM prior trained by
sliced score matching / adversarial CD); VampPrior (128 pseudo-inputs). EBM priors are
sampled by Gibbs-Langevin, as in the paper. NLL = IW (K = 200) of the unnormalised joint
minus AIS ln Z for EBM priors (evaluation/likelihood.py); the density panel is the same IW
estimate on a grid, normalised over the grid (seed 0's runs). Every model is evaluated on the
same test points, so the second table gives paired differences to the VAE: per seed the mean
per-point NLL difference (its paired stderr is listed in the JSON), then mean and sd over
seeds. The paper reports no numbers for this table.
"""
from __future__ import annotations

import argparse
import math
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

if not __package__:  # started as a file, python benchmarks/NAME.py: rerun as python -m benchmarks.NAME
    import _as_module  # noqa: F401  (benchmarks/_as_module.py; it does not return)
from benchmarks.common import RESULTS, ROOT, header, now, run_variants, slug, write  # noqa: E402

GRBM = "{name: grbm, hidden: 16}"
GIBBS = "{name: gibbs_langevin, steps: 100}"
MODELS = {
    "VAE": [],
    "EVAE (IW, learned sigma)": [f"model.prior={{name: ebm, energy: {GRBM}, scheme: {{name: iw}}, sampler: {GIBBS}}}"],
    "ECVAE (IW, sigma = 1)": [f"model.prior={{name: ebm, energy: {GRBM}, scheme: {{name: iw}}, sampler: {GIBBS}}}",
                              "model.posterior={name: fixed, std: 1.0}"],
    "SSM": [f"model.prior={{name: ebm, energy: {GRBM}, scheme: {{name: ssm}}, sampler: {GIBBS}}}"],
    "Adv.": [f"model.prior={{name: ebm, energy: {GRBM}, scheme: {{name: adversarial}}, sampler: {GIBBS}}}"],
    "VampPrior (128)": ["model.prior={name: vamp, components: 128}"],
}
DATASETS = ["8gaussians", "checkerboard", "2spirals", "U1", "U2", "U3", "U4"]


@torch.no_grad()
def model_samples(model, n: int) -> np.ndarray:
    """x ~ p(x|z), z ~ p(z): the decoder mean plus its Gaussian noise."""
    mean = model.reconstruction.mean(model.decode(model.prior.sample(n)))
    return (mean + model.reconstruction.scale() * torch.randn_like(mean)).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--datasets", nargs="+", default=DATASETS)
    ap.add_argument("--only", nargs="*", help="run only these models")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--k", type=int, default=200, help="importance samples of the NLL")
    ap.add_argument("--grid", type=int, default=80, help="density grid resolution")
    args = ap.parse_args()
    from energyvae.evaluation.likelihood import test_log_likelihood
    from energyvae.runs import load_run
    from energyvae.viz.figures import density_grid

    from energyvae.evaluation.paired import paired_difference

    models = {k: v for k, v in MODELS.items() if not args.only or k in args.only}
    t0 = now()
    rows, panels, per_point = {}, {}, {}
    for ds in args.datasets:
        variants = {f"{ds} / {name}": ov for name, ov in models.items()}
        runs_dir = ROOT / "runs" / "bench_ebm_toy"
        got = run_variants(variants, config="configs/toy2d_vae.yaml",
                           common=[f"data.name={ds}", f"train.steps={args.steps}", "train.eval_every=1000000",
                                   "train.checkpoint_every=1000"],
                           seeds_for=lambda _: args.seeds, columns=[], metrics=(), runs_dir=runs_dir)
        for name in variants:
            vals = {"nll": [], "nll_stderr": [], "ais_log_z": [], "ais_stderr": []}
            for seed in args.seeds:
                cfg, data, model = load_run(runs_dir / f"{slug(name)}_s{seed}")
                res = test_log_likelihood(model, data, k=args.k, max_examples=2000, seed=0,
                                          ais_chains=256, ais_temps=500)
                per_point[(name, seed)] = [-v for v in res["per_image_ll"]]
                vals["nll"].append(res["nll"])
                vals["nll_stderr"].append(res["nll_stderr"])
                if "ais" in res:
                    vals["ais_log_z"].append(res["ais"]["log_z"])
                    vals["ais_stderr"].append(res["ais"]["stderr"])
                if seed == args.seeds[0]:
                    torch.manual_seed(seed)
                    x = model_samples(model, 20000)
                    lim = 4.5 if ds.startswith("U") else 4.0
                    dens = density_grid(lambda p: model.iw_log_likelihood(p, 50), lim, args.grid)
                    panels[name] = (x, dens, lim, data.test.x.numpy())
                print(f"{name} seed {seed}: NLL {res['nll']:.3f} +- {res['nll_stderr']:.3f}", flush=True)
            got[name]["values"] = vals
        for name in variants:
            base = f"{ds} / VAE"
            if name == base or (base, args.seeds[0]) not in per_point:
                continue
            diffs = [paired_difference(per_point[(name, s)], per_point[(base, s)]) for s in args.seeds]
            got[name]["values"]["d_nll"] = [d["mean"] for d in diffs]
            got[name]["values"]["d_nll_stderr"] = [d["stderr"] for d in diffs]
        rows.update(got)

    names = list(models)
    fig, axes = plt.subplots(len(args.datasets), 1 + 2 * len(names),
                             figsize=(1.6 * (1 + 2 * len(names)), 1.6 * len(args.datasets)), squeeze=False)
    for i, ds in enumerate(args.datasets):
        x0, _, lim, ref = panels[f"{ds} / {names[0]}"]
        axes[i, 0].hist2d(ref[:, 0], ref[:, 1], bins=80, range=[[-lim, lim], [-lim, lim]], cmap="viridis")
        axes[i, 0].set_ylabel(ds, fontsize=8)
        for j, name in enumerate(names):
            x, dens, lim, _ = panels[f"{ds} / {name}"]
            axes[i, 1 + j].hist2d(x[:, 0], x[:, 1], bins=80, range=[[-lim, lim], [-lim, lim]], cmap="viridis")
            axes[i, 1 + len(names) + j].imshow(dens, origin="lower", extent=[-lim, lim, -lim, lim], cmap="viridis")
    for j, title in enumerate(["data"] + [f"{n}\nsamples" for n in names] + [f"{n}\ndensity" for n in names]):
        axes[0, j].set_title(title, fontsize=6)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig_path = RESULTS / "ebm_prior_toy.png"
    fig.savefig(fig_path, dpi=110)

    seeds = " ".join(map(str, args.seeds))
    lines = header("Paper 002, Table 1: EBM priors on toy 2-D data",
                   f"{args.steps} steps x batch 256 per run (configs/toy2d_vae.yaml), seeds {seeds}",
                   now() - t0, rows)
    lines += [f"- NLL: held-out test split (2000 points, the same for every model), IW K = {args.k}; EBM "
              "priors: minus AIS ln Z (256 chains, 500 temperatures, MALA); nats, lower is better; "
              "mean ± sd over seeds", f"- figure: {fig_path.name} (seed {args.seeds[0]})", "",
              "| dataset | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]

    def mean_sd(v, fmt):
        v = [x for x in v if math.isfinite(x)]
        if not v:
            return "—"
        return f"{statistics.mean(v):{fmt}}" + (f" ± {statistics.stdev(v):.2g}" if len(v) > 1 else "")

    for ds in args.datasets:
        cells = [mean_sd(rows[f"{ds} / {name}"]["values"]["nll"], ".3f") for name in names]
        best = min(range(len(names)), key=lambda j: statistics.mean(rows[f"{ds} / {names[j]}"]["values"]["nll"]))
        cells[best] = f"**{cells[best]}**"
        lines.append(f"| {ds} | " + " | ".join(cells) + " |")
    others = [n for n in names if n != "VAE"]
    if "VAE" in names:
        lines += ["", "Paired ΔNLL to the VAE (nats; negative: better than the VAE): mean over seeds ± sd "
                  "over seeds of the per-seed paired mean differences; [k/n]: seeds in which the model is "
                  "better by more than 2 paired standard errors", "",
                  "| dataset | " + " | ".join(others) + " |", "|---|" + "---:|" * len(others)]
        for ds in args.datasets:
            cells = []
            for name in others:
                v = rows[f"{ds} / {name}"]["values"]
                wins = sum(d < -2 * se for d, se in zip(v["d_nll"], v["d_nll_stderr"]))
                cells.append(mean_sd(v["d_nll"], "+.3f") + f" [{wins}/{len(v['d_nll'])}]")
            lines.append(f"| {ds} | " + " | ".join(cells) + " |")
    write("ebm_prior_toy", lines, rows)


if __name__ == "__main__":
    main()
