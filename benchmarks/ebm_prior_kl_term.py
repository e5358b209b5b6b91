"""Benchmark (diagnosis): ablations of EBM-prior training, paired on the same test images.

    python -m benchmarks.ebm_prior_kl_term --steps 3000 --seeds 0 1 2                    # the KL term
    python -m benchmarks.ebm_prior_kl_term --study prior_lr --epochs 10 --seeds 0 1 2     # the prior's lr

Study ``kl_term`` (the default): what the VAE's KL-term estimator of an EBM prior costs.
With an unnormalised prior the VAE update needs E_q[ln q(z|x) + E(z)] (ln Z is constant). Paper
002's Alg. 1 uses the one-sample value ln q(z|x) + E(z) at z ~ q; the library now takes the
energy's Gaussian part in closed form (-H(q) + expected_energy, models/priors/energies.py).
To isolate the estimator, a *fixed* N(0, I) energy (``quadratic`` at its initial c = 0, P = I,
its update effectively off: lr 1e-12, once) is trained through each term and compared, paired
on the same binarised test images, with the ordinary N(0, I) VAE (closed-form KL); the GRBM-SSM
prior is trained through each term as well. Nets: configs/grbm_ssm_fashion.yaml (binarised
Fashion-MNIST, paper 002's MNIST nets, batch 64). NLL: IW K on the first ``--examples`` test
images, minus AIS ln Z for the EBM priors (evaluation/likelihood.py).

Study ``prior_lr``: GRBM-SSM and GRBM-Adv. with the paper's prior learning rate 2e-4 and with
10x that, against N(0, I): does a prior that moves faster follow the encoder and gain?
"""
from __future__ import annotations

import argparse
import statistics

if not __package__:  # started as a file, python benchmarks/NAME.py: rerun as python -m benchmarks.NAME
    import _as_module  # noqa: F401  (benchmarks/_as_module.py; it does not return)
from benchmarks.common import ROOT, header, now, run_variants, slug, write  # noqa: E402

FIXED = ("model.prior={{name: ebm, energy: {{name: quadratic}}, kl_term: {term}, "
         "scheme: {{name: ssm, lr: 1.0e-12, every: 1000000000}}}}")
GRBM = "model.prior={{name: ebm, energy: {{name: grbm, hidden: 64}}, kl_term: {term}, scheme: {{name: ssm}}}}"
KL_TERM = {
    "N(0, I), closed-form KL": ["model.prior={name: normal}"],
    "fixed N(0, I) energy, closed-form term": [FIXED.format(term="closed_form")],
    "fixed N(0, I) energy, one-sample term": [FIXED.format(term="one_sample")],
    "GRBM-SSM, closed-form term": [GRBM.format(term="closed_form")],
    "GRBM-SSM, one-sample term": [GRBM.format(term="one_sample")],
}
LR = ("model.prior={{name: ebm, energy: {{name: grbm, hidden: 64}}, scheme: {{name: {scheme}, lr: {lr}}}}}")
PRIOR_LR = {
    "N(0, I)": ["model.prior={name: normal}"],
    **{f"GRBM-{short}, prior lr {lr}": [LR.format(scheme=scheme, lr=lr)]
       for scheme, short in (("ssm", "SSM"), ("adversarial", "Adv.")) for lr in ("2.0e-4", "2.0e-3")},
}
STUDIES = {   # models, baseline, extra contrasts
    "kl_term": (KL_TERM, "N(0, I), closed-form KL",
                [("fixed N(0, I) energy, one-sample term", "fixed N(0, I) energy, closed-form term"),
                 ("GRBM-SSM, one-sample term", "GRBM-SSM, closed-form term")]),
    "prior_lr": (PRIOR_LR, "N(0, I)",
                 [("GRBM-SSM, prior lr 2.0e-3", "GRBM-SSM, prior lr 2.0e-4"),
                  ("GRBM-Adv., prior lr 2.0e-3", "GRBM-Adv., prior lr 2.0e-4")]),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", choices=sorted(STUDIES), default="kl_term")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=None, help="instead of --steps")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--examples", type=int, default=1000)
    args = ap.parse_args()
    import torch
    from energyvae.evaluation.likelihood import test_log_likelihood
    from energyvae.evaluation.paired import paired_difference
    from energyvae.runs import load_run

    MODELS, BASELINE, CONTRASTS = STUDIES[args.study]
    runs_dir = ROOT / "runs" / f"bench_ebm_prior_{args.study}"
    budget = (f"train.epochs={args.epochs}", "train.steps=null") if args.epochs else \
        ("train.epochs=null", f"train.steps={args.steps}")
    t0 = now()
    run_variants(MODELS, config="configs/grbm_ssm_fashion.yaml",
                 common=[*budget, "train.eval_every=1000000", "train.checkpoint_every=1000"],
                 seeds_for=lambda _: args.seeds, columns=["train_seconds"], metrics=(), runs_dir=runs_dir)
    nll = {}
    for name in MODELS:
        for s in args.seeds:
            _, data, model = load_run(runs_dir / f"{slug(name)}_s{s}")
            res = test_log_likelihood(model, data, k=args.k, max_examples=args.examples, seed=0)
            nll[(name, s)] = torch.tensor([-v for v in res["per_image_ll"]], dtype=torch.float64)
            print(f"{name} seed {s}: NLL {res['nll']:.3f}", flush=True)

    def paired(a, b):
        per_seed = [paired_difference(nll[(a, s)], nll[(b, s)]) for s in args.seeds]
        means = [d["mean"] for d in per_seed]
        spread = f" ± {statistics.stdev(means):.2f} (sd over seeds)" if len(means) > 1 else ""
        return (f"{statistics.mean(means):+.3f}{spread} | "
                + ", ".join(f"{d['mean']:+.2f} ± {d['stderr']:.2f}" for d in per_seed))

    title = {"kl_term": "What the KL-term estimator of an EBM prior costs",
             "prior_lr": "The EBM prior's learning rate"}[args.study]
    lines = header(f"{title} (binarised Fashion-MNIST)",
                   (f"{args.epochs} epochs" if args.epochs else f"{args.steps} steps") + " x batch 64 per run (configs/grbm_ssm_fashion.yaml), seeds "
                   + " ".join(map(str, args.seeds)), now() - t0, {})
    lines += [f"- NLL: first {args.examples} test images (the same binarised images for every run), "
              f"IW K = {args.k}, EBM priors minus AIS ln Z; ΔNLL: paired per-image differences (nats; "
              "negative: the first is better), per seed with its paired stderr",
              "- the per-seed paired stderr covers the evaluation only; the spread over seeds also "
              "holds the training noise (different random streams)", "",
              "| comparison | mean ΔNLL over seeds | per seed (± paired stderr) |", "|---|---:|---|"]
    lines += [f"| {a} − {b} | {paired(a, b)} |" for a, b in CONTRASTS]
    lines += [f"| {a} − {BASELINE} | {paired(a, BASELINE)} |" for a in MODELS if a != BASELINE]
    mean_nll = {name: statistics.mean(float(nll[(name, s)].mean()) for s in args.seeds) for name in MODELS}
    lines += ["", "| model | NLL (mean over seeds) |", "|---|---:|",
              *[f"| {k} | {v:.3f} |" for k, v in mean_nll.items()]]
    write(f"ebm_prior_{args.study}", lines, {"nll_mean": mean_nll})


if __name__ == "__main__":
    main()
