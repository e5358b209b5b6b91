"""Benchmark (diagnosis): how much a learned prior *can* gain on a trained N(0, I) VAE.

    python -m benchmarks.ebm_prior_room                       # all three parts (~20 min on 1 thread)
    python -m benchmarks.ebm_prior_room --seeds 0 --no-post-hoc --no-ncp

With the encoder and decoder fixed, the ELBO depends on the prior only through
-KL(q_agg || p) (Hoffman & Johnson 2016; paper 002, Eq. 11): the best prior for this VAE is its
aggregate posterior q_agg, and the GRBM's job is to approach it. Three parts:

1. **The room meter on synthetic targets of known KL** (energyvae/evaluation/room.py): a MAF
   fitted by maximum likelihood to ``--n-synthetic`` points, early-stopped on 10 % as many
   validation points, scored on 20 % as many test points. Targets in 64 dims: N(0, I) (KL 0)
   and a whitened 10-cluster mixture in 8 dims (within-cluster std 0.39, the other 56 dims
   N(0, 1); KL ~4.6 nats by Monte Carlo with its exact density). Beside the MAF: the same
   test points scored by the exact density ("oracle"), by a full-covariance Gaussian fitted
   by maximum likelihood, and the NCP classifier (accuracy; 0.5: no room).
2. **The room of the trained 50-epoch N(0, I) VAEs** of ``--runs-dir`` (binarised
   Fashion-MNIST, paper 002's MLP nets, 64 latents; seeds ``--seeds``): ``--per-image``
   posterior draws per training image fit the MAF, early-stopped on the draws of the
   validation split's images (data.val); the test split is used only for the numbers: the
   held-out room E_test E_q [ln p_MAF(z) - ln N(z)] over all test images (= the test-ELBO gain
   of the MAF as the prior; stderr over images) and the paired IW NLL (K = ``--k``, first
   ``--examples`` test images) with the MAF as the prior minus with N(0, I), same inputs and
   draws. Mean ± stderr over seeds at the bottom.
3. **Post-hoc priors on one VAE** (``--run``; the table this file held before issue 30; skip
   with ``--no-post-hoc``): q_agg as a mixture of ``--n-mixture`` training posteriors, a
   full-covariance Gaussian by maximum likelihood, and the GRBM 64 x 64 by sliced score
   matching on the frozen posterior (Adam, ``--steps`` x batch 64, each ``--lrs``); NLL by IW
   K = ``--k-post-hoc`` minus AIS ln Z for the GRBM, ΔNLL paired to N(0, I).

(A density estimate of KL(q_agg || N(0, I)) from the mixture of posteriors is not given: the
mixture estimate of ln q_agg at held-out points is biased low by more than the KL in 64
dimensions; part 3's mixture prior loses 3.7 nats.)
"""
from __future__ import annotations

import argparse
import copy
import math
import statistics

import torch

if not __package__:  # started as a file, python benchmarks/NAME.py: rerun as python -m benchmarks.NAME
    import _as_module  # noqa: F401  (benchmarks/_as_module.py; it does not return)
from benchmarks.common import ROOT, cell_se, header, now, write  # noqa: E402


def gaussian_room(z_train: torch.Tensor, z_test: torch.Tensor) -> float:
    """Held-out room of the full-covariance Gaussian fitted to ``z_train`` by maximum likelihood."""
    from energyvae.evaluation.room import log_standard_normal
    z_train, z_test = (z.reshape(-1, z.shape[-1]).double() for z in (z_train, z_test))
    mvn = torch.distributions.MultivariateNormal(z_train.mean(0), torch.cov(z_train.T, correction=0))
    return (mvn.log_prob(z_test) - log_standard_normal(z_test)).mean().item()


