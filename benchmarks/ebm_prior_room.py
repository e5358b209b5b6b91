"""Benchmark (diagnosis): how much a learned prior *can* gain on a trained N(0, I) VAE.

    python -m benchmarks.ebm_prior_room --run runs/bench_ebm_prior_fashion-mnist_e50/N_0__I_s0

With the encoder and decoder fixed, the ELBO depends on the prior only through
-KL(q_agg || p) (Hoffman & Johnson 2016; paper 002, Eq. 11): the best prior for this VAE is its
aggregate posterior q_agg, and the GRBM's job is to approach it. This script fits priors to the
frozen VAE's posterior and scores them, paired on the same binarised test images:

- q_agg itself, as a normalised prior: the mixture of the posteriors of ``--n-mixture``
  training images (a VampPrior whose pseudo-inputs are real images), the direct measure of
  the room a learned prior has on this VAE;
- Gaussian (full covariance) by maximum likelihood: the posterior samples' mean and covariance
  (``quadratic`` energy, exact ln Z): what a second-moment fit gains;
- GRBM 64 x 64 by sliced score matching on the frozen posterior (Adam, ``--steps`` x batch 64,
  each ``--lrs``): what the paper's scheme recovers when the VAE does not move.

(A density estimate of KL(q_agg || N(0, I)) itself is not given: the mixture estimate of
ln q_agg at held-out points is biased low by more than the KL in 64 dimensions; it came out
negative.)

NLL: IW K on the first ``--examples`` test images, minus AIS ln Z for the GRBM
(evaluation/likelihood.py); ΔNLL paired to the N(0, I) prior with the paired stderr.
"""
from __future__ import annotations

import argparse
import copy

import torch

if not __package__:  # started as a file, python benchmarks/NAME.py: rerun as python -m benchmarks.NAME
    import _as_module  # noqa: F401  (benchmarks/_as_module.py; it does not return)
from benchmarks.common import ROOT, header, now, write  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/bench_ebm_prior_fashion-mnist_e50/N_0__I_s0")
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--lrs", type=float, nargs="+", default=[2e-4, 2e-3])
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--examples", type=int, default=1000)
    ap.add_argument("--n-train", type=int, default=20000, help="training posteriors for the fits")
    ap.add_argument("--n-mixture", type=int, default=5000, help="components of the q_agg prior")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from energyvae.evaluation.likelihood import test_log_likelihood
    from energyvae.evaluation.paired import paired_difference
    from energyvae.evaluation.prior_holes import log_aggregate_posterior
    from energyvae.models.priors import Prior
    from energyvae.models.base import PRIORS
    from energyvae.models.priors.schemes.ssm import sliced_score_matching_loss
    from energyvae.runs import load_run

    t0 = now()
    _, data, model = load_run(ROOT / args.run)
    m = model.latent_dim
    torch.manual_seed(args.seed)
    with torch.no_grad():
        enc = [model.encode(data.preprocess(data.train.x[s:s + 1000])) for s in range(0, args.n_train, 1000)]
        mean, std = torch.cat([q.mean for q in enc]), torch.cat([q.std for q in enc])
        z_train = mean + std * torch.randn_like(std)

    base = test_log_likelihood(model, data, k=args.k, max_examples=args.examples, seed=0)
    nll0 = torch.tensor([-v for v in base["per_image_ll"]], dtype=torch.float64)
    rows = [("N(0, I) (trained with the VAE)", base["nll"], None, "")]

    def score(name, prior, note=""):
        mm = copy.deepcopy(model)
        mm.prior = prior
        res = test_log_likelihood(mm, data, k=args.k, max_examples=args.examples, seed=0)
        d = paired_difference(torch.tensor([-v for v in res["per_image_ll"]], dtype=torch.float64), nll0)
        if "nll_unreliable" in res:
            note += " NLL unreliable: " + res["nll_unreliable"]
        rows.append((name, res["nll"], d, note))
        print(f"{name}: NLL {res['nll']:.3f}, paired {d['mean']:+.3f} +- {d['stderr']:.3f}", flush=True)

    class Mixture(Prior):
        """q_agg as a prior: 1/n sum_i N(z; mean_i, diag std_i^2), normalised."""

        def __init__(self, mean, std):
            super().__init__(m)
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)

        def log_prob(self, z):
            flat = z.reshape(-1, m)
            return log_aggregate_posterior(flat, self.mean, self.std, 500).reshape(z.shape[:-1])

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
        torch.manual_seed(args.seed)
        prior = PRIORS.build({"name": "ebm", "energy": {"name": "grbm", "hidden": 64}}, "prior", latent_dim=m)
        opt = torch.optim.Adam(prior.energy_net.parameters(), lr=lr)
        for _ in range(args.steps):
            z = z_train[torch.randint(len(z_train), (64,))]
            loss = sliced_score_matching_loss(prior.energy_net, z)
            opt.zero_grad()
            loss.backward()
            opt.step()
        score(f"GRBM-SSM post hoc (lr {lr:g}, {args.steps} steps)", prior)

    lines = header("How much a learned prior can gain on a trained N(0, I) VAE (binarised Fashion-MNIST)",
                   f"post-hoc fits on the frozen VAE of {args.run}; GRBM: {args.steps} SSM steps x batch 64",
                   now() - t0, {})
    lines += [              f"- NLL: first {args.examples} test images, IW K = {args.k}, minus AIS ln Z for the GRBM; ΔNLL paired "
              "to the N(0, I) row (negative: better) ± paired stderr", "",
              "| prior | NLL | ΔNLL | note |", "|---|---:|---:|---|"]
    lines += [f"| {n} | {v:.3f} | " + (f"{d['mean']:+.3f} ± {d['stderr']:.3f}" if d else "—") + f" | {note} |"
              for n, v, d, note in rows]
    write("ebm_prior_room", lines, {"rows": [(n, v, d) for n, v, d, _ in rows]})


if __name__ == "__main__":
    main()
