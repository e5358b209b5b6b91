"""Benchmark: EC-VAE (paper 001) at CPU scale: FID of samples for the VAE, EC-VAE, EC-VAE with
test-time MCMC, EC-VAE without primal-dual, VAE + WGAN-GP critic, the calibrated posterior
(Sec. 4.1, Table 7: FID, reconstruction MSE, ELBO) and, where configs exist, the other Table-10
ablations; sampling time with and without MCMC and the EC-VAE / VAE training-step time, as
ratios measured in one run; zero-shot restoration (inpainting, super-resolution and, on
coloured digits, colorization) against A+ y and the same procedure without the EBM term.

    python -m benchmarks.ecvae --dataset digits --steps 1500 --seeds 0 1 2
    python -m benchmarks.ecvae --dataset fashion-mnist --steps 1000 --seeds 0 1 2

Every comparison is paired: the same seeds for every model (FID_gen differences per seed, mean
+- standard error over seeds) and the same test images (MSE / ELBO / PSNR differences per image,
mean +- standard error over images and seeds). The restoration EBM weight beta (``restore
--ebm-weight``; 1 = the temperature the energy was trained at, see restoration/zero_shot.py) is
chosen on the validation split (box inpainting, seed 0) and then applied to the test split.
``--train-only NAME`` trains one model and exits, so models can train in parallel processes
(finished runs are reused). The paper's CIFAR-10 gap (VAE 104.68 vs EC-VAE 5.20 FID) is not
expected here: this measures direction and size with a short budget.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

if not __package__:  # started as a file, python benchmarks/NAME.py: rerun as python -m benchmarks.NAME
    import _as_module  # noqa: F401  (benchmarks/_as_module.py; it does not return)
from benchmarks.common import RESULTS, ROOT, header, now, run_variants, slug, table, write  # noqa: E402

NO_PD = ["model.calibrators.0.primal_dual=false"]
CPOST = "{name: calibrated_posterior}"
FASHION_EC = "configs/ecvae_fashion_cpu.yaml"       # the CPU-sized EC-VAE (same fix as ecvae_fashion.yaml)
# A second energy architecture (post hoc, issue 7): the same calibrator with a spectral-norm MLP energy.
FASHION_EC_MLP = ["model.calibrators.0.energy={name: mlp, hidden: [512, 512], spectral_norm: true}"]
FASHION_WGAN = ["model.calibrators=[{name: wgan, critic: {name: resnet, channels: [16, 32, 64], blocks: 1, "
                "head: 64}, weight: 10.0, warmup: 250, n_critic: 5, gp_weight: 10.0, lr: 1.0e-3}]"]
MODELS = {   # name: (config, overrides); rows whose config is missing are skipped
    "digits": {"VAE": ("configs/digits_conv_vae.yaml", []),
               "EC-VAE": ("configs/ecvae_digits.yaml", []),
               "EC-VAE w/o primal-dual": ("configs/ecvae_digits.yaml", NO_PD),
               "VAE + WGAN-GP critic": ("configs/vae_wgan_digits.yaml", []),
               "VAE + calibrated posterior": ("configs/digits_conv_vae.yaml",
                                              ["model.reconstruction={name: gaussian, scale: calibrated}",
                                               f"model.calibrators=[{CPOST}]"]),
               "EC-VAE + calibrated posterior": ("configs/ecvae_digits.yaml", [f"model.calibrators.1={CPOST}"]),
               # the other Table-10 ablations; their own budgets (a later override wins)
               "EBM alone (Langevin from noise)": ("configs/ebm_digits.yaml", ["train.steps=4000"]),
               "EBM initialised with VAE samples": ("configs/ebm_from_vae_digits.yaml",
                                                    [f"model.init_run={ROOT / 'runs/bench_ecvae_digits/VAE_s0'}",
                                                     "train.steps=4000"]),
               "EC-VAE + flow prior": ("configs/ecvae_flow_prior_digits.yaml", []),
               "Flow (NLL)": ("configs/flow_digits.yaml", ["train.steps=1000"]),
               "EC-Flow": ("configs/ecflow_digits.yaml", ["train.steps=1000"]),
               "VAE (coloured digits)": ("configs/digits_conv_vae.yaml", ["data.name=digits-rgb"]),
               "EC-VAE (coloured digits)": ("configs/ecvae_digits.yaml", ["data.name=digits-rgb"])},
    "fashion-mnist": {"VAE": ("configs/fashion_vae.yaml", []),
                      "EC-VAE": (FASHION_EC, []),
                      "EC-VAE w/o primal-dual": (FASHION_EC, NO_PD),
                      "VAE + WGAN-GP critic": ("configs/fashion_vae.yaml", FASHION_WGAN),
                      "EC-VAE (MLP energy)": (FASHION_EC, FASHION_EC_MLP),
                      "VAE + calibrated posterior": ("configs/fashion_vae.yaml", [f"model.calibrators=[{CPOST}]"]),
                      "EC-VAE + calibrated posterior": (FASHION_EC, [f"model.calibrators.1={CPOST}"])}}
MCMC_ROWS = ("EC-VAE", "EC-Flow", "EC-VAE (MLP energy)")
# rows trained with the first seed only (the Table-10 extras; on Fashion-MNIST the two most costly
# ablations, to fit a CPU session: say so in the table's budget line)
SEED0_ONLY = {"digits": ("EBM alone (Langevin from noise)", "EBM initialised with VAE samples", "EC-VAE + flow prior",
                         "Flow (NLL)", "EC-Flow", "VAE (coloured digits)", "EC-VAE (coloured digits)"),
              "fashion-mnist": ("EC-VAE w/o primal-dual", "VAE + WGAN-GP critic")}
TASKS = {"inpaint (box)": ("inpaint", {"mask": "box"}), "inpaint (random 50%)": ("inpaint", {"mask": "random"}),
         "sr2": ("sr2", {}), "sr4": ("sr4", {})}
BETAS = (0.0, 0.5, 1.0, 2.0, 4.0)


def common_overrides(dataset: str, steps: int) -> list[str]:
    """The shared budget; a model's own overrides come after these and win (Table-10 rows)."""
    out = [f"train.steps={steps}", "train.epochs=null", "train.eval_every=1000000", "train.checkpoint_every=250"]
    return out + (["train.batch_size=64"] if dataset == "fashion-mnist" else [])