def synthetic(args, maf_kw, log) -> list[dict]:
    """Part 1: the meter on the two 64-d targets of known KL."""
    from energyvae.evaluation.room import WhitenedMixture, fit_maf, log_standard_normal, ncp_classifier, room
    targets = [("N(0, I), 64 dims", WhitenedMixture(64, within_std=None)),
               ("whitened 10-cluster mixture in 8 of 64 dims", WhitenedMixture(64, 8, 10, 0.39, seed=0))]
    rows = []
    for name, target in targets:
        t = now()
        kl, kl_se = target.kl()
        g = torch.Generator().manual_seed(1)
        n = args.n_synthetic
        z_train, z_val, z_test = target.sample(n, g), target.sample(n // 10, g), target.sample(n // 5, g)
        flow, info = fit_maf(z_train, z_val, seed=0, log=log if args.verbose else None, **maf_kw)
        r = room(flow, z_test)
        oracle = (target.log_prob(z_test) - log_standard_normal(z_test.double())).mean().item()
        row = {"target": name, "kl": kl, "kl_stderr": kl_se, "oracle": oracle, "room": r,
               "gaussian_room": gaussian_room(z_train, z_test), "fit": info}
        if args.ncp:
            row["ncp"] = ncp_classifier(z_train, z_val, z_test, seed=0)
        row["seconds"] = now() - t
        rows.append(row)
        log(f"{name}: KL {kl:.3f} ± {kl_se:.3f}, oracle {oracle:.3f}, MAF room {r['mean']:.3f} ± "
            f"{r['stderr']:.3f} (best epoch {info['best_epoch']}/{info['epochs']}, {info['seconds']:.0f} s)"
            + (f", NCP accuracy {row['ncp']['accuracy']:.3f}" if args.ncp else ""))
    return rows


def vae_room(args, maf_kw, log) -> list[dict]:
    """Part 2: the meter on each trained N(0, I) VAE."""
    from energyvae.evaluation.room import (FlowLogProb, fit_maf, ncp_classifier, paired_prior_nll,
                                           posterior_samples, room)
    from energyvae.runs import load_run
    rows = []
    for seed in args.seeds:
        t = now()
        run = f"{args.runs_dir}/N_0__I_s{seed}"
        _, data, model = load_run(ROOT / run)
        if type(model.prior).__name__ != "StandardNormal":
            raise SystemExit(f"{run}: the prior is {type(model.prior).__name__}, not N(0, I)")
        z_train = posterior_samples(model, data, "train", per_image=args.per_image, seed=0)
        z_val = posterior_samples(model, data, "val", per_image=args.per_image, seed=1)
        z_test = posterior_samples(model, data, "test", per_image=args.per_image, seed=2)
        flow, info = fit_maf(z_train, z_val, seed=seed, log=log if args.verbose else None, **maf_kw)
        r = room(flow, z_test)
        nll = paired_prior_nll(model, data, FlowLogProb(flow), k=args.k, max_examples=args.examples, seed=0)
        row = {"seed": seed, "run": run, "room": r, "fit": info, "nll": nll,
               "gaussian_room": gaussian_room(z_train, z_test),
               "n_images": {"train": z_train.shape[1], "val": z_val.shape[1], "test": z_test.shape[1]}}
        if args.ncp:
            row["ncp"] = ncp_classifier(z_train, z_val, z_test, seed=seed)
        row["seconds"] = now() - t
        rows.append(row)
        d = nll["difference"]
        log(f"seed {seed}: room {r['mean']:+.3f} ± {r['stderr']:.3f} (val {info['val_room']:+.3f}, best epoch "
            f"{info['best_epoch']}/{info['epochs']}), ΔNLL {d['mean']:+.3f} ± {d['stderr']:.3f}, Gaussian "
            f"{row['gaussian_room']:+.3f}" + (f", NCP accuracy {row['ncp']['accuracy']:.3f}" if args.ncp else "")
            + f" ({row['seconds']:.0f} s)")
    return rows


def post_hoc(args, log) -> list[tuple]:
    """Part 3 (the earlier table): post-hoc priors fitted to one frozen VAE's posterior."""
    from energyvae.evaluation.likelihood import test_log_likelihood
    from energyvae.evaluation.paired import paired_difference
    from energyvae.evaluation.prior_holes import log_aggregate_posterior
    from energyvae.models.priors import Prior
    from energyvae.models.base import PRIORS
    from energyvae.models.priors.schemes.ssm import sliced_score_matching_loss
    from energyvae.runs import load_run

    _, data, model = load_run(ROOT / args.run)
    m = model.latent_dim
    torch.manual_seed(0)
    with torch.no_grad():
        enc = [model.encode(data.preprocess(data.train.x[s:s + 1000])) for s in range(0, args.n_train, 1000)]
        mean, std = torch.cat([q.mean for q in enc]), torch.cat([q.std for q in enc])
        z_train = mean + std * torch.randn_like(std)

    base = test_log_likelihood(model, data, k=args.k_post_hoc, max_examples=args.examples, seed=0)
    nll0 = torch.tensor([-v for v in base["per_image_ll"]], dtype=torch.float64)
    rows = [("N(0, I) (trained with the VAE)", base["nll"], None, "")]

    def score(name, prior, note=""):
        mm = copy.deepcopy(model)
        mm.prior = prior
        res = test_log_likelihood(mm, data, k=args.k_post_hoc, max_examples=args.examples, seed=0)
        d = paired_difference(torch.tensor([-v for v in res["per_image_ll"]], dtype=torch.float64), nll0)
        if "nll_unreliable" in res:
            note += " NLL unreliable: " + res["nll_unreliable"]
        rows.append((name, res["nll"], d, note))
        log(f"{name}: NLL {res['nll']:.3f}, paired {d['mean']:+.3f} +- {d['stderr']:.3f}")

    class Mixture(Prior):
        """q_agg as a prior: 1/n sum_i N(z; mean_i, diag std_i^2), normalised."""

        def __init__(self, mean, std):
            super().__init__(m)
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)

        def log_prob(self, z):
            flat = z.reshape(-1, m)
            return log_aggregate_posterior(flat, self.mean, self.std, 500).reshape(z.shape[:-1])

        def sample(self, n):
            i = torch.randint(len(self.mean), (n,))
            return self.mean[i] + self.std[i] * torch.randn(n, m)

    score(f"q_agg: mixture of {args.n_mixture} training posteriors", Mixture(mean[:args.n_mixture], std[:args.n_mixture]))
    gauss = PRIORS.build({"name": "ebm", "energy": {"name": "quadratic", "jitter": 1e-6}}, "prior", latent_dim=m)
    with torch.no_grad():
        cov = torch.cov(z_train.T.double()) + 1e-6 * torch.eye(m, dtype=torch.float64)
        e = gauss.energy_net
        e.center.copy_(z_train.mean(0))
        e.L.copy_(torch.linalg.cholesky(torch.linalg.inv(cov)).float())
    score("full-covariance Gaussian (ML fit)", gauss, "cov eigenvalues "
          f"{torch.linalg.eigvalsh(cov).min():.3f}..{torch.linalg.eigvalsh(cov).max():.3f}")
    for lr in args.lrs:
        torch.manual_seed(0)
        prior = PRIORS.build({"name": "ebm", "energy": {"name": "grbm", "hidden": 64}}, "prior", latent_dim=m)
        opt = torch.optim.Adam(prior.energy_net.parameters(), lr=lr)
        for _ in range(args.steps):
            z = z_train[torch.randint(len(z_train), (64,))]
            loss = sliced_score_matching_loss(prior.energy_net, z)
            opt.zero_grad()
            loss.backward()
            opt.step()
        score(f"GRBM-SSM post hoc (lr {lr:g}, {args.steps} steps)", prior)
    return rows


