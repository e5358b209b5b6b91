"""Benchmark: EVaLP (paper 003) — an EBM prior whose sampler network S replaces MCMC — against
N(0, I) and against the same energy sampled by MCMC: FID of samples, test NLL, the
prior-hole metric and the sampling time per 1000 images, all in one run.

    python -m benchmarks.evalp --dataset digits --steps 6000

Two models are trained with one VAE (configs/digits_vae.yaml or the binarised Fashion-MNIST
MLP of configs/fashion_binarized_mlp.yaml): N(0, I) prior, and EVaLP (MLP energy
z -> 200 -> 200 -> 1, the authors' size, tilted by N(0, I) so that Z is finite, which is
the authors' -ln N(z; 0, I) term; flow sampler; joint training). The EVaLP model is then
sampled by S (no MCMC), by the library's adapted MALA from N(0, I) on the same energy (2000
steps; its split R-hat says whether it mixed: the speed-up is measured against it), by the
papers' unadjusted Langevin (100 steps of h = 0.01, which does not reach the prior), and by S
refined with 20 Langevin steps. NLL = IW bound minus AIS ln Z for the EBM (one number per
trained model: it does not depend on the sampler). Prior holes:
energyvae.evaluation.prior_holes (gap = mean ln q_agg at posterior minus at prior samples;
hole fraction = prior samples below the posterior samples' 1 % quantile). Speed: wall seconds
for 1000 images (prior sampler + decoder).
"""
from __future__ import annotations

import argparse

import torch

if not __package__:  # started as a file, python benchmarks/NAME.py: rerun as python -m benchmarks.NAME
    import _as_module  # noqa: F401  (benchmarks/_as_module.py; it does not return)
from benchmarks.common import ROOT, draw, header, now, run_variants, slug, table, write  # noqa: E402

CONFIGS = {"digits": "configs/digits_vae.yaml", "fashion-mnist": "configs/fashion_binarized_mlp.yaml"}
EVALP = ("model.prior={name: ebm, energy: {name: tilted, hidden: [200, 200]}, "
         "scheme: {name: evalp, sampler_net: flow}}")
MODELS = {"N(0, I)": [], "EVaLP": [EVALP]}
COLUMNS = ["fid_gen", "nll", "log_q_agg_gap", "hole_fraction", "rhat", "sec_per_1000"]


PAPER_LANGEVIN = {"name": "langevin", "steps": 100, "step_size": 0.01}


def with_refiner(model, steps: int) -> None:
    """EVaLP's S followed by ``steps`` Langevin steps of the energy (the scheme's refiner)."""
    from energyvae.models.priors.samplers import Langevin
    scheme = model.prior.scheme
    scheme.refiner = Langevin(model.latent_dim, steps, scheme.p.refine_step_size) if steps else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=sorted(CONFIGS), default="digits")
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--n", type=int, default=2000, help="samples for FID and prior holes")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from energyvae.evaluation.features import get_feature_net, to_unit_images
    from energyvae.evaluation.likelihood import test_log_likelihood
    from energyvae.evaluation.prior_holes import prior_hole_metrics
    from energyvae.evaluation.sample_metrics import compute_sample_metrics
    from energyvae.runs import load_run

    runs_dir = ROOT / "runs" / f"bench_evalp_{args.dataset}"
    t0 = now()
    trained = run_variants(MODELS, config=CONFIGS[args.dataset],
                           common=["train.epochs=null", f"train.steps={args.steps}", "train.eval_every=1000000",
                                   "train.checkpoint_every=2000", "eval.iw_samples=0"],
                           seeds_for=lambda _: [args.seed], columns=["train_seconds"], metrics=(), runs_dir=runs_dir)
    rows, per_image = {}, {}
    for name in MODELS:
        _, data, model = load_run(runs_dir / f"{slug(name)}_s{args.seed}")
        net, info = get_feature_net(data, seed=args.seed, progress=False)
        real = to_unit_images(data, data.test.x[:args.n])
        nll = test_log_likelihood(model, data, k=500, max_examples=500, seed=0)   # same images for both
        n_nll = nll["examples"]
        per_image[name] = [-v for v in nll["per_image_ll"]]
        gens = {name: None} if name == "N(0, I)" else {
            "EVaLP (sampler S)": None, "same energy, MALA (adapted, 2000 steps)": {"name": "mala"},
            "same energy, Langevin 100 x 0.01 (paper)": PAPER_LANGEVIN, "EVaLP + 20 Langevin steps": "refine"}
        for gname, spec in gens.items():
            if hasattr(model.prior, "scheme"):
                with_refiner(model, 20 if spec == "refine" else 0)
            spec = None if spec == "refine" else spec
            torch.manual_seed(args.seed)
            draw(model, 10, spec)                                 # warm-up
            torch.manual_seed(args.seed)
            fake, diag, sec = draw(model, args.n, spec)
            fid = compute_sample_metrics(real, data.preprocess.to_unit(fake), net, metrics=("fid",))["fid"]
            holes = prior_hole_metrics(model, data, n_prior=args.n, n_data=args.n, seed=args.seed)
            rows[gname] = {"values": {"fid_gen": [fid], "nll": [nll["nll"]], "sec_per_1000": [sec],
                                      "log_q_agg_gap": [holes["log_q_agg_gap"]],
                                      "hole_fraction": [holes["hole_fraction"]],
                                      "rhat": [diag["rhat_max"]] if diag else [],
                                      "mixed": [float(diag["mixed"])] if diag else []},
                           "features": info, "reference": {"split": "test", "n": len(real)}}
            print(f"{gname}: FID {fid:.3f}, NLL {nll['nll']:.2f}, gap {holes['log_q_agg_gap']:.2f}, "
                  f"holes {holes['hole_fraction']:.3f}, {sec:.3f} s / 1000"
                  + (f", R-hat {diag['rhat_max']:.3f}" if diag else ""), flush=True)
    from energyvae.evaluation.paired import paired_difference
    d = paired_difference(per_image["EVaLP"], per_image["N(0, I)"])
    ref = "same energy, MALA (adapted, 2000 steps)"
    speedup = rows[ref]["values"]["sec_per_1000"][0] / rows["EVaLP (sampler S)"]["values"]["sec_per_1000"][0]
    mixed = bool(rows[ref]["values"]["mixed"][0])
    lines = header(f"EVaLP (paper 003) on {args.dataset}",
                   f"{args.steps} steps per model ({CONFIGS[args.dataset]}), seed {args.seed}", now() - t0, rows)
    lines += [f"- training seconds: " + ", ".join(f"{k} {v['values']['train_seconds'][0]:.0f}"
                                                   for k, v in trained.items()),
              f"- NLL: {n_nll} test images (the same for both models), IW K = 500, EBM: minus AIS ln Z; "
              f"FID/holes: {args.n} samples",
              f"- paired ΔNLL, EVaLP − N(0, I): {d['mean']:+.3f} ± {d['stderr']:.3f} nats (mean per-image "
              "difference ± its standard error; negative: EVaLP better)",
              f"- EVaLP's sampling speed-up over MCMC on the same energy: {speedup:.1f}x against MALA, whose "
              f"chains {'mixed' if mixed else 'did NOT mix'} (split R-hat < 1.05, drift < 4 sd; "
              "evaluation/mcmc_diagnostics.py); the papers' 100 unadjusted Langevin steps do not reach the "
              "prior (R-hat column). Wall time, same run; the paper claims 5-10x over MCMC EBM priors", "",
              *table("generator", COLUMNS, rows)]
    write(f"evalp_{args.dataset}", lines, rows)


if __name__ == "__main__":
    main()
