"""Diagnosis: why a conv EC-VAE paints a periodic grid into Fashion-MNIST samples (issue 12).

Trains the CPU-sized EC-VAE of ``benchmarks/ecvae.py`` (configs/ecvae_fashion.yaml with a
16-32-64 spectral-norm ResNet energy, batch 64) in variants that each change one thing, then
measures on every trained run:

- the periodic-artifact score: ``lattice_power_fraction`` (power on the period-2/4 frequency
  lattice, ``viz/analysis.py``) of 2000 samples divided by that of 2000 test images;
- the same score of the energy's input gradient grad_x E_w on real and on generated images
  (and a figure of those gradients);
- the chain at test time from generated x_0: mean per-step displacement ||x_k - x_{k-1}||, the
  total ||x_K - x_0||^2 (= L_con) and the artifact score of x_K - x_0;
- from the training log: L_con, lambda, e_real and e_cal over training (a figure), their mean
  over the last quarter of training;
- FID of 2000 one-pass samples against the test split (the library's feature net).

    python -m benchmarks.ecvae_grid --steps 800 --seeds 0

Variants: the VAE alone (reference); ``avg`` (the old default: 2x2 average pooling, s = 0.1); (a) the authors' demo chain
converted to [0, 1] pixels (s = 0.025); (b) blur-pool / strided-conv downsampling; (c) the energy
magnitude regulariser alpha (E_real^2 + E_cal^2), alpha = 1; (d) a smaller step s = 0.01; (e) s = 0.05 with the regulariser; (a) + (c).
Finished runs are reused.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

if not __package__:  # started as a file, python benchmarks/NAME.py: rerun as python -m benchmarks.NAME
    import _as_module  # noqa: F401  (benchmarks/_as_module.py; it does not return)
from benchmarks.common import RESULTS, ROOT, header, now, table, train_or_reuse, write  # noqa: E402

ENERGY = "{name: resnet, channels: [16, 32, 64], blocks: 1, head: 64, spectral_norm: true"
EC = "model.calibrators.0"
OLD = [f"{EC}.step_size=0.1", f"{EC}.energy_reg=0.0"]          # the settings before the fix
VARIANTS = {   # name: (run folder stem, overrides); each pins the chain settings it uses
    "VAE (no calibrator, reference)": ("vae", ["model.calibrators=[]"]),
    "avg pool, s 0.1 (old default)": ("base", [f"{EC}.energy={ENERGY}}}", *OLD]),
    "(a) demo chain in [0,1] units, s 0.025": ("a_demo", [f"{EC}.energy={ENERGY}}}", *OLD, f"{EC}.step_size=0.025"]),
    "(b) blur-pool": ("b_blur", [f"{EC}.energy={ENERGY}, downsample: blur}}", *OLD]),
    "(b) strided conv": ("b_stride", [f"{EC}.energy={ENERGY}, downsample: stride}}", *OLD]),
    "(c) energy reg. alpha 1": ("c_reg", [f"{EC}.energy={ENERGY}}}", *OLD, f"{EC}.energy_reg=1.0"]),
    "(d) small step, s 0.01": ("d_small", [f"{EC}.energy={ENERGY}}}", *OLD, f"{EC}.step_size=0.01"]),
    "(e) s 0.05, energy reg. alpha 1 (between (c) and the fix)": ("e_mid", [f"{EC}.energy={ENERGY}}}",
                                                                       f"{EC}.step_size=0.05", f"{EC}.energy_reg=1.0"]),
    "(a) + (c): s 0.025, energy reg. alpha 1 (the fix)": ("ac", [f"{EC}.energy={ENERGY}}}", f"{EC}.step_size=0.025",
                                                                 f"{EC}.energy_reg=1.0"]),
}
CONFIG = "configs/ecvae_fashion.yaml"
LOG_KEYS = ("ec/l_con", "ec/lambda", "ec/e_real", "ec/e_cal")


def common(steps: int) -> list[str]:
    return [f"train.steps={steps}", "train.epochs=null", "train.batch_size=64", "train.eval_every=1000000",
            "train.checkpoint_every=200", "train.log_every=25"]


def train(run_dir: Path, overrides: list[str], steps: int, seed: int) -> None:
    train_or_reuse(CONFIG, [*common(steps), *overrides], run_dir, seed=seed)


def train_log(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    out = {k: [] for k in LOG_KEYS}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("split") == "train":
            for k in LOG_KEYS:
                if k in rec:
                    out[k].append((rec["step"], rec[k]))
    return out


def input_gradient(energy, x: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        g, = torch.autograd.grad(energy(x).sum(), x)
    return g


def analyse(run_dir: Path, n: int, seed: int, net) -> tuple[dict, dict]:
    """(row values, images for the gradient figure) of one trained run."""
    from energyvae.evaluation.features import to_unit_images
    from energyvae.evaluation.sample_metrics import compute_sample_metrics
    from energyvae.runs import load_run
    from energyvae.viz.analysis import lattice_power_fraction as lattice

    _, data, model = load_run(run_dir)
    real = to_unit_images(data, data.test.x[:n])
    torch.manual_seed(seed)
    with torch.no_grad():
        fake = data.preprocess.to_unit(model.sample(n))
    base = lattice(real)
    values = {"fid_gen": compute_sample_metrics(real, fake, net, metrics=("fid",))["fid"],
              "artifact_samples": lattice(fake) / base}
    ec = next((c for c in model.calibrators if c.name == "ec"), None)
    if ec is None:                                  # the reference VAE: no energy, no chain
        return values, None
    assert ec.sigma is None, "the per-step displacement below assumes no distance term"
    x_real = data.preprocess(data.test.x[:256])
    torch.manual_seed(seed + 1)
    with torch.no_grad():
        x0 = model.sample(256)
    g_real, g_gen = input_gradient(ec.energy, x_real), input_gradient(ec.energy, x0)
    x, steps = x0, []
    torch.manual_seed(seed + 2)
    for _ in range(ec.steps):     # the calibrator's chain one step at a time (sigma null: no anchor)
        x_next = ec.chain(ec.energy, x, steps=1)
        steps.append(float((x_next - x).flatten(1).norm(dim=1).mean()))
        x = x_next
    log = train_log(run_dir)
    last = {k: [v for s, v in log[k] if s > 0.75 * log[k][-1][0]] for k in LOG_KEYS}
    values.update({
        "artifact_grad_real": lattice(g_real) / base,
        "artifact_grad_gen": lattice(g_gen) / base,
        "artifact_chain_move": lattice(x - x0) / base,
        "step_move": statistics.mean(steps),
        "test_l_con": float((x - x0).flatten(1).pow(2).sum(1).mean()),
        "train_l_con": statistics.mean(last["ec/l_con"]),
        "lambda_end": log["ec/lambda"][-1][1],
        "e_real_minus_e_cal": statistics.mean(last["ec/e_real"]) - statistics.mean(last["ec/e_cal"]),
    })
    images = {"real": data.preprocess.to_unit(x_real[:6]), "grad real": g_real[:6], "generated":
              data.preprocess.to_unit(x0[:6]), "grad generated": g_gen[:6]}
    return values, {"images": images, "log": log}


def _signed(g: torch.Tensor) -> torch.Tensor:
    """A gradient shown as an image: 0.5 + g / (2 max |g|) per image."""
    m = g.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *[1] * (g.dim() - 1))
    return 0.5 + g / (2 * m)


def plot_gradients(figs: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(figs)
    fig, axes = plt.subplots(len(names), 4, figsize=(15, 0.8 * len(names) + 0.6), squeeze=False)
    for r, name in enumerate(names):
        for c, (label, imgs) in enumerate(figs[name]["images"].items()):
            imgs = _signed(imgs) if label.startswith("grad") else imgs
            row = torch.cat(list(imgs[:, 0]), dim=1).numpy()
            axes[r, c].imshow(row, cmap="gray" if not label.startswith("grad") else "RdBu_r", vmin=0, vmax=1,
                              interpolation="nearest")
            axes[r, c].set_xticks([]), axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(label)
        axes[r, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("EC-VAE energy input gradient grad_x E_w (red +, blue -), Fashion-MNIST")
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_training(figs: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    for name, f in figs.items():
        for ax, k in zip(axes, LOG_KEYS):
            s, v = zip(*f["log"][k])
            ax.plot(s, v, label=name, lw=1)
            ax.set_title(k), ax.set_xlabel("step")
    axes[0].set_yscale("log")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--only", nargs="*", help="variant folder stems to run (default: all)")
    ap.add_argument("--train-only", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from energyvae.evaluation.features import get_feature_net

    runs_dir = ROOT / "runs" / "bench_ecvae_grid"
    variants = {k: v for k, v in VARIANTS.items() if not args.only or v[0] in args.only}
    t0 = now()
    for seed in args.seeds:
        for stem, overrides in variants.values():
            train(runs_dir / f"{stem}_s{seed}", overrides, args.steps, seed)
    if args.train_only:
        return
    rows, figs = {}, {}
    net = info = None
    for name, (stem, _) in variants.items():
        per_seed = []
        for seed in args.seeds:
            run_dir = runs_dir / f"{stem}_s{seed}"
            if net is None:
                from energyvae.runs import load_run
                net, info = get_feature_net(load_run(run_dir)[1], seed=0, progress=False)
            values, fig = analyse(run_dir, args.n, seed, net)
            per_seed.append(values)
            if fig is not None:
                figs.setdefault(name, fig)
            print(f"{name} seed {seed}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()), flush=True)
        rows[name] = {"values": {k: [v[k] for v in per_seed] for k in per_seed[0]}, "features": info,
                      "reference": {"split": "test", "n": args.n}, "seeds": args.seeds}
    columns = max((list(r["values"]) for r in rows.values()), key=len)
    for r in rows.values():
        r["values"] = {k: r["values"].get(k, []) for k in columns}
    lines = header("EC-VAE periodic-artifact diagnosis (Fashion-MNIST)",
                   f"{args.steps} steps x batch 64 per variant, seeds {args.seeds}", now() - t0, rows)
    grad_png = plot_gradients(figs, RESULTS / "ecvae_grid_gradients.png")
    train_png = plot_training(figs, RESULTS / "ecvae_grid_training.png")
    lines += [
        "- artifact_*: lattice_power_fraction (period 2 and 4 frequencies) of samples / of grad_x E_w on 256 real "
        "or generated images / of the test-time chain displacement x_K - x_0, each divided by that of "
        f"{args.n} test images (1 = as much lattice power as the data)",
        "- step_move: mean ||x_k - x_(k-1)|| per chain step at test time; test_l_con: mean ||x_K - x_0||^2 over "
        "the K steps; train_l_con, e_real_minus_e_cal: means over the last quarter of training; lambda_end: final "
        "lambda", f"- figures: `{grad_png.name}` (gradients), `{train_png.name}` (training logs)", "",
        *table("variant", columns, rows)]
    write("ecvae_grid", lines, rows)


if __name__ == "__main__":
    main()