def pm(r: dict, fmt: str = "+.3f") -> str:
    return f"{format(r['mean'], fmt)} ± {r['stderr']:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", default="runs/bench_ebm_prior_fashion-mnist_e50",
                    help="folder of the trained N(0, I) VAEs N_0__I_s{seed}")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--per-image", type=int, default=2, help="posterior draws per image")
    ap.add_argument("--k", type=int, default=1000, help="IW samples of the paired NLL (part 2)")
    ap.add_argument("--examples", type=int, default=1000, help="test images of the NLLs")
    ap.add_argument("--transforms", type=int, default=4)
    ap.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--max-epochs", type=int, default=200)
    ap.add_argument("--n-synthetic", type=int, default=100_000, help="training points of the synthetic targets")
    ap.add_argument("--ncp", action=argparse.BooleanOptionalAction, default=True,
                    help="also the NCP classifier's accuracy")
    ap.add_argument("--post-hoc", action=argparse.BooleanOptionalAction, default=True,
                    help="part 3, the earlier post-hoc priors table")
    ap.add_argument("--run", default="runs/bench_ebm_prior_fashion-mnist_e50/N_0__I_s0", help="part 3's VAE")
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--lrs", type=float, nargs="+", default=[2e-4, 2e-3])
    ap.add_argument("--k-post-hoc", type=int, default=100)
    ap.add_argument("--n-train", type=int, default=20000, help="training posteriors of part 3's fits")
    ap.add_argument("--n-mixture", type=int, default=5000, help="components of part 3's q_agg prior")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--verbose", action="store_true", help="a line per MAF epoch")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    def log(line):
        print(line, flush=True)

    t0 = now()
    maf_kw = {"transforms": args.transforms, "hidden": args.hidden, "batch_size": args.batch_size,
              "lr": args.lr, "patience": args.patience, "max_epochs": args.max_epochs}
    synth = synthetic(args, maf_kw, log)
    vae = vae_room(args, maf_kw, log)
    old = post_hoc(args, log) if args.post_hoc else []

    maf = (f"MAF {args.transforms} x {args.hidden}, Adam lr {args.lr:g}, batch {args.batch_size}, "
           f"early stopping on validation ln p (patience {args.patience}, at most {args.max_epochs} epochs)")
    lines = header("How much a learned prior can gain on a trained N(0, I) VAE (binarised Fashion-MNIST)",
                   f"room meter: {maf}; seeds {args.seeds}; {args.per_image} posterior draws per image; "
                   f"paired NLL IW K = {args.k} on the first {args.examples} test images"
                   + (f"; post-hoc GRBM: {args.steps} SSM steps x batch 64" if args.post_hoc else ""),
                   now() - t0, {})
    ncp_cols = " NCP accuracy | NCP DV room |" if args.ncp else ""
    ncp_sep = "---:|---:|" if args.ncp else ""

    def ncp_cells(row):
        return f" {row['ncp']['accuracy']:.3f} | {row['ncp']['dv_room']:+.3f} |" if args.ncp else ""

    n = args.n_synthetic
    lines += ["", "## 1. The room meter on synthetic targets of known KL", "",
              f"{n} training, {n // 10} validation and {n // 5} test points (seed 1). True KL: Monte Carlo "
              "over 200 000 points with the exact density; oracle: the exact density's room on the same "
              "test points (the most any prior can read there); MAF room: held-out, ± stderr over the test "
              "points; Gaussian: a full-covariance Gaussian fitted by maximum likelihood, held out.", "",
              f"| target | true KL | oracle | MAF room | MAF / KL | Gaussian room |{ncp_cols} best epoch / epochs | fit s |",
              f"|---|---:|---:|---:|---:|---:|{ncp_sep}---:|---:|"]
    for row in synth:
        frac = f"{row['room']['mean'] / row['kl']:.0%}" if row["kl"] > 0 else "—"
        lines.append(f"| {row['target']} | {row['kl']:.3f} ± {row['kl_stderr']:.3f} | {row['oracle']:+.3f} | "
                     f"{pm(row['room'])} | {frac} | {row['gaussian_room']:+.3f} |{ncp_cells(row)} "
                     f"{row['fit']['best_epoch']} / {row['fit']['epochs']} | {row['fit']['seconds']:.0f} |")
    lines += ["", f"## 2. The room of the trained N(0, I) VAEs ({args.runs_dir}/N_0__I_s{{seed}})", "",
              f"MAF fitted to {args.per_image} posterior draws of each of the {vae[0]['n_images']['train']} "
              f"training images, early-stopped on the draws of the {vae[0]['n_images']['val']} validation "
              f"images; room: held-out over all {vae[0]['n_images']['test']} test images (= the test-ELBO gain "
              "of the MAF as the prior), ± stderr over images; val room: the same on the validation draws at "
              f"the best epoch; ΔNLL: IW K = {args.k} with the MAF as the prior minus with N(0, I), the same "
              f"inputs and draws, first {args.examples} test images, ± paired stderr (negative: the MAF is "
              "better); NLL: N(0, I)'s.", "",
              f"| seed | room (test) | val room | ΔNLL (MAF − N(0, I)) | NLL N(0, I) | Gaussian room |{ncp_cols} "
              "best epoch / epochs | fit s |",
              f"|---|---:|---:|---:|---:|---:|{ncp_sep}---:|---:|"]
    for row in vae:
        lines.append(f"| {row['seed']} | {pm(row['room'])} | {row['fit']['val_room']:+.3f} | "
                     f"{pm(row['nll']['difference'])} | {row['nll']['nll_model_prior']:.3f} | "
                     f"{row['gaussian_room']:+.3f} |{ncp_cells(row)} {row['fit']['best_epoch']} / "
                     f"{row['fit']['epochs']} | {row['fit']['seconds']:.0f} |")
    summary = {"room": [r["room"]["mean"] for r in vae], "val_room": [r["fit"]["val_room"] for r in vae],
               "delta_nll": [r["nll"]["difference"]["mean"] for r in vae],
               "nll": [r["nll"]["nll_model_prior"] for r in vae], "gaussian_room": [r["gaussian_room"] for r in vae]}
    if args.ncp:
        summary["ncp_accuracy"] = [r["ncp"]["accuracy"] for r in vae]
        summary["ncp_dv_room"] = [r["ncp"]["dv_room"] for r in vae]
    ncp_summary = (f" {cell_se(summary['ncp_accuracy'], '.3f', '.3f')} | {cell_se(summary['ncp_dv_room'], '+.3f', '.3f')} |"
                   if args.ncp else "")
    lines.append(f"| mean ± stderr over {len(vae)} seeds | {cell_se(summary['room'], '+.3f', '.3f')} | "
                 f"{cell_se(summary['val_room'], '+.3f', '.3f')} | {cell_se(summary['delta_nll'], '+.3f', '.3f')} | "
                 f"{cell_se(summary['nll'], '.3f', '.3f')} | {cell_se(summary['gaussian_room'], '+.3f', '.3f')} |"
                 f"{ncp_summary} | |")
    if old:
        lines += ["", f"## 3. Post-hoc priors on the frozen VAE of {args.run} (the table before issue 30)", "",
                  f"- NLL: first {args.examples} test images, IW K = {args.k_post_hoc}, minus AIS ln Z for the GRBM; "
                  "ΔNLL paired to the N(0, I) row (negative: better) ± paired stderr; GRBM: "
                  f"{args.steps} SSM steps x batch 64", "",
                  "| prior | NLL | ΔNLL | note |", "|---|---:|---:|---|"]
        lines += [f"| {name} | {v:.3f} | " + (f"{d['mean']:+.3f} ± {d['stderr']:.3f}" if d else "—") + f" | {note} |"
                  for name, v, d, note in old]
    write("ebm_prior_room", lines, {
        "settings": {**vars(args), "maf": maf_kw}, "synthetic": synth, "vae": vae, "summary": summary,
        "summary_mean": {k: statistics.mean(v) for k, v in summary.items()},
        "summary_stderr": {k: (statistics.stdev(v) / math.sqrt(len(v)) if len(v) > 1 else None)
                           for k, v in summary.items()},
        "rows": [(name, v, d) for name, v, d, _ in old]})


if __name__ == "__main__":
    main()
