"""The ``energyvae`` command line.

    energyvae train --config FILE|NAME [key=value ...] [--resume] [--print-config] [--dry-run]
    energyvae configs                      # the shipped configs, one line each
    energyvae list [models|priors|...]     # registered parts, plugins included
    energyvae sample RUN [--n 64] [--mcmc K] [--out FILE]
    energyvae reconstruct RUN [--n 16] [--split test] [--out FILE]
    energyvae evaluate RUN [--metrics fid_gen,fid_rec,mse,kid,is,pr,nll,latent,holes,sampler,cost,figures] [--n 2000]
    energyvae report RUN [RUN ...] --out DIR [--baseline NAME]
    energyvae restore RUN --task inpaint|colorize|sr2|sr4 --input DIR|FILE --out DIR [--method ebm]
                      [--mask-file MASK.png] [--degraded]

A user error (bad config, bad data, bad checkpoint) prints one ``energyvae: error: ...`` line
and exits with status 2; set ENERGYVAE_DEBUG=1 to see the traceback instead.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import EnergyVAEError


def _cmd_train(args) -> int:
    from .config import load_config
    from .commands.train import train_run

    overrides = list(args.overrides)
    resume_dir = None
    if isinstance(args.resume, str):
        if "=" in args.resume:
            overrides.insert(0, args.resume)
        else:
            resume_dir = args.resume
    config = args.config
    if config is None and resume_dir is not None:
        config = str(Path(resume_dir) / "config.yaml")
    if config is None:
        raise EnergyVAEError("train: give --config FILE (or --resume RUN_DIR)")
    if args.data_dir:
        overrides.append(f"data.path={args.data_dir}")
    if args.threads is not None:
        overrides.append(f"train.threads={args.threads}")
    if resume_dir is not None:
        overrides.append(f"run.dir={resume_dir}")
    cfg = load_config(config, overrides)
    if args.print_config:
        from .config import dump_config
        print(dump_config(cfg), end="")
        return 0
    if args.dry_run:
        return _dry_run(cfg)
    if args.resume_fallback and not args.resume:
        raise EnergyVAEError("train: --resume-fallback only applies with --resume")
    result = train_run(cfg, resume=bool(args.resume), fallback=args.resume_fallback,
                       announce=lambda line: print(line, flush=True))
    if result is not None:
        m = result["metrics"]
        print(f"run folder: {cfg.run.dir}")
        test = m["test"]
        line = ", ".join(f"{k} {v:.3f}" for k, v in test.items())
        print(f"test ({m['n_test']} examples, {m.get('units', 'nats per example')}): {line}")
        if "iw" in m:
            bpd = f" ({m['iw']['bits_per_dim']:.4f} bits/dim)" if "bits_per_dim" in m["iw"] else ""
            print(f"test NLL (IW bound, K={m['iw']['k']}, {m['iw']['examples']} examples): "
                  f"{m['iw']['nll']:.3f} +- {m['iw']['nll_stderr']:.3f} nats{bpd}")
        if "exact" in m:
            bpd = f" ({m['exact']['bits_per_dim']:.4f} bits/dim)" if "bits_per_dim" in m["exact"] else ""
            print(f"test NLL (exact, {m['exact']['examples']} examples): "
                  f"{m['exact']['nll']:.3f} +- {m['exact']['nll_stderr']:.3f} nats{bpd}")
        for k, p in result["paths"].items():
            print(f"  {k:16s} {p}")
    return 0


def _describe_model(model) -> str:
    parts = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    total = sum(p.numel() for p in model.parameters())
    inner = ", ".join(f"{k} {v:,}" for k, v in parts.items() if v)
    return f"{type(model).__name__}, {total:,} parameters" + (f" ({inner})" if inner else "")


def _dry_run(cfg) -> int:
    """Build the data and the model of ``cfg``, print what a run would train, write nothing."""
    from .runs import prepare
    data, model = prepare(cfg)
    sizes = data.info["sizes"]
    print(f"data: {data.name}, {data.kind} of shape {tuple(data.shape)}, train {sizes['train']} / "
          f"val {sizes['val']} / test {sizes['test']}")
    print(f"model: {_describe_model(model)}")
    steps = cfg.train.steps or f"{cfg.train.epochs} epochs"
    print(f"train: {steps} steps at batch {cfg.train.batch_size}, device {cfg.train.device}, "
          f"run folder {cfg.run.dir} (not created: --dry-run)")
    return 0


def _cmd_configs(args) -> int:
    from .config import SHIPPED_DIR, shipped_configs
    configs = shipped_configs()
    width = max(map(len, configs), default=0)
    for name, line in configs.items():
        print(f"{name:{width}s}  {line}")
    print(f"({len(configs)} configs in {SHIPPED_DIR}; train one with "
          f"`energyvae train --config NAME`, copy one to edit it)")
    return 0


LIST_KINDS = {"models": "model", "priors": "prior", "reconstructions": "reconstruction",
              "calibrators": "calibrator", "encoders": "encoder", "decoders": "decoder",
              "posteriors": "posterior", "energies": "energy", "samplers": "latent sampler",
              "schemes": "prior training scheme", "data-energies": "data energy", "datasets": None}


def _cmd_list(args) -> int:
    import energyvae.models  # noqa: F401  (registers every built-in part)
    from .data import available_datasets
    from .registry import REGISTRIES, load_plugins
    load_plugins()
    kinds = [args.kind] if args.kind else list(LIST_KINDS)
    for plural in kinds:
        kind = LIST_KINDS[plural]
        print(f"{plural}:")
        if kind is None:
            for name in available_datasets():
                print(f"  {name}")
            continue
        reg = REGISTRIES[kind]
        width = max(map(len, reg.names()), default=0)
        for name in reg.names():
            print(f"  {name:{width}s}  {reg.describe(name)}")
    return 0


def _cmd_sample(args) -> int:
    import torch
    from .commands.sample import save_samples
    from .runs import load_run

    cfg, data, model = load_run(args.run, args.checkpoint, ema=not args.no_ema, need_data=False,
                                spec_only=True)
    model.to(_device(args.device))
    torch.manual_seed(args.seed)
    out = Path(args.out or Path(args.run) / (f"samples_mcmc{args.mcmc}.png" if args.mcmc else "samples.png"))
    print(save_samples(out, model, data, args.n, mcmc=args.mcmc))
    from .evaluation.model_metrics import describe_diagnostics, prior_sampler_diagnostics
    diag = prior_sampler_diagnostics(model, n=max(args.n, 256), seed=args.seed)
    if diag is not None:
        print("prior " + describe_diagnostics(diag))
    return 0


def _cmd_reconstruct(args) -> int:
    import torch
    from .commands.sample import save_reconstructions
    from .runs import load_run

    cfg, data, model = load_run(args.run, args.checkpoint, ema=not args.no_ema)
    model.to(_device(args.device))
    torch.manual_seed(args.seed)
    out = Path(args.out or Path(args.run) / f"reconstructions_{args.split}.png")
    print(save_reconstructions(out, model, data, args.n, args.split))
    return 0


def _cmd_evaluate(args) -> int:
    from .commands.evaluate import evaluate_run

    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    res = evaluate_run(args.run, metrics=metrics, n=args.n, reference=args.reference,
                       iw_samples=args.iw_samples, nll_examples=args.nll_examples,
                       ais_chains=args.ais_chains, ais_temps=args.ais_temps, checkpoint=args.checkpoint,
                       ema=not args.no_ema, seed=args.seed, inception_weights=args.inception_weights)
    out = Path(args.run) / "evaluation"
    print((out / "metrics.md").read_text().rstrip())
    print(f"written: {out / 'metrics.json'}, {out / 'metrics.md'}"
          + (f" and {len(res.get('figures', {}))} figures" if res.get("figures") else ""))
    return 0


def _cmd_report(args) -> int:
    from .evaluation.report import build_report

    for run in args.runs:
        if not (Path(run) / "config.yaml").is_file():
            raise EnergyVAEError(f"{run}: not a run folder (no config.yaml)")
    try:
        print(build_report([Path(r) for r in args.runs], Path(args.out), title=args.title,
                           baseline=args.baseline))
    except ValueError as e:
        if args.baseline is None or "baseline" not in str(e):
            raise
        raise EnergyVAEError(f"--baseline: {e}") from None
    return 0


def _cmd_restore(args) -> int:
    from .commands.restore import restore_files

    res = restore_files(args.run, args.task, args.input, args.out, method=args.method, mask=args.mask,
                        fraction=args.fraction, mask_file=args.mask_file, degraded=args.degraded,
                        steps=args.steps, step_size=args.step_size, noise_scale=args.noise_scale,
                        ebm_weight=args.ebm_weight, ebm_mode=args.ebm_mode, seed=args.seed, checkpoint=args.checkpoint,
                        ema=not args.no_ema)
    for note in res["notes"]:
        print(f"note: {note}")
    m, n = res["mean"], len(res["images"])
    quality = (f"PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}, Consistency {m['consistency']:.2g} "
               "(on the saved [0, 1] images), " if "psnr" in m else "")
    print(f"{args.task} ({args.method}), {n} image(s): {quality}"
          f"mean |A x_hat - y| {m['consistency_model']:.2g} (model space)")
    print(f"written to {args.out}: <stem>.png (restored) and <stem>_compare.png per image, "
          f"{'overview.png, ' if n > 1 else ''}metrics.json")
    return 0


THREADS_HELP = ("torch threads: an integer, or auto (the cores this process may use, shared by "
                "a torchrun job's processes; see energyvae/train/threads.py)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(prog="energyvae", description="Energy-based variational autoencoders.")
    p.add_argument("--version", action="version", version=f"energyvae {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    _add = sub.add_parser
    sub.add_parser = lambda *a, **k: _add(*a, formatter_class=fmt, **k)   # defaults in every --help

    t = sub.add_parser("train", help="train a model from a YAML config")
    t.add_argument("--config", help="a YAML file, or the name of a shipped config (`energyvae configs`)")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.steps=500 model.latent_dim=8")
    t.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN_DIR",
                   help="continue from the run's last checkpoint (the config's run.dir, or RUN_DIR)")
    t.add_argument("--resume-fallback", action="store_true",
                   help="with --resume: if checkpoints/last is corrupt or unreadable, continue from "
                        "checkpoints/best (an earlier step) instead of stopping")
    t.add_argument("--data-dir", help="where on-disk data lives (sets data.path)")
    t.add_argument("--threads", type=_threads, help="torch threads (sets train.threads; default auto)")
    t.add_argument("--print-config", action="store_true",
                   help="print the resolved config (every default filled in) and exit")
    t.add_argument("--dry-run", action="store_true",
                   help="build the data and the model, print their sizes and parameter counts, exit")
    t.set_defaults(func=_cmd_train)

    c = sub.add_parser("configs", help="list the configs shipped inside the package")
    c.set_defaults(func=_cmd_configs)

    ls = sub.add_parser("list", help="list the registered parts (built-in and plugins) by kind")
    ls.add_argument("kind", nargs="?", choices=list(LIST_KINDS), help="one kind (default: all)")
    ls.set_defaults(func=_cmd_list)

    for name, func, n, help_ in (("sample", _cmd_sample, 64, "write a PNG grid of samples"),
                                 ("reconstruct", _cmd_reconstruct, 16, "write inputs beside reconstructions")):
        s = sub.add_parser(name, help=help_)
        s.add_argument("run", help="a run folder")
        s.add_argument("--n", type=int, default=n, help="images in the grid")
        s.add_argument("--out", help="output PNG (default: in the run folder)")
        s.add_argument("--seed", type=int, default=0, help="random seed")
        s.add_argument("--checkpoint", choices=["best", "last"], default="best", help="which checkpoint")
        s.add_argument("--no-ema", action="store_true", help="use the raw weights, not their EMA")
        s.add_argument("--threads", type=_threads, default="auto", help=THREADS_HELP)
        s.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
        if name == "sample":
            s.add_argument("--mcmc", type=int, default=0, metavar="K",
                           help="refine samples by K Langevin steps of the model's data-space energy (EC-VAE)")
        if name == "reconstruct":
            s.add_argument("--split", choices=["train", "val", "test"], default="test")
        s.set_defaults(func=func)

    e = sub.add_parser("evaluate", help="compute metrics and figures of a trained run")
    e.add_argument("run", help="a run folder")
    e.add_argument("--metrics", default="fid_gen,fid_rec,mse,kid,is,pr,nll,latent,holes,sampler,cost,figures",
                   help="comma-separated subset of fid_gen,fid_rec,mse,kid,is,pr,nll,latent,holes,cost,figures")
    e.add_argument("--n", type=int, default=2000, help="samples / reference images for feature metrics")
    e.add_argument("--reference", choices=["train", "test"], default="test",
                   help="split whose images are the reference set of FID/KID/PR")
    e.add_argument("--iw-samples", type=int, default=100, help="K of the importance-weighted NLL")
    e.add_argument("--nll-examples", type=int, default=1000, help="test examples for the NLL")
    e.add_argument("--ais-chains", type=int, default=256, help="AIS chains (unnormalised priors)")
    e.add_argument("--ais-temps", type=int, default=1000, help="AIS temperatures (unnormalised priors)")
    e.add_argument("--inception-weights", help="local Inception-v3 weights: use them instead of the "
                   "library's own feature network (needs the 'inception' extra)")
    e.add_argument("--checkpoint", choices=["best", "last"], default="best", help="which checkpoint")
    e.add_argument("--no-ema", action="store_true", help="use the raw weights, not their EMA")
    e.add_argument("--seed", type=int, default=0, help="random seed")
    e.add_argument("--threads", type=_threads, default="auto", help=THREADS_HELP)
    e.set_defaults(func=_cmd_evaluate)

    r = sub.add_parser("report", help="one offline HTML page comparing runs")
    r.add_argument("runs", nargs="+", help="run folders")
    r.add_argument("--out", required=True, help="output folder (index.html is written there)")
    r.add_argument("--title", help="page title")
    r.add_argument("--baseline", metavar="NAME",
                   help="the run (folder name or path) the others' per-image NLLs are paired with "
                   "(default: the first run with evaluation/per_image_nll.json)")
    r.set_defaults(func=_cmd_report)

    z = sub.add_parser("restore", help="zero-shot restoration of images (EC-VAE paper, section 4.3)")
    z.add_argument("run", help="a run folder")
    z.add_argument("--task", required=True, choices=["inpaint", "colorize", "sr2", "sr4"])
    z.add_argument("--input", required=True, help="a PNG/JPEG file or a folder of them")
    z.add_argument("--out", required=True, help="output folder")
    z.add_argument("--method", choices=["ebm", "no-ebm", "pinv"], default="ebm",
                   help="Langevin with / without the EC-VAE energy, or the A+ y baseline")
    z.add_argument("--mask", choices=["box", "random"], help="inpainting mask drawn by the tool (default box)")
    z.add_argument("--fraction", type=float, help="share of missing pixels (default 0.25 box, 0.5 random)")
    z.add_argument("--mask-file", help="inpainting mask image of the run's H x W: 255 (white) = observed, "
                   "0 (black) = missing, no other value")
    z.add_argument("--degraded", action="store_true",
                   help="the inputs are already degraded (y), read without resizing: inpaint: H x W with "
                   "--mask-file; colorize: grayscale H x W; sr2 / sr4: H/2 x W/2 / H/4 x W/4")
    z.add_argument("--steps", type=int, default=200, help="Langevin steps in z")
    z.add_argument("--step-size", type=float, default=1e-3, help="Langevin step size s")
    z.add_argument("--noise-scale", type=float, default=0.1, help="sigma of the Gaussian likelihood")
    z.add_argument("--ebm-weight", type=float, default=1.0,
                   help="beta in exp(-beta E_w / c^2): 1 = the temperature c^2 the energy was trained at")
    z.add_argument("--ebm-mode", choices=["data", "latent"], default="data",
                   help="data: the calibrator's own chain at its training temperature, restricted to A x = y "
                   "(default); latent: Eq. 6 as printed, exp(-beta E_w(g(z))) in the latent chain")
    z.add_argument("--seed", type=int, default=0, help="random seed")
    z.add_argument("--checkpoint", choices=["best", "last"], default="best", help="which checkpoint")
    z.add_argument("--no-ema", action="store_true", help="use the raw weights, not their EMA")
    z.add_argument("--threads", type=_threads, default="auto", help=THREADS_HELP)
    z.set_defaults(func=_cmd_restore)
    return p


def _device(name: str):
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise EnergyVAEError(f"--device: not a device name: {name!r} (cpu, cuda, cuda:N or auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EnergyVAEError(f"--device {name}: no CUDA device is available")
    return dev


def _threads(value: str):
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an integer >= 1, got {value!r}")
    return n


def _apply_threads(args) -> None:
    from .train.threads import apply_threads
    apply_threads(getattr(args, "threads", "auto"))


def main(argv: list[str] | None = None) -> int:
    # OpenMP threads sleep instead of spin-waiting (train/threads.py: a run stays near its
    # 1-thread speed when another job takes a core); read by libgomp when torch is imported
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import warnings
    warnings.formatwarning = lambda message, category, *a, **k: (   # one line, no source echo
        f"energyvae: warning: {message}\n" if issubclass(category, UserWarning)
        else f"energyvae: {category.__name__}: {message}\n")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "train":   # overrides may also come after options
        args.overrides = [*args.overrides, *(e for e in extra if "=" in e and not e.startswith("-"))]
        extra = [e for e in extra if e not in args.overrides]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command != "train":        # train: train.threads, resolved with the model's size
            _apply_threads(args)
        return args.func(args)
    except EnergyVAEError as e:
        if os.environ.get("ENERGYVAE_DEBUG"):
            raise
        print(f"energyvae: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:                   # the run folder, a cache or an output: one line, exit 2
        if os.environ.get("ENERGYVAE_DEBUG"):
            raise
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"energyvae: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("energyvae: interrupted", file=sys.stderr)
        return 130
