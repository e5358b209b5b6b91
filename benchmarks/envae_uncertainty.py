"""Paper 000's Fig. 6 and Fig. 20 on digits: does the model's per-image uncertainty track its
loss, and how do per-example posteriors, the aggregate posterior and the prior sit in 2-D.

    python -m benchmarks.envae_uncertainty --seeds 0 1 2 --steps 3000

Fig. 6 (uncertainty vs loss). For each objective (L2, EnVAE M = 10, FEnVAE antithetic) and
seed, a VAE with configs/fenvae_fashion.yaml's conv nets is trained on digits (the paper-000
budget of benchmarks/common.envae_overrides). On every test image: the **uncertainty** is the
mean pairwise distance E||X - X'|| of 16 decodes of z ~ q(z|x) (the energy score's spread,
in pixel units), the **loss** the mean distance E||X - x|| of the same decodes to the image (the
fit). Reported: Pearson and Spearman correlation over the test images, mean ± standard error
over seeds, and a scatter figure of the first seed. The paper's claim: the two correlate (a
model that knows where it is wrong).

Fig. 20 (posteriors in 2-D). The same objectives with a 2-D latent, first seed only: per-example
posteriors (mean and 2-sigma ellipse of 60 test images, coloured by class), the aggregate
posterior (one z ~ q(z|x) per test image) and the prior's 1/2/3-sigma circles.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

if not __package__:  # started as a file, python benchmarks/NAME.py: rerun as python -m benchmarks.NAME
    import _as_module  # noqa: F401  (benchmarks/_as_module.py; it does not return)
from benchmarks.common import (RESULTS, ROOT, cell_se, envae_overrides, header, now, slug,  # noqa: E402
                               train_or_reuse, write)

from energyvae.runs import load_run  # noqa: E402

OBJECTIVES = {"L2": "{name: l2}", "EnVAE (M=10)": "{name: energy_score, samples: 10}",
              "FEnVAE (antithetic)": "{name: fast_energy_score}"}
DRAWS = 16


def train(label: str, seed: int, args, latent_dim: int | None = None) -> Path:
    tag = f"_m{latent_dim}" if latent_dim else ""
    run_dir = ROOT / args.runs / f"{slug(label)}{tag}_s{seed}"
    overrides = [*envae_overrides("digits", 0.01, args.steps, 64), f"model.reconstruction={OBJECTIVES[label]}"]
    if latent_dim:
        overrides.append(f"model.latent_dim={latent_dim}")
    train_or_reuse("configs/fenvae_fashion.yaml", overrides, run_dir, seed=seed)
    return run_dir


@torch.no_grad()
def uncertainty_and_loss(run_dir: Path, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    _, data, model = load_run(run_dir)
    x = data.preprocess(data.test.x)
    torch.manual_seed(seed)
    q = model.encode(x)
    xs = model.reconstruction.mean(model.decode(q.rsample(DRAWS))).flatten(2)    # [S, B, D]
    fit = (xs - x.flatten(1)).norm(dim=-1).mean(0)
    pair = torch.cdist(xs.transpose(0, 1), xs.transpose(0, 1))                    # [B, S, S]
    spread = pair.sum((1, 2)) / (DRAWS * (DRAWS - 1))
    return spread.double(), fit.double()


def _rank(v: torch.Tensor) -> torch.Tensor:
    r = torch.empty_like(v)
    r[v.argsort()] = torch.arange(len(v), dtype=v.dtype)
    return r


def _pearson(a, b) -> float:
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def _cell(values) -> str:
    return cell_se(values, ".3f", ".3f")


def fig6(points: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from energyvae.atomic import atomic_write
    fig, axes = plt.subplots(1, len(points), figsize=(4 * len(points), 3.6))
    for ax, (label, (u, loss)) in zip(axes, points.items()):
        ax.scatter(u, loss, s=5, alpha=0.5)
        ax.set_title(f"{label}\nPearson {_pearson(u, loss):.2f}")
        ax.set_xlabel("uncertainty E||X - X'||")
        ax.set_ylabel("loss E||X - x||")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)
    return path


@torch.no_grad()
def fig20(runs: dict, path: Path, n_examples: int = 60) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, Ellipse

    from energyvae.atomic import atomic_write
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 4))
    for ax, (label, run_dir) in zip(axes, runs.items()):
        _, data, model = load_run(run_dir)
        q = model.encode(data.preprocess(data.test.x))
        torch.manual_seed(0)
        agg = q.rsample()
        ax.scatter(agg[:, 0], agg[:, 1], s=3, c="0.7", label="aggregate posterior (1 z per test image)")
        colours = plt.cm.tab10(data.test.y[:n_examples].numpy() % 10)
        for i in range(n_examples):
            mu, sd = q.mean[i].numpy(), q.std[i].numpy()
            ax.add_patch(Ellipse(mu, 4 * sd[0], 4 * sd[1], fill=False, color=colours[i], lw=0.8))
        for r in (1, 2, 3):
            ax.add_patch(Circle((0, 0), r, fill=False, ls="--", color="k", lw=0.6))
        lim = max(3.5, float(agg.abs().quantile(0.99)) * 1.1)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(f"{label}\nq(z|x) 2-sigma ellipses by class, prior 1/2/3 sigma", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--runs", default="runs/bench_envae_uncertainty")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = now()
    corr, first = {}, {}
    for label in OBJECTIVES:
        for seed in args.seeds:
            u, loss = uncertainty_and_loss(train(label, seed, args), seed)
            corr.setdefault(label, {"pearson": [], "spearman": []})
            corr[label]["pearson"].append(_pearson(u, loss))
            corr[label]["spearman"].append(_pearson(_rank(u), _rank(loss)))
            if seed == args.seeds[0]:
                first[label] = (u, loss)
            print(f"{label} seed {seed}: pearson {corr[label]['pearson'][-1]:.3f}, "
                  f"spearman {corr[label]['spearman'][-1]:.3f}", flush=True)
    runs_2d = {label: train(label, args.seeds[0], args, latent_dim=2) for label in OBJECTIVES}
    f6 = fig6(first, RESULTS / "envae_uncertainty_fig6.png")
    f20 = fig20(runs_2d, RESULTS / "envae_posteriors_fig20.png")
    lines = header("Paper 000 Fig. 6 and Fig. 20 on digits: uncertainty vs loss, posteriors in 2-D",
                   f"{args.steps} steps at batch 64, KL weight 0.01, configs/fenvae_fashion.yaml nets, seeds "
                   f"{args.seeds}; {DRAWS} decodes per test image", now() - t0, {})
    lines += ["", "Correlation over the 180 test images between the uncertainty E||X - X'|| and the loss "
              "E||X - x|| of 16 decodes of z ~ q(z|x); mean ± standard error over seeds.", "",
              "| objective | Pearson | Spearman |", "|---|---:|---:|"]
    lines += [f"| {label} | {_cell(c['pearson'])} | {_cell(c['spearman'])} |" for label, c in corr.items()]
    lines += ["", f"Figures: `{f6.name}` (scatter, seed {args.seeds[0]}), `{f20.name}` (2-D latent, seed "
              f"{args.seeds[0]})."]
    write("envae_uncertainty_digits", lines, corr)


if __name__ == "__main__":
    main()
