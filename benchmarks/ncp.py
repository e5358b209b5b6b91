"""NCP-VAE (Aneja et al. 2021) on digits, with its original loss, +EnL and +FEnL (paper 000
Table 2's NCP rows), paired per seed.

    python -m benchmarks.ncp --seeds 0 1 2                     # ~15 min on one CPU core
    python -m benchmarks.ncp --seeds 0 --vae-steps 500 --classifier-steps 200   # smoke

Each run is configs/ncp_digits.yaml (the digits MLP VAE, two-stage: the VAE with N(0, I) for
``--vae-steps``, then the classifier for ``--classifier-steps`` on the frozen encoder) with one
reconstruction objective: ``bernoulli`` (the original), ``energy_score`` with M = 10 (+EnL) or
``fast_energy_score`` (+FEnL, the antithetic default). From one run come two generators sharing the encoder and
decoder: z ~ N(0, I) (the base VAE) and z ~ the NCP prior by SIR. So "NCP - base" is paired
twice over, same weights and same seed, and isolates what the reweighted prior does; "+EnL -
original" pairs runs of the same seed.

Measured per run: FID_gen of 1000 samples (both generators), FID_rec of 1000 test images,
against the test split with the library's digits feature network; the classifier's accuracy
and its ln Z estimate (ln E_N(0,I)[r], 0 for an optimal classifier); for the Bernoulli
objective, the test NLL of both priors from the same IW samples (K = 100, 180 test images;
NCP's ln Z from the classifier's estimate) as a per-image paired difference.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

if not __package__:  # started as a file, python benchmarks/NAME.py: rerun as python -m benchmarks.NAME
    import _as_module  # noqa: F401  (benchmarks/_as_module.py; it does not return)
from benchmarks.common import (ROOT, cell_se, header, now, slug, train_or_reuse,  # noqa: E402
                               train_seconds, write)

from energyvae.evaluation.features import get_feature_net, to_unit_images  # noqa: E402
from energyvae.evaluation.paired import paired_difference  # noqa: E402
from energyvae.evaluation.sample_metrics import compute_sample_metrics  # noqa: E402
from energyvae.models.priors import StandardNormal  # noqa: E402
from energyvae.models.priors.schemes.ncp import log_ratio  # noqa: E402
from energyvae.runs import load_run  # noqa: E402

# +EnL with M = 10 samples (envae_speed.md: 5.5x a VAE step; M = 50 would cost 26x)
OBJECTIVES = {"original (Bernoulli)": "bernoulli", "+EnL": "{name: energy_score, samples: 10}",
              "+FEnL": "{name: fast_energy_score}"}
# The energy score is not in nats: with the ELBO's KL weight 1 against a score of ~1.4 per image
# the posterior collapses toward N(0, I) (``--score-kl-weight 1``: results/ncp_digits_score_kl1.md).
# Energy-score rows therefore use the KL weight of the paper-000 benchmarks
# (common.envae_overrides, alpha = 0.01, not tuned); --score-kl-weight changes it.


def _fid(net, real, fake) -> float:
    return compute_sample_metrics(real, fake, net, metrics=("fid",))["fid"]


class NormalizedNCP:
    """The NCP prior as a normalised density, with the classifier's estimate of ln Z:
    ln p_NCP(z) = ln N(z; 0, I) + ln r(z) - ln Z (what ``iw_log_likelihood`` scores z with)."""

    def __init__(self, prior, log_z: float):
        self.base, self.prior, self.log_z = StandardNormal(prior.latent_dim), prior, log_z

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.base.log_prob(z) + log_ratio(self.prior, z) - self.log_z


def evaluate(run_dir: Path, seed: int, n: int, net, likelihood: bool) -> dict:
    cfg, data, model = load_run(run_dir)
    prior, m = model.prior, model.latent_dim
    real = to_unit_images(data, data.test.x[:n])
    to_unit = data.preprocess.to_unit
    out = {}
    torch.manual_seed(seed)
    base = to_unit(model.reconstruction.mean(model.decode(torch.randn(n, m)))).cpu()
    torch.manual_seed(seed)
    ncp = to_unit(model.sample(n)).cpu()
    rec = to_unit(model.reconstruct(data.preprocess(data.test.x[:n]))).cpu()
    out["fid_gen_base"], out["fid_gen_ncp"], out["fid_rec"] = _fid(net, real, base), _fid(net, real, ncp), _fid(net, real, rec)
    torch.manual_seed(seed)
    log_z, log_z_se = prior.scheme.log_partition(prior, n=100_000)
    out["log_z"], out["log_z_stderr"] = log_z, log_z_se
    zq = model.encode(data.preprocess(data.test.x)).rsample()
    zp = torch.randn_like(zq)
    out["classifier_accuracy"] = float(0.5 * ((log_ratio(prior, zq) > 0).float().mean()
                                              + (log_ratio(prior, zp) < 0).float().mean()))
    if likelihood:   # the same IW draws for both priors (same seed; K = 100 in one chunk)
        x = data.preprocess(data.test.x)
        torch.manual_seed(seed)
        nll_base = -model.iw_log_likelihood(x, 100, chunk=100, prior=StandardNormal(m))
        torch.manual_seed(seed)
        nll_ncp = -model.iw_log_likelihood(x, 100, chunk=100, prior=NormalizedNCP(prior, log_z))
        out["nll_base"], out["nll_ncp"] = float(nll_base.mean()), float(nll_ncp.mean())
        d = paired_difference(nll_ncp.tolist(), nll_base.tolist())
        out["nll_ncp_minus_base"], out["nll_ncp_minus_base_stderr"] = d["mean"], d["stderr"]
    return out


def run_ncp(seeds, vae_steps: int, classifier_steps: int, n: int, runs: str, score_kl_weight: float,
            log=print, config: str = "ncp_digits") -> tuple[dict, dict]:
    """Train (or reuse) and evaluate every objective x seed: ({label: {seed: result}}, features)."""
    results, net, feat = {}, None, None
    for label, recon in OBJECTIVES.items():
        for seed in seeds:
            tag = "" if recon == "bernoulli" else f"_kl{score_kl_weight:g}"
            run_dir = ROOT / runs / f"{slug(recon)}{tag}_s{seed}"
            total = vae_steps + classifier_steps
            kl = [] if recon == "bernoulli" else [f"model.kl_weight={score_kl_weight}"]
            # one run, two stages: the VAE for vae_steps, then the classifier on the frozen encoder
            cfg = train_or_reuse(config, [f"model.reconstruction={recon}", *kl, f"train.steps={total}",
                                          f"model.prior.scheme.two_stage_at={vae_steps}",
                                          "train.eval_every=1000000", "train.checkpoint_every=1000"],
                                 run_dir, seed=seed)
            if net is None:
                from energyvae.data import load_data
                net, feat = get_feature_net(load_data(cfg.data), seed=0, progress=False)
            res = evaluate(run_dir, seed, n, net, likelihood=recon == "bernoulli")
            res["train_seconds"] = train_seconds(run_dir)
            results.setdefault(label, {})[seed] = res
            log(f"{label} seed {seed}: " + ", ".join(f"{k} {v:.4g}" for k, v in res.items()))
    return results, feat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--vae-steps", type=int, default=3000)
    ap.add_argument("--classifier-steps", type=int, default=1000)
    ap.add_argument("--n", type=int, default=1000, help="samples and test images per FID")
    ap.add_argument("--runs", default="runs/bench_ncp")
    ap.add_argument("--score-kl-weight", type=float, default=0.01,
                    help="KL weight of the +EnL / +FEnL runs (the Bernoulli run keeps the ELBO's 1)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = now()
    results, feat = run_ncp(args.seeds, args.vae_steps, args.classifier_steps, args.n, args.runs,
                            args.score_kl_weight, log=lambda s: print(s, flush=True))
    seconds = now() - t0
    seeds = args.seeds
    lines = header("NCP-VAE on digits: original loss, +EnL, +FEnL (paper 000 Table 2, NCP rows)",
                   f"{args.vae_steps} VAE steps (N(0, I)) + {args.classifier_steps} classifier steps, batch 128, KL weight 1 "
                   f"(Bernoulli) / {args.score_kl_weight:g} (+EnL, +FEnL), "
                   f"seeds {seeds}, FID over {args.n} samples / test images", seconds,
                   {"x": {"features": feat, "reference": {"split": "test", "n": args.n}}})
    lines += ["", "Cells: mean ± standard error over seeds. \"NCP − base\" is paired within each run (same "
              "encoder, decoder and seed; only z's prior differs).", "",
              "| objective | FID_gen base N(0, I) | FID_gen NCP (SIR) | NCP − base | FID_rec | classifier acc. | ln Z (classifier) | train s |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, per in results.items():
        v = lambda k: [per[s][k] for s in seeds]  # noqa: E731
        diff = [per[s]["fid_gen_ncp"] - per[s]["fid_gen_base"] for s in seeds]
        lines.append(f"| {label} | {cell_se(v('fid_gen_base'))} | {cell_se(v('fid_gen_ncp'))} | {cell_se(diff)} | "
                     f"{cell_se(v('fid_rec'))} | {cell_se(v('classifier_accuracy'))} | {cell_se(v('log_z'))} | {cell_se(v('train_seconds'))} |")
    orig = results["original (Bernoulli)"]
    lines += ["", "Integration of the energy score, paired per seed against the original loss (same seed):", "",
              "| objective | Δ FID_gen NCP | Δ FID_gen base | Δ FID_rec | Impr. FID_gen NCP |", "|---|---:|---:|---:|---:|"]
    for label in ("+EnL", "+FEnL"):
        per = results[label]
        d = {k: [per[s][k] - orig[s][k] for s in seeds] for k in ("fid_gen_ncp", "fid_gen_base", "fid_rec")}
        impr = [100 * (orig[s]["fid_gen_ncp"] - per[s]["fid_gen_ncp"]) / orig[s]["fid_gen_ncp"] for s in seeds]
        lines.append(f"| {label} | {cell_se(d['fid_gen_ncp'])} | {cell_se(d['fid_gen_base'])} | {cell_se(d['fid_rec'])} | "
                     f"{cell_se(impr)} % |")
    lines += ["", "Test NLL of the Bernoulli runs (nats; IW K = 100, the same draws for both priors, "
              "NCP with the classifier's ln Z), paired per image:", "",
              "| seed | NLL base | NLL NCP | NCP − base (± paired stderr) |", "|---|---:|---:|---:|"]
    for s in seeds:
        r = orig[s]
        lines.append(f"| {s} | {r['nll_base']:.3f} | {r['nll_ncp']:.3f} | "
                     f"{r['nll_ncp_minus_base']:+.3f} ± {r['nll_ncp_minus_base_stderr']:.3f} |")
    name = "ncp_digits" if args.score_kl_weight == 0.01 else f"ncp_digits_score_kl{args.score_kl_weight:g}"
    write(name, lines, {k: {str(s): v for s, v in per.items()} for k, per in results.items()})


if __name__ == "__main__":
    main()