def seeds_of(dataset: str, name: str, seeds: list[int]) -> list[int]:
    return seeds[:1] if name in SEED0_ONLY[dataset] else seeds


def run_dir(runs_dir: Path, name: str, seed: int) -> Path:
    return runs_dir / f"{slug(name)}_s{seed}"


def train(dataset: str, names: list[str], steps: int, seeds: list[int], runs_dir: Path) -> dict:
    out = {}
    for name in names:
        config, overrides = MODELS[dataset][name]
        out.update(run_variants({name: overrides}, config=config, common=common_overrides(dataset, steps),
                                seeds_for=lambda n: seeds_of(dataset, n, seeds), columns=["train_seconds"], metrics=(),
                                runs_dir=runs_dir))
    return out


def mean_se(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:+.4g}" if values else "—"
    return f"{statistics.mean(values):+.4g} ± {statistics.stdev(values) / len(values) ** 0.5:.2g}"


def paired_lines(rows: dict, key: str, base: str, what: str) -> list[str]:
    """Per-seed paired differences row - base of ``key`` (same seed), mean +- standard error."""
    out = []
    for name, r in rows.items():
        if name == base or base not in rows or key not in r["values"]:
            continue
        a = dict(zip(r["seeds"], r["values"][key]))
        b = dict(zip(rows[base]["seeds"], rows[base]["values"][key]))
        d = [a[s] - b[s] for s in a if s in b]
        if d:
            out.append(f"| {name} - {base} | {mean_se(d)} | {len(d)} |")
    return [f"| {what} | mean ± s.e. | seeds |", "|---|---:|---:|", *out] if out else []


@torch.no_grad()
def per_image_scores(model, data, n: int, seed: int) -> dict[str, torch.Tensor]:
    """Per test image: reconstruction MSE (posterior mean, [0, 1] pixels, mean over pixels) and ELBO
    (nats, one posterior sample, fixed seed), for paired comparisons."""
    x = data.preprocess(data.test.x[:n])
    to_unit = data.preprocess.to_unit
    mse = (to_unit(model.reconstruct(x)) - to_unit(x)).flatten(1).pow(2).mean(1)
    out = {"mse": mse}
    if model.reconstruction.likelihood:
        torch.manual_seed(seed)
        out["elbo"] = torch.cat([model.evaluate(x[i:i + 500])["elbo"] for i in range(0, n, 500)])
    return out


