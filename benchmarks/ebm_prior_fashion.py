"""Benchmark: paper 002's Table 2 / Fig. 1 on dynamically binarised Fashion-MNIST — test NLL
of N(0, I), VampPrior (16), GRBM-SSM, GRBM-Adv. and GRBM short-run CD priors with the paper's
MNIST nets (configs/grbm_ssm_fashion.yaml: 784-256-256 ELU encoder, latent 64, Bernoulli
decoder, GRBM 64 x 64, Adam 1e-3 VAE / 2e-4 prior, batch 64), samples of each, and the
sampling time per 1000 samples.

    python benchmarks/ebm_prior_fashion.py --steps 10000

NLL = IW bound (K importance samples) of the unnormalised joint minus AIS ln Z for the EBM
priors (evaluation/likelihood.py; the AIS standard error is listed). EBM samples: 100 steps
of Langevin (as the paper). The paper's MNIST ordering is SSM 91.89 < Adv. 92.93 < VampPrior
95.25 < N(0, 1) 96.03 nats after 100 epochs; this is Fashion-MNIST at a CPU budget.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, header, now, run_variants, slug, table, write  # noqa: E402

EBM = "model.prior={{name: ebm, energy: {{name: grbm, hidden: 64}}, scheme: {{name: {scheme}}}, " \
      "sampler: {{name: langevin, steps: 100}}}}"
MODELS = {
    "N(0, I)": ["model.prior={name: normal}"],
    "VampPrior (16)": ["model.prior={name: vamp, components: 16}"],
    "GRBM-SSM": [EBM.format(scheme="ssm")],
    "GRBM-Adv.": [EBM.format(scheme="adversarial")],
    "GRBM short-run CD": [EBM.format(scheme="short_run")],
}
COLUMNS = ["nll", "nll_stderr", "ais_log_z", "ais_stderr", "log_z_qagg_bound", "sec_per_1000_samples",
           "train_seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10000)
    ap.add_argument("--k", type=int, default=1000, help="importance samples of the NLL")
    ap.add_argument("--examples", type=int, default=1000, help="test images in the NLL")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", help="run only these models")
    args = ap.parse_args()
    from energyvae.evaluation.likelihood import test_log_likelihood
    from energyvae.runs import load_run
    from energyvae.viz.analysis import plot_beta_walk

    models = {k: v for k, v in MODELS.items() if not args.only or k in args.only}
    runs_dir = ROOT / "runs" / "bench_ebm_fashion"
    t0 = now()
    rows = run_variants(models, config="configs/grbm_ssm_fashion.yaml",
                        common=["train.epochs=null", f"train.steps={args.steps}", "train.eval_every=1000000",
                                "train.checkpoint_every=2000"],
                        seeds_for=lambda _: [args.seed], columns=["train_seconds"], metrics=(), runs_dir=runs_dir)
    grids, unreliable = {}, {}
    for name in models:
        _, data, model = load_run(runs_dir / f"{slug(name)}_s{args.seed}")
        res = test_log_likelihood(model, data, k=args.k, max_examples=args.examples, seed=args.seed)
        torch.manual_seed(args.seed)
        model.sample(10)                                   # warm-up
        t = time.perf_counter()
        x = model.sample(1000)
        sec = time.perf_counter() - t
        grids[name] = data.preprocess.to_unit(x[:16])
        v = rows[name]["values"]
        ais = res.get("ais", {})
        if "nll_unreliable" in res:                        # AIS missed the energy's modes
            unreliable[name] = res["nll_unreliable"]
        v.update({"nll": [float("nan") if name in unreliable else res["nll"]], "nll_stderr": [res["nll_stderr"]],
                  **{col: [ais[key]] if key in ais else [] for col, key in
                     (("ais_log_z", "log_z"), ("ais_stderr", "stderr"), ("log_z_qagg_bound", "log_z_qagg_bound"))},
                  "sec_per_1000_samples": [sec]})
        print(f"{name}: NLL {res['nll']:.2f} +- {res['nll_stderr']:.2f}, {sec:.2f} s / 1000 samples", flush=True)
    fig = plot_beta_walk(grids, RESULTS / "ebm_prior_fashion_samples.png", label="prior",
                         title="samples (decoder mean), binarised Fashion-MNIST")
    lines = header("Paper 002, Table 2 on binarised Fashion-MNIST: EBM priors",
                   f"{args.steps} steps x batch 64 per model, seed {args.seed}", now() - t0, rows)
    lines += [f"- NLL: {args.examples} test images, IW K = {args.k}; EBM priors minus AIS ln Z "
              "(256 chains, 1000 temperatures, MALA); nats, lower is better",
              "- sampling: 1000 samples (prior sampler + decoder), wall seconds on this machine",
              "- log_z_qagg_bound: importance-sampling lower bound on ln Z from the aggregate posterior; "
              "an NLL is left out (nan) when it exceeds the AIS value (evaluation/likelihood.py)",
              *[f"- {k}: NLL left out: {why}" for k, why in unreliable.items()],
              f"- figure: {fig.name}", "", *table("prior", COLUMNS, rows)]
    write("ebm_prior_fashion", lines, rows)


if __name__ == "__main__":
    main()
