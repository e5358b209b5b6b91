"""Benchmark: paper 002's Table 1 — EBM priors on toy 2-D data (8 gaussians, checkerboard,
2 spirals, U1..U4): held-out NLL per model and a figure grid (rows: datasets; columns: ground
truth, then each model's samples, then each model's density).

    python benchmarks/ebm_prior_toy.py --steps 2000

Models (paper 002, section 4.1), all with the paper's toy nets (configs/toy2d_vae.yaml:
DenseNet blocks, hidden 16, depth 4, weight norm, 2-D latent, learned-scale Gaussian decoder):
VAE (N(0, I) prior); EVAE and ECVAE (GRBM prior trained by the importance-weighted partition
estimator, learned posterior sigma / fixed sigma = 1); SSM and Adv. (GRBM prior trained by
sliced score matching / adversarial CD); VampPrior (128 pseudo-inputs). EBM priors are
sampled by Gibbs-Langevin, as in the paper. NLL = IW (K = 200) of the unnormalised joint
minus AIS ln Z for EBM priors (evaluation/likelihood.py); the density panel is the same IW
estimate on a grid, normalised over the grid. The paper reports no numbers for this table.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, header, now, run_variants, slug, write  # noqa: E402

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
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=200, help="importance samples of the NLL")
    ap.add_argument("--grid", type=int, default=80, help="density grid resolution")
    args = ap.parse_args()
    from energyvae.evaluation.likelihood import test_log_likelihood
    from energyvae.runs import load_run
    from energyvae.viz.figures import density_grid

    models = {k: v for k, v in MODELS.items() if not args.only or k in args.only}
    t0 = now()
    rows, panels = {}, {}
    for ds in args.datasets:
        variants = {f"{ds} / {name}": ov for name, ov in models.items()}
        runs_dir = ROOT / "runs" / "bench_ebm_toy"
        got = run_variants(variants, config="configs/toy2d_vae.yaml",
                           common=[f"data.name={ds}", f"train.steps={args.steps}", "train.eval_every=1000000",
                                   "train.checkpoint_every=1000"],
                           seeds_for=lambda _: [args.seed], columns=[], metrics=(), runs_dir=runs_dir)
        for name in variants:
            cfg, data, model = load_run(runs_dir / f"{slug(name)}_s{args.seed}")
            res = test_log_likelihood(model, data, k=args.k, max_examples=2000, seed=args.seed,
                                      ais_chains=256, ais_temps=500)
            torch.manual_seed(args.seed)
            x = model_samples(model, 20000)
            lim = 4.5 if ds.startswith("U") else 4.0
            dens = density_grid(lambda p: model.iw_log_likelihood(p, 50), lim, args.grid)
            panels[name] = (x, dens, lim, data.test.x.numpy())
            got[name]["values"] = {"nll": [res["nll"]], "nll_stderr": [res["nll_stderr"]],
                                   "ais_log_z": [res["ais"]["log_z"]] if "ais" in res else [],
                                   "ais_stderr": [res["ais"]["stderr"]] if "ais" in res else []}
            print(f"{name}: NLL {res['nll']:.3f} +- {res['nll_stderr']:.3f}", flush=True)
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

    lines = header("Paper 002, Table 1: EBM priors on toy 2-D data",
                   f"{args.steps} steps x batch 256 per run (configs/toy2d_vae.yaml), seed {args.seed}",
                   now() - t0, rows)
    lines += [f"- NLL: held-out test split (2000 points), IW K = {args.k}; EBM priors: minus AIS ln Z "
              "(256 chains, 500 temperatures, MALA); nats, lower is better", f"- figure: {fig_path.name}", "",
              "| dataset | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for ds in args.datasets:
        cells = []
        for name in names:
            v = rows[f"{ds} / {name}"]["values"]
            cells.append(f"{v['nll'][0]:.3f} ± {v['nll_stderr'][0]:.3f}" if math.isfinite(v["nll"][0]) else "—")
        best = min(range(len(names)), key=lambda j: rows[f"{ds} / {names[j]}"]["values"]["nll"][0])
        cells[best] = f"**{cells[best]}**"
        lines.append(f"| {ds} | " + " | ".join(cells) + " |")
    write("ebm_prior_toy", lines, rows)


if __name__ == "__main__":
    main()
