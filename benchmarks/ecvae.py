"""Benchmark: EC-VAE (paper 001) at CPU scale — FID of samples for the VAE, EC-VAE, EC-VAE
with test-time MCMC and EC-VAE without primal-dual; sampling time with and without MCMC (one
run); zero-shot restoration (inpainting box / random pixels, 2x super-resolution) against the
A+ y baseline and the same procedure without the EBM term.

    python benchmarks/ecvae.py --steps 1500

Same conv VAE for all (configs/digits_conv_vae.yaml vs configs/ecvae_digits.yaml, which adds
the ``ec`` calibrator). The paper's CIFAR-10 gap (VAE 104.68 vs EC-VAE 5.20 FID) is not
expected here: this measures direction and size on 8x8 digits with a short budget.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, header, now, run_variants, slug, table, write  # noqa: E402

EC_FIXED_LAMBDA = ("model.calibrators=[{name: ec, energy: {name: resnet, channels: [32, 64], blocks: 1, head: 128, "
                   "spectral_norm: true}, steps: 15, step_size: 0.1, noise: 0.0031622776601683794, sigma: null, "
                   "lambda_init: 30.0, primal_dual: false, lr: 1.0e-4, betas: [0.0, 0.9]}]")
MODELS = {"VAE": ("configs/digits_conv_vae.yaml", []),
          "EC-VAE": ("configs/ecvae_digits.yaml", []),
          "EC-VAE w/o primal-dual": ("configs/ecvae_digits.yaml", [EC_FIXED_LAMBDA])}
TASKS = {"inpaint (box)": ("inpaint", {"mask": "box"}), "inpaint (random 50%)": ("inpaint", {"mask": "random"}),
         "sr2": ("sr2", {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--mcmc", type=int, default=15, help="test-time Langevin steps of the 'w/ MCMC' row")
    ap.add_argument("--n", type=int, default=2000, help="samples for FID")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from energyvae.evaluation.features import get_feature_net, to_unit_images
    from energyvae.evaluation.restoration import restoration_metrics
    from energyvae.evaluation.sample_metrics import compute_sample_metrics
    from energyvae.restoration.operators import OPERATORS
    from energyvae.restoration.zero_shot import pinv_baseline, restore
    from energyvae.runs import load_run

    runs_dir = ROOT / "runs" / "bench_ecvae_digits"
    t0 = now()
    trained = {}
    for name, (config, overrides) in MODELS.items():
        trained.update(run_variants({name: overrides}, config=config,
                                    common=[f"train.steps={args.steps}", "train.eval_every=1000000",
                                            "train.checkpoint_every=500", "eval.iw_samples=0"],
                                    seeds_for=lambda _: [args.seed], columns=["train_seconds"], metrics=(),
                                    runs_dir=runs_dir))
    gen_rows, rest_rows, models = {}, {}, {}
    for name in MODELS:
        _, data, model = load_run(runs_dir / f"{slug(name)}_s{args.seed}")
        models[name] = model
        net, info = get_feature_net(data, seed=args.seed, progress=False)
        real = to_unit_images(data, data.test.x[:args.n])
        for label, mcmc in [(name, 0)] + ([(f"{name} w/ MCMC ({args.mcmc})", args.mcmc)] if name == "EC-VAE" else []):
            torch.manual_seed(args.seed)
            t = time.perf_counter()
            fake = model.sample(args.n, mcmc=mcmc) if mcmc else model.sample(args.n)
            sec = (time.perf_counter() - t) / args.n * 1000
            fid = compute_sample_metrics(real, data.preprocess.to_unit(fake), net, metrics=("fid",))["fid"]
            gen_rows[label] = {"values": {"fid_gen": [fid], "sec_per_1000": [sec],
                                          "train_seconds": trained[name]["values"]["train_seconds"]},
                               "features": info, "reference": {"split": "test", "n": len(real)}}
            print(f"{label}: FID {fid:.3f}, {sec:.3f} s / 1000", flush=True)
    x = data.preprocess(data.test.x)
    to_unit = data.preprocess.to_unit
    for task_name, (task, opts) in TASKS.items():
        op = OPERATORS[task](tuple(x.shape[1:]), **opts)
        y = op.A(x)
        methods = {"A+ y": lambda: pinv_baseline(op, y),
                   "VAE prior (no EBM)": lambda: restore(models["VAE"], y, op, use_ebm=False, seed=args.seed),
                   "EC-VAE, no EBM term": lambda: restore(models["EC-VAE"], y, op, use_ebm=False, seed=args.seed),
                   "EC-VAE, with EBM term": lambda: restore(models["EC-VAE"], y, op, use_ebm=True, seed=args.seed)}
        for method, run in methods.items():
            m = restoration_metrics(to_unit(run()), to_unit(x), A=lambda t: op.A(t), image_shape=tuple(x.shape[1:]))
            rest_rows[f"{task_name} / {method}"] = {"values": {k: [m[k]] for k in ("psnr", "ssim", "consistency")}}
            print(f"{task_name} / {method}: PSNR {m['psnr']:.2f}, SSIM {m['ssim']:.3f}", flush=True)
    lines = header("EC-VAE (paper 001) on digits", f"{args.steps} steps x batch 128 per model, seed {args.seed}",
                   now() - t0, gen_rows)
    lines += [f"- test-time MCMC: {args.mcmc} steps of the calibrator's conditional Langevin; sampling time is "
              "wall seconds per 1000 images in this run",
              f"- restoration: all {len(x)} test images, 200 latent Langevin steps (energyvae restore defaults), "
              "metrics on [0, 1] images; Consistency = mean |A x_hat - A x|", "",
              "## Generation", "", *table("model", ["fid_gen", "sec_per_1000", "train_seconds"], gen_rows), "",
              "## Zero-shot restoration", "", *table("task / method", ["psnr", "ssim", "consistency"], rest_rows)]
    write("ecvae_digits", lines, {**gen_rows, **rest_rows})


if __name__ == "__main__":
    main()
