"""Benchmark: paper 002's Table 2 / Fig. 1 on dynamically binarised Fashion-MNIST — EBM latent
priors against N(0, I), paired on the same test images, with the samplers' diagnostics.

    python -m benchmarks.ebm_prior_fashion --epochs 50 --seeds 0
    python -m benchmarks.ebm_prior_fashion --epochs 50 --seeds 0 --only "GRBM-SSM" "GRBM-Adv."  # a part
    python -m benchmarks.ebm_prior_fashion --dataset digits --epochs 20 --seeds 0 1 2 --k 100 --examples 360 --n 360

(the last is the CI-sized smoke version: a few minutes on one CPU thread). Parts can run in
parallel processes with disjoint ``--only`` lists; the run without ``--only`` then reuses their
trained runs and cached evaluations and writes the table.

Nets (configs/grbm_ssm_fashion.yaml, paper 002's MNIST nets): 784-256-256 ELU encoder, latent
64, Bernoulli decoder, Adam 1e-3 (VAE), batch 64. Priors: N(0, I); VampPrior (16
pseudo-inputs); GRBM 64 x 64 trained by sliced score matching (SSM) and by adversarial CD
(Adv.), Adam 2e-4 (the paper), and by maximum likelihood (ML: persistent CD with
Gibbs-Langevin negatives, Adam 1e-3; schemes/ml.py); every GRBM starts from W std 1 / sqrt(m + h)
(issue 30; runs with the old W std 0.01 are refused as stale); the exponentially tilted MLP
prior of Pang et al. (2020),
E(z) = f(z) + ||z||^2 / 2 with f 64-200-200-1, trained by short-run CD with their Langevin
(60 steps, s = 0.4, i.e. h = 0.08) and their prior optimiser (Adam 2e-5, betas 0.5 / 0.999);
EVaLP (paper 003) with the same tilted energy and a flow or an implicit sampler network S.

Per model (one trained run per seed, reused when present):
- NLL: IW bound with K importance samples on the first ``--examples`` test images, minus AIS ln Z
  for the EBM priors (256 chains, ``--ais-temps`` temperatures, default 10000: with 1000 the
  GRBM-Adv. ln Z came out 0.65-1.1 nats low, ESS 3-5 of 256, which made its NLL look that much
  better; MALA; its stderr, and the aggregate
  posterior's lower bound on ln Z as a sanity check: an NLL whose AIS value falls below that
  bound is left out); bits/dim. Every model sees the same binarised test images
  (evaluation/likelihood.py), so **paired** differences to N(0, I) are reported: the mean
  per-image difference and its standard error (std of the differences / sqrt(n)).
- FID of 2000 samples (the library's Fashion-MNIST classifier features, test split reference).
- Samplers on each trained energy: the paper's Langevin (100 steps of h = 0.01), the library's
  MALA (adapted; 2000 steps, the default, and 500), Gibbs-Langevin for the GRBM (100 sweeps),
  S for EVaLP: split R-hat and drift (evaluation/mcmc_diagnostics.py; mixed:
  R-hat < 1.05 and |drift| < 4), acceptance, FID, seconds per 1000 samples
  (sampler + decoder, wall time on this machine: the median of 3 rounds in which every
  generator of every model draws 1000 samples in turn, in the final table-writing process).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import torch

if not __package__:  # started as a file, python benchmarks/NAME.py: rerun as python -m benchmarks.NAME
    import _as_module  # noqa: F401  (benchmarks/_as_module.py; it does not return)
from benchmarks.common import (RESULTS, ROOT, draw, finished, header, now, run_path, run_variants,  # noqa: E402
                               slug, write)

GRBM = "{name: grbm, hidden: 64}"
TILTED = "{name: tilted, hidden: [200, 200]}"
MODELS = {
    "N(0, I)": ["model.prior={name: normal}"],
    "VampPrior (16)": ["model.prior={name: vamp, components: 16}"],
    "GRBM-SSM": [f"model.prior={{name: ebm, energy: {GRBM}, scheme: {{name: ssm}}}}"],
    "GRBM-Adv.": [f"model.prior={{name: ebm, energy: {GRBM}, scheme: {{name: adversarial}}}}"],
    "GRBM-ML": [f"model.prior={{name: ebm, energy: {GRBM}, scheme: {{name: ml}}}}"],
    "tilted short-run CD": [f"model.prior={{name: ebm, energy: {TILTED}, scheme: {{name: short_run, "
                            "lr: 2.0e-5, betas: [0.5, 0.999]}}"],
    "EVaLP (flow S)": [f"model.prior={{name: ebm, energy: {TILTED}, scheme: {{name: evalp, sampler_net: flow}}}}"],
    "EVaLP (implicit S)": [f"model.prior={{name: ebm, energy: {TILTED}, "
                           "scheme: {name: evalp, sampler_net: implicit}}"],
}
CONFIGS = {"fashion-mnist": "configs/grbm_ssm_fashion.yaml", "digits": "configs/grbm_ssm_fashion.yaml"}
PAPER_LANGEVIN = {"name": "langevin", "steps": 100, "step_size": 0.01}
BASELINE = "N(0, I)"


def samplers_for(model) -> dict:
    """The samplers compared on a trained EBM prior: name -> sampler spec (None: the model's own)."""
    from energyvae.models.priors.energies import GRBMEnergy
    energy = model.prior.energy_net
    out = {"Langevin 100 x 0.01 (paper)": PAPER_LANGEVIN,
           "MALA 500 steps": {"name": "mala", "steps": 500, "warmup": 100},
           "MALA (default: 2000 steps)": {"name": "mala"}}
    if isinstance(energy, GRBMEnergy):
        out["Gibbs-Langevin"] = {"name": "gibbs_langevin"}
    if model.prior.scheme.sample(model.prior, 2) is not None:       # EVaLP's S (no MCMC)
        out["S (no MCMC)"] = None
    return out


def evaluate(run_dir: Path, seed: int, args, fid) -> dict:
    """NLL (per image) and the sampler table of one trained run, cached in the run folder."""
    from energyvae.evaluation.likelihood import test_log_likelihood
    from energyvae.runs import load_run
    cache = run_dir / "bench_ebm_prior.json"
    out = json.loads(cache.read_text()) if cache.exists() else {}
    _, data, model = load_run(run_dir)
    key = {"k": args.k, "examples": args.examples, "n": args.n, "version": 3,
           **({} if model.prior.normalized else {"ais_temps": args.ais_temps})}
    gens = samplers_for(model) if hasattr(model.prior, "energy_net") else {"exact": None}
    if out.get("key") == key and set(gens) <= set(out["samplers"]):
        return out
    if out.get("key") != key:                       # the NLL; the samplers below are added as missing
        out = {"key": key, "samplers": out.get("samplers", {}) if out.get("key", {}).get("n") == args.n else {},
               "ll": test_log_likelihood(model, data, k=args.k, max_examples=args.examples, seed=0,
                                         ais_temps=args.ais_temps)}
    torch.manual_seed(seed)
    model.sample(10)                                                  # warm-up
    for name, spec in gens.items():
        if name in out["samplers"]:
            continue
        torch.manual_seed(seed)
        x, diag, sec = draw(model, args.n, spec)
        out["samplers"][name] = {"fid": fid(data, x), "sec_per_1000": sec, "diagnostics": diag}
        print(f"  {run_dir.name} / {name}: FID {out['samplers'][name]['fid']:.2f}, {sec:.3f} s per 1000"
              + (f", R-hat {diag['rhat_max']:.3f}, acceptance {diag['acceptance']}" if diag else ""), flush=True)
    cache.write_text(json.dumps(out, default=str))
    return out


def retime(runs_dir: Path, models, seed: int, ev: dict, rounds: int = 3, n: int = 1000) -> dict:
    """Re-measure every generator's seconds per 1000 samples interleaved in this one process
    (rounds x [every model x sampler], median), replacing the times measured after training;
    returns 16 samples (unit scale) of each model's default generator for the figure."""
    from energyvae.runs import load_run
    runs = {name: load_run(runs_dir / f"{slug(name)}_s{seed}") for name in models}
    loaded = {name: r[2] for name, r in runs.items()}
    grids = {}
    for name, (_, data, model) in runs.items():
        torch.manual_seed(seed)
        grids[name] = data.preprocess.to_unit(model.sample(16)).cpu()
    times: dict = {}
    for _ in range(rounds):
        for name, model in loaded.items():
            gens = samplers_for(model) if hasattr(model.prior, "energy_net") else {"exact": None}
            for sname, spec in gens.items():
                times.setdefault((name, sname), []).append(draw(model, n, spec)[2])
    for (name, sname), t in times.items():
        ev[(name, seed)]["samplers"][sname]["sec_per_1000"] = statistics.median(t)
    return grids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=sorted(CONFIGS), default="fashion-mnist")
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--k", type=int, default=1000, help="importance samples of the NLL")
    ap.add_argument("--examples", type=int, default=1000, help="test images in the NLL")
    ap.add_argument("--n", type=int, default=2000, help="samples for FID and the diagnostics")
    ap.add_argument("--ais-temps", type=int, default=10000,
                    help="AIS temperatures for ln Z (1000 underestimated the GRBM-Adv. ln Z by ~1 nat)")
    ap.add_argument("--timing-rounds", type=int, default=3, help="interleaved rounds of the sampling times")
    ap.add_argument("--only", nargs="*", help="train / evaluate only these models (no table)")
    ap.add_argument("--all-seeds-for", nargs="*", default=None,
                    help="only these models get every seed, the others the first (default: all models)")
    ap.add_argument("--name", default=None, help="results file name (default ebm_prior_DATASET)")
    ap.add_argument("--existing-only", action="store_true",
                    help="train nothing: each model gets those of its seeds whose runs are finished")
    args = ap.parse_args()
    from energyvae.evaluation.features import get_feature_net, to_unit_images
    from energyvae.evaluation.paired import nats_to_bits_per_dim, paired_difference
    from energyvae.evaluation.sample_metrics import compute_sample_metrics

    models = {k: v for k, v in MODELS.items() if not args.only or k in args.only}
    runs_dir = ROOT / "runs" / f"bench_ebm_prior_{args.dataset}_e{args.epochs}"
    if args.all_seeds_for is not None and BASELINE not in args.all_seeds_for:
        ap.error(f"--all-seeds-for must include the baseline {BASELINE!r} (the differences are paired per seed)")

    def seeds_for(name):
        seeds = args.seeds if args.all_seeds_for is None or name in args.all_seeds_for else args.seeds[:1]
        if args.existing_only:
            seeds = [s for s in seeds if finished(run_path(runs_dir, name, s))]
        return seeds
    if args.existing_only:      # a model none of whose runs is finished has no row
        models = {k: v for k, v in models.items() if seeds_for(k)}
    t0 = now()
    trained = run_variants(models, config=CONFIGS[args.dataset],
                           common=[f"data.name={args.dataset}", f"train.epochs={args.epochs}", "train.steps=null",
                                   "train.eval_every=1000000", "train.checkpoint_every=2000"],
                           seeds_for=seeds_for, columns=["train_seconds"], metrics=(), runs_dir=runs_dir)
    feats = {}

    def fid(data, x):
        if "net" not in feats:
            feats["net"], feats["info"] = get_feature_net(data, seed=0, progress=False)
            feats["real"] = to_unit_images(data, data.test.x[:args.n])
        return compute_sample_metrics(feats["real"], data.preprocess.to_unit(x).cpu(), feats["net"],
                                      metrics=("fid",))["fid"]

    ev = {(name, s): evaluate(runs_dir / f"{slug(name)}_s{s}", s, args, fid) for name in models
          for s in seeds_for(name)}
    if args.only:
        return
    grids = {s: retime(runs_dir, [n for n in models if s in seeds_for(n)], s, ev, rounds=args.timing_rounds)
             for s in args.seeds}
    from energyvae.viz.analysis import plot_beta_walk
    out_name = args.name or f"ebm_prior_{args.dataset}"
    fig = plot_beta_walk(grids[args.seeds[0]], RESULTS / f"{out_name}_samples.png", label="prior",
                         title=f"samples (decoder mean, default generator), binarised {args.dataset}, "
                               f"seed {args.seeds[0]}")
    rows, sampler_rows, notes = {}, {}, []
    for name in models:
        per_seed = {c: [] for c in ("nll", "bits_per_dim", "d_nll", "d_nll_se", "d_bpd", "ais_log_z",
                                    "ais_stderr", "ais_ess", "log_z_qagg_bound", "fid", "rhat", "sec_per_1000",
                                    "train_seconds")}
        table_seeds = seeds_for(name) if name != BASELINE else seeds_for(BASELINE)[:1]
        for s in table_seeds:
            e, base = ev[(name, s)], ev[(BASELINE, s)]
            ll = e["ll"]
            ok = "nll_unreliable" not in ll
            if not ok:
                notes.append(f"- {name}, seed {s}: NLL left out: {ll['nll_unreliable']}")
            d = paired_difference([-v for v in ll["per_image_ll"]], [-v for v in base["ll"]["per_image_ll"]])
            per_seed["nll"].append(ll["nll"] if ok else math.nan)
            per_seed["bits_per_dim"].append(ll.get("bits_per_dim", math.nan) if ok else math.nan)
            if name != BASELINE:
                per_seed["d_nll"].append(d["mean"] if ok else math.nan)
                # ln Z is one estimate shared by every image: its error adds in quadrature
                ais_se = ll["ais"]["stderr"] if "ais" in ll else 0.0
                per_seed["d_nll_se"].append(math.hypot(d["stderr"], ais_se))
                per_seed["d_bpd"].append(nats_to_bits_per_dim(d["mean"], ll["dims"]) if ok and ll.get("dims")
                                         else math.nan)
            for col, k in (("ais_log_z", "log_z"), ("ais_stderr", "stderr"), ("ais_ess", "ess"),
                           ("log_z_qagg_bound", "log_z_qagg_bound")):
                if "ais" in ll:
                    per_seed[col].append(ll["ais"][k])
            default = (e["samplers"].get("S (no MCMC)") or e["samplers"].get("MALA (default: 2000 steps)")
                       or e["samplers"]["exact"])
            per_seed["fid"].append(default["fid"])
            per_seed["sec_per_1000"].append(default["sec_per_1000"])
            if default.get("diagnostics"):
                per_seed["rhat"].append(default["diagnostics"]["rhat_max"])
            per_seed["train_seconds"].append(trained[name]["values"]["train_seconds"][seeds_for(name).index(s)])
            for sname, sv in e["samplers"].items():
                if sname == "exact":
                    continue
                r = sampler_rows.setdefault(f"{name} / {sname}", {c: [] for c in (
                    "fid", "rhat", "drift", "ess_min", "acceptance", "sec_per_1000")})
                dg = sv.get("diagnostics") or {}
                r["fid"].append(sv["fid"])
                r["sec_per_1000"].append(sv["sec_per_1000"])
                for c, k in (("rhat", "rhat_max"), ("drift", "drift_max"), ("ess_min", "ess_min"),
                             ("acceptance", "acceptance")):
                    if dg.get(k) is not None:
                        r[c].append(dg[k])
        rows[name] = per_seed
    for s in seeds_for(BASELINE)[1:]:   # another training run of the baseline: the training noise
        ll, ll0 = ev[(BASELINE, s)]["ll"], ev[(BASELINE, args.seeds[0])]["ll"]
        d = paired_difference([-v for v in ll["per_image_ll"]], [-v for v in ll0["per_image_ll"]])
        rows[f"{BASELINE}, another training run (seed {s})"] = {
            **{c: [] for c in rows[BASELINE]}, "nll": [ll["nll"]], "bits_per_dim": [ll.get("bits_per_dim", math.nan)],
            "d_nll": [d["mean"]], "d_nll_se": [d["stderr"]],
            "d_bpd": [nats_to_bits_per_dim(d["mean"], ll["dims"])] if ll.get("dims") else [],
            "fid": [ev[(BASELINE, s)]["samplers"]["exact"]["fid"]]}
        notes.append(f"- {BASELINE}, seed {s}: the same model trained with another seed, paired against seed "
                     f"{args.seeds[0]}: how far apart two training runs of one model land (the training noise "
                     "that a single seed's paired stderr does not contain)")

    def cell(v, fmt=".4g"):
        v = [x for x in v if x is not None and not (isinstance(x, float) and math.isnan(x))]
        if not v:
            return "—"
        if len(v) == 1:
            return format(v[0], fmt)
        return f"{statistics.mean(v):{fmt}} ± {statistics.stdev(v):.2g}"

    def paired_cell(r):
        if not r["d_nll"]:
            return "—"
        if len(r["d_nll"]) == 1:
            return f"{r['d_nll'][0]:+.3f} ± {r['d_nll_se'][0]:.3f}"
        return f"{statistics.mean(r['d_nll']):+.3f} (seeds: " + ", ".join(
            f"{d:+.2f} ± {se:.2f}" for d, se in zip(r["d_nll"], r["d_nll_se"])) + ")"

    used = {n: " ".join(map(str, seeds_for(n))) for n in models}
    seeds = (" ".join(map(str, args.seeds)) if len(set(used.values())) == 1 else
             "; ".join(f"{n}: {s}" for n, s in used.items()))
    steps = {n: json.loads((runs_dir / f"{slug(n)}_s{args.seeds[0]}" / "metrics.json").read_text())["train"].get("steps")
             for n in models if seeds_for(n)}
    lines = header(f"Paper 002, Table 2 on binarised {args.dataset}: EBM latent priors, paired",
                   f"{args.epochs} epochs ({steps[BASELINE]} steps) x batch 64 per model, seeds {seeds}",
                   now() - t0, {})
    lines += [f"- NLL: the first {args.examples} test images, IW K = {args.k}; EBM priors minus AIS ln Z "
              f"(256 chains, {args.ais_temps} temperatures, MALA); nats, lower is better; every model sees the same "
              "binarised images (seed 0)",
              f"- ΔNLL: paired per-image difference to {BASELINE} (negative: better) ± its standard error "
              "(std of the per-image differences / sqrt(n), with the AIS ln Z stderr added in quadrature for EBM "
              "priors: ln Z is one estimate shared by every image); AIS ESS of 256 chains beside it; Δbpd the same in bits/dim; with several seeds: "
              "the mean over seeds, then each seed's difference ± its paired stderr (the spread over seeds "
              "is the training noise), and the other cells mean ± sd over seeds",
              f"- FID: {args.n} samples from the model's default generator (MALA, 2000 steps, for the EBM priors, S for "
              f"EVaLP) against {args.n} test images, features: {feats.get('info', {}).get('name', '—')} "
              f"(test accuracy {feats.get('info', {}).get('test_accuracy', float('nan')):.3f})",
              "- R-hat: split R-hat of the default sampler's chains (energy and coordinate mean, max; "
              "mixed: < 1.05 with |drift| < 4); sec/1000: sampler + decoder wall seconds per 1000 samples",
              f"- figure: {fig.name}",
              *notes, "",
              "| prior | NLL | ΔNLL vs N(0, I) | Δbpd | bits/dim | AIS ln Z | AIS stderr | AIS ESS | ln Z bound (q_agg) "
              "| FID | R-hat | sec/1000 | train s |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {cell(r['nll'], '.2f')} | {paired_cell(r)} | {cell(r['d_bpd'], '+.4f')} | "
                     f"{cell(r['bits_per_dim'], '.4f')} | {cell(r['ais_log_z'], '.2f')} | {cell(r['ais_stderr'], '.3f')} | "
                     f"{cell(r.get('ais_ess', []), '.0f')} | "
                     f"{cell(r['log_z_qagg_bound'], '.2f')} | {cell(r['fid'], '.2f')} | {cell(r['rhat'], '.3f')} | "
                     f"{cell(r['sec_per_1000'], '.3f')} | {cell(r['train_seconds'], '.0f')} |")
    lines += ["", "## Samplers on the trained energies", "",
              "Each sampler starts its chains at N(0, I) and draws the FID samples; R-hat / ESS (min over the "
              "traced statistics, all chains) of its chains; acceptance: Metropolis rate after warm-up.", "",
              "| prior / sampler | FID | R-hat | drift | ESS | acceptance | sec/1000 |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in sampler_rows.items():
        lines.append(f"| {name} | {cell(r['fid'], '.2f')} | {cell(r['rhat'], '.3f')} | {cell(r['drift'], '.1f')} | "
                     f"{cell(r['ess_min'], '.0f')} | "
                     f"{cell(r['acceptance'], '.3f')} | {cell(r['sec_per_1000'], '.3f')} |")
    write(out_name, lines, {"models": rows, "samplers": sampler_rows})


if __name__ == "__main__":
    main()