def artifact_score(data, fake: torch.Tensor, n: int) -> float:
    """Lattice power (period 2 and 4) of samples over that of test images (viz.analysis)."""
    from energyvae.evaluation.features import to_unit_images
    from energyvae.viz.analysis import lattice_power_fraction

    return lattice_power_fraction(fake) / lattice_power_fraction(to_unit_images(data, data.test.x[:n]))


def generation(dataset: str, available: dict, runs_dir: Path, seeds: list[int], n: int, mcmc: int, trained: dict):
    """Generation rows (FID_gen, artifact score, sampling time per 1000; per seed) and the sample
    grids of the first seed."""
    from energyvae.evaluation.features import get_feature_net, to_unit_images
    from energyvae.evaluation.sample_metrics import compute_sample_metrics
    from energyvae.runs import load_run

    rows, grids, net, info = {}, {}, None, None
    for name in available:
        if "coloured" in name:
            continue
        labels = [(name, 0)] + ([(f"{name} w/ MCMC ({mcmc})", mcmc)] if name in MCMC_ROWS else [])
        for seed in seeds_of(dataset, name, seeds):
            _, data, model = load_run(run_dir(runs_dir, name, seed))
            if net is None:
                net, info = get_feature_net(data, seed=0, progress=False)
            real = to_unit_images(data, data.test.x[:n])
            for label, steps in labels:
                torch.manual_seed(seed)
                t = time.perf_counter()
                fake = data.preprocess.to_unit(model.sample(n, mcmc=steps))
                sec = (time.perf_counter() - t) / n * 1000
                fid = compute_sample_metrics(real, fake, net, metrics=("fid",))["fid"]
                row = rows.setdefault(label, {"values": {"fid_gen": [], "artifact": [], "sec_per_1000": [],
                                                         "train_seconds": trained[name]["values"]["train_seconds"]},
                                              "features": info, "reference": {"split": "test", "n": len(real)},
                                              "seeds": []})
                row["seeds"].append(seed)
                for k, v in (("fid_gen", fid), ("artifact", artifact_score(data, fake, n)), ("sec_per_1000", sec)):
                    row["values"][k].append(v)
                if seed == seeds[0]:
                    grids[label] = fake[:16]
                print(f"{label} seed {seed}: FID {fid:.3f}, artifact {row['values']['artifact'][-1]:.3g}, "
                      f"{sec:.3f} s / 1000", flush=True)
    return rows, grids


def sampling_ratio(model, mcmc: int, n: int = 500, repeats: int = 3) -> float:
    """Wall time of sampling with ``mcmc`` refinement steps over one pass, interleaved."""
    one, refined = [], []
    for _ in range(repeats):
        for steps, out in ((0, one), (mcmc, refined)):
            t = time.perf_counter()
            model.sample(n, mcmc=steps)
            out.append(time.perf_counter() - t)
    return statistics.median(refined) / statistics.median(one)


def train_step_ratio(runs_dir: Path, a: str, b: str, seed: int, repeats: int = 3) -> float:
    """Median training-step time of run ``a`` over run ``b`` (evaluate's timer), interleaved."""
    from energyvae.evaluation.model_metrics import time_train_steps
    from energyvae.runs import load_run

    loaded = {k: load_run(run_dir(runs_dir, k, seed), "last", ema=False) for k in (a, b)}
    times = {a: [], b: []}
    for _ in range(repeats):
        for k, (cfg, data, model) in loaded.items():
            times[k].append(time_train_steps(cfg, model, data, steps=5, warmup=2))
    return statistics.median(times[a]) / statistics.median(times[b])


