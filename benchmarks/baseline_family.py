"""Benchmark: the baseline VAE family (decoder likelihoods) under one budget and one network.

Trains each variant with the library's trainer, evaluates it with ``energyvae evaluate``'s
back end (the library's own feature network; reference = test split) and prints / writes a
Markdown table with the machine, the command and the seeds.

    python benchmarks/baseline_family.py                       # digits, 6000 steps, seed 0
    python benchmarks/baseline_family.py --dataset fashion-mnist --steps 5000 --seeds 0 1

Bits/dim of the binarised Bernoulli model is per binary pixel of binarised data and is not
comparable with the dequantized continuous models' bits/dim (8-bit data).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from energyvae.config import load_config
from energyvae.evaluation.evaluate import evaluate_run
from energyvae.runs import train_run

ROOT = Path(__file__).resolve().parent.parent
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
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--runs", default=str(ROOT / "runs" / "bench_baselines"))
    args = ap.parse_args()

    rows = {}
    t_start = time.perf_counter()
    for name, overrides in VARIANTS.items():
        per_seed = []
        for seed in args.seeds:
            run_dir = Path(args.runs) / f"{args.dataset}_{name.replace(' ', '').replace(',', '_')}_s{seed}"
            cfg = load_config(ROOT / "configs" / "digits_vae.yaml", [
                f"data.name={args.dataset}", *overrides, f"train.steps={args.steps}", f"train.seed={seed}",
                "train.progress=false", "eval.iw_samples=0", f"run.dir={run_dir}"])
            if not (run_dir / "checkpoints" / "last.safetensors").exists():
                train_run(cfg)
            res = evaluate_run(run_dir, n=args.n, seed=seed, progress=False,
                               metrics=("fid_gen", "fid_rec", "pr", "nll", "cost"))
            per_seed.append(res["metrics"])
            features = res["features"]
            print(f"{name} seed {seed}: " + ", ".join(f"{k} {res['metrics'].get(k, float('nan')):.4g}"
                                                      for k in COLUMNS), flush=True)
        rows[name] = {k: [m[k] for m in per_seed if k in m] for k in COLUMNS}

    def cell(values):
        if not values:
            return "—"
        if len(values) == 1:
            return f"{values[0]:.4g}"
        return f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}"

    lines = [f"# Baseline VAE family on {args.dataset}", "",
             f"- command: `python {' '.join(sys.argv)}`",
             f"- machine: {platform.platform()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, CPU",
             f"- seeds: {args.seeds}; {args.steps} steps, batch 128, MLP 256-256, latent 8 (configs/digits_vae.yaml)",
             f"- features: {features['name']} ({features['hash'][:12]}, test accuracy "
             f"{features.get('test_accuracy', float('nan')):.3f}); reference: test split; {args.n} samples",
             "- nll: importance-weighted, K=100, nats per example, test split; bits/dim of the binarised "
             "model is per binary pixel (not comparable with the others)",
             f"- wall time: {time.perf_counter() - t_start:.0f} s", "",
             "| variant | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    lines += [f"| {name} | " + " | ".join(cell(r[k]) for k in COLUMNS) + " |" for name, r in rows.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"baseline_family_{args.dataset}.md").write_text(text)
    (out / f"baseline_family_{args.dataset}.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