def posterior_rows(available: dict, runs_dir: Path, seeds: list[int], n: int) -> tuple[dict, list[str]]:
    """Table 7: MSE and ELBO per model (mean over images, then mean +- std over seeds), and the paired
    differences to the VAE on the same images: mean +- s.e. over all (image, seed) pairs, and over
    the per-seed means (the honest one when models of one seed share a training run's noise)."""
    from energyvae.runs import load_run

    names = [k for k in ("VAE", "VAE + calibrated posterior", "EC-VAE", "EC-VAE + calibrated posterior")
             if k in available]
    scores = {}
    for name in names:
        for seed in seeds:
            _, data, model = load_run(run_dir(runs_dir, name, seed))
            scores[(name, seed)] = per_image_scores(model, data, n, seed)
    rows, diffs = {}, ["| paired, same test images | mse (x 1e3): per image | over seeds | elbo (nats): per image "
                       "| over seeds |", "|---|---:|---:|---:|---:|"]
    for name in names:
        keys = scores[(name, seeds[0])]
        rows[name] = {"values": {f"{k}_x1e3" if k == "mse" else k: [float(scores[(name, s)][k].mean())
                                                                      * (1e3 if k == "mse" else 1) for s in seeds]
                                 for k in keys}}
        if name == "VAE":
            continue
        cells = []
        for k in ("mse", "elbo"):
            if k not in keys:
                cells += ["—", "—"]
                continue
            per_seed = [(scores[(name, s)][k] - scores[("VAE", s)][k]).double() * (1e3 if k == "mse" else 1)
                        for s in seeds]
            d = torch.cat(per_seed)
            cells += [f"{float(d.mean()):+.4g} ± {float(d.std() / len(d) ** 0.5):.2g}",
                      mean_se([float(t.mean()) for t in per_seed])]
        diffs.append(f"| {name} - VAE | " + " | ".join(cells) + " |")
    return rows, diffs


def restoration_rows(vae, ecs: dict, data, tasks: dict, n: int, seed: int) -> tuple[dict, dict]:
    """Rows "task / method" for A+ y, the VAE prior and, per EC model {name: (model, beta)}, the
    same chain without and with its EBM term; and per task the per-image PSNR differences
    (with - without the EBM term) of each EC model."""
    from energyvae.imaging.quality import consistency, psnr, ssim
    from energyvae.restoration.operators import OPERATORS
    from energyvae.restoration.zero_shot import pinv_baseline, restore

    x = data.preprocess(data.test.x[:n])
    to_unit, rows, diffs = data.preprocess.to_unit, {}, {}
    for task_name, (task, opts) in tasks.items():
        op = OPERATORS[task](tuple(x.shape[1:]), **opts)
        y = op.A(x)
        methods = {"A+ y": lambda: pinv_baseline(op, y),
                   "VAE prior (no EBM)": lambda: restore(vae, y, op, use_ebm=False, seed=seed)}
        for name, (ec, beta) in ecs.items():
            methods[f"{name}, no EBM term"] = lambda ec=ec: restore(ec, y, op, use_ebm=False, seed=seed)
            methods[f"{name}, with EBM term (beta {beta:g})"] = (
                lambda ec=ec, beta=beta: restore(ec, y, op, ebm_weight=beta, seed=seed, use_ebm=beta > 0))
        per_image = {}
        for method, run in methods.items():
            x_hat = run()
            u_hat, u = to_unit(x_hat), to_unit(x)
            m = {"psnr": psnr(u_hat, u), "ssim": ssim(u_hat, u), "consistency": consistency(op.A, u_hat, u)}
            per_image[method] = m["psnr"]
            values = {k: [float(v.mean())] for k, v in m.items()}
            values["consistency_model_space"] = [float((op.A(x_hat) - y).abs().mean())]
            rows[f"{task_name} / {method}"] = {"values": values}
            print(f"{task_name} / {method}: PSNR {values['psnr'][0]:.2f}, SSIM {values['ssim'][0]:.3f}", flush=True)
        for name, (_, beta) in ecs.items():
            d = (per_image[f"{name}, with EBM term (beta {beta:g})"] - per_image[f"{name}, no EBM term"]).double()
            diffs[f"{task_name} / {name}"] = (float(d.mean()), float(d.std() / len(d) ** 0.5))
    return rows, diffs


def choose_beta(model, data, n: int, seed: int) -> tuple[float, dict]:
    """The EBM weight of restoration with the best validation PSNR on box inpainting."""
    from energyvae.imaging.quality import psnr
    from energyvae.restoration.operators import OPERATORS
    from energyvae.restoration.zero_shot import restore

    x = data.preprocess(data.val.x[:n])
    op = OPERATORS["inpaint"](tuple(x.shape[1:]), mask="box")
    rows = {}
    for beta in BETAS:
        x_hat = restore(model, op.A(x), op, ebm_weight=beta, seed=seed, use_ebm=beta > 0)
        value = float(torch.nan_to_num(psnr(data.preprocess.to_unit(x_hat), data.preprocess.to_unit(x)),
                                       nan=0.0).mean())
        rows[f"beta {beta:g}"] = {"values": {"val_psnr": [value]}}
        print(f"validation box inpainting, beta {beta:g}: PSNR {value:.3f}", flush=True)
    best = max(BETAS, key=lambda b: rows[f"beta {b:g}"]["values"]["val_psnr"][0])
    return best, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=sorted(MODELS), default="digits")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--mcmc", type=int, default=15, help="test-time Langevin steps of the 'w/ MCMC' row")
    ap.add_argument("--n", type=int, default=2000, help="samples for FID")
    ap.add_argument("--n-restore", type=int, default=500, help="test (and validation) images for restoration")
    ap.add_argument("--train-only", metavar="NAME", help="train this model (a row name) and exit")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="these rows only (VAE and EC-VAE are always kept)")
    ap.add_argument("--runs-dir", type=Path, help="where the runs live (default runs/bench_ecvae_<dataset>)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from energyvae.runs import load_run
    from energyvae.viz.analysis import plot_beta_walk

    runs_dir = args.runs_dir or ROOT / "runs" / f"bench_ecvae_{slug(args.dataset)}"
    available = {k: v for k, v in MODELS[args.dataset].items() if (ROOT / v[0]).is_file()
                 and (not args.only or k in (*args.only, "VAE", "EC-VAE"))}
    if args.train_only:
        if args.train_only not in available:
            sys.exit(f"error: --train-only: no model {args.train_only!r} (choose from: {', '.join(available)})")
        train(args.dataset, [args.train_only], args.steps, args.seeds, runs_dir)
        return
    t0 = now()
    trained = train(args.dataset, list(available), args.steps, args.seeds, runs_dir)
    gen_rows, grids = generation(args.dataset, available, runs_dir, args.seeds, args.n, args.mcmc, trained)
    seed0 = args.seeds[0]
    _, data, ec_model = load_run(run_dir(runs_dir, "EC-VAE", seed0))
    ratio = sampling_ratio(ec_model, args.mcmc)
    step_ratio = train_step_ratio(runs_dir, "EC-VAE", "VAE", seed0)
    post_rows, post_diffs = posterior_rows(available, runs_dir, args.seeds, min(args.n, len(data.test)))

    ecs, beta_rows = {}, {}
    for name in [k for k in ("EC-VAE", "EC-VAE (MLP energy)") if k in available]:
        model = load_run(run_dir(runs_dir, name, seed0))[2]
        beta, rows = choose_beta(model, data, args.n_restore, seed0)
        ecs[name] = (model, beta)
        beta_rows.update({f"{name}: {k}": v for k, v in rows.items()})
    tasks = {k: v for k, v in TASKS.items() if not (k == "sr4" and data.shape[-1] % 4)}
    vae = load_run(run_dir(runs_dir, "VAE", seed0))[2]
    rest_rows, rest_diffs = restoration_rows(vae, ecs, data, tasks, args.n_restore, seed0)
    if "EC-VAE (coloured digits)" in available:
        rgb_data, rgb_ec = load_run(run_dir(runs_dir, "EC-VAE (coloured digits)", seed0))[1:]
        rows, diffs = restoration_rows(load_run(run_dir(runs_dir, "VAE (coloured digits)", seed0))[2],
                                       {"EC-VAE": (rgb_ec, ecs["EC-VAE"][1])}, rgb_data, {"colorize": ("colorize", {})},
                                       args.n_restore, seed0)
        rest_rows.update({f"coloured digits: {k}": v for k, v in rows.items()})
        rest_diffs.update({f"coloured digits: {k}": v for k, v in diffs.items()})

    batch = 64 if args.dataset == "fashion-mnist" else 128
    budget = (f"{args.steps} steps x batch {batch} per model unless its row's overrides say otherwise (listed "
              f"below), seeds {args.seeds} ({', '.join(k for k in SEED0_ONLY[args.dataset] if k in available)}: "
              f"seed {seed0} only)")
    lines = header(f"EC-VAE (paper 001) on {args.dataset}", budget, now() - t0, gen_rows)
    n_rest = min(args.n_restore, len(data.test))
    lines += [f"- test-time MCMC: {args.mcmc} steps of the calibrator's conditional Langevin; sampling time is "
              f"wall seconds per 1000 images; MCMC / one-pass time ratio {ratio:.1f} and EC-VAE / VAE training-step "
              f"time ratio {step_ratio:.1f} (both interleaved in this run, seed {seed0})",
              "- artifact: lattice_power_fraction (period-2/4 frequencies) of the samples / that of the test images "
              "(energyvae.viz.analysis; 1 = as much periodic-lattice power as the data)",
              f"- restoration: the first {n_rest} test images, seed-{seed0} models, 200 latent Langevin steps, then "
              "(with the EBM term) the calibrator's own chain at its training temperature restricted to A x = y "
              "(energyvae restore defaults); PSNR, SSIM and Consistency = mean |A x_hat - A x| on [0, 1] images "
              "(clamping to [0, 1] breaks exact consistency), consistency_model_space before clamping",
              "- EBM weight beta per EC model: " + ", ".join(f"{k} {v[1]:g}" for k, v in ecs.items())
              + f", the best validation PSNR (box inpainting, first {min(args.n_restore, len(data.val))} validation "
              f"images) of " + ", ".join(f"{b:g}" for b in BETAS), "",
              "- own budgets: " + "; ".join(f"{k}: `{' '.join(v[1])}`" for k, v in available.items() if v[1]), "",
              "## Generation", "", *table("model", ["fid_gen", "artifact", "sec_per_1000", "train_seconds"], gen_rows),
              "", "Paired FID_gen differences (same seed):", "",
              *paired_lines(gen_rows, "fid_gen", "VAE", "FID_gen"), "",
              *[f"- EC-VAE / VAE FID_gen ratio, seed {s}: {e / v:.3f}" for s, e, v in zip(
                  args.seeds, gen_rows.get("EC-VAE", {}).get("values", {}).get("fid_gen", []),
                  gen_rows["VAE"]["values"]["fid_gen"])], "",
              *paired_lines({k: v for k, v in gen_rows.items() if k.startswith("EC-VAE w/ MCMC") or k == "EC-VAE"},
                            "fid_gen", "EC-VAE", "FID_gen, MCMC refinement"), "",
              "## Calibrated posterior (Sec. 4.1, Table 7)", "",
              f"MSE of reconstructions (posterior mean, [0, 1] pixels, mean per pixel, x 1e3) and ELBO (nats, one "
              f"posterior sample) on the first {min(args.n, len(data.test))} test images; FID_gen in the table above.",
              "", *table("model", list(next(iter(post_rows.values()))["values"]), post_rows), "", *post_diffs, "",
              "## Restoration: EBM weight on the validation split", "", *table("model: beta", ["val_psnr"], beta_rows),
              "", "## Zero-shot restoration (test split)", "",
              *table("task / method", ["psnr", "ssim", "consistency", "consistency_model_space"], rest_rows), "",
              "Paired PSNR difference, with minus without the EBM term (same images, same chain seed):", "",
              "| task / EC model | dB, mean ± s.e. |", "|---|---:|",
              *[f"| {k} | {m:+.3f} ± {se:.3f} |" for k, (m, se) in rest_diffs.items()]]
    figure = plot_beta_walk(grids, RESULTS / f"ecvae_{slug(args.dataset)}_samples.png", label=None,
                            title=f"samples (one decoder pass unless 'w/ MCMC'), {args.dataset}, seed {seed0}")
    lines.insert(lines.index("## Generation") + 2, f"Samples: `{figure.name}`.\n")
    write(f"ecvae_{slug(args.dataset)}", lines, {**gen_rows, **post_rows, **beta_rows, **rest_rows,
                                                 "restoration_paired_psnr": rest_diffs})


if __name__ == "__main__":
    main()
