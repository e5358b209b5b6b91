"""``energyvae evaluate RUN``: every metric and figure for one trained run.

Writes ``RUN/evaluation/metrics.json`` (metrics plus what they were computed with: feature
network, reference split, sample counts, checkpoint), ``metrics.md`` and the figures.

Metric names: ``fid_gen`` / ``kid_gen`` / ``is_gen`` / ``precision`` / ``recall`` compare
prior samples with the reference split; ``fid_rec`` compares reconstructions of held-out
(test) images with the reference split; ``mse`` (with ``mse_stderr``) is the reconstruction
error of n test images, the mean squared pixel difference between the image and the decoder
mean at its posterior mean, on the [0, 1] display scale, averaged per pixel and then over images
(the stderr is over images); ``nll`` / ``bits_per_dim`` are the importance-weighted
test NLL (minus an AIS ln Z for unnormalised priors); ``sec_per_step`` is the median training
step time measured here (a few steps of all the model's updates, on a copy) and
``sec_per_image`` the sampling time measured here; ``lipschitz_pairs``,
``lipschitz_jacobian`` and ``posterior_variance`` are the latent diagnostics of
:mod:`energyvae.evaluation.latent`.

With ``nll``, the per-image test NLLs (nats, model space, ln Z subtracted; in the order of the
split) go to ``RUN/evaluation/per_image_nll.json`` instead: ``{"split", "examples", "k",
"seed", "per_image_nll": [...], "dims": D or null}`` (``dims``: the data dimensions of
bits/dim, where bits/dim is reported). ``energyvae report`` pairs runs on them
(:mod:`energyvae.evaluation.paired`). A new ``metrics.json`` without NLLs removes an older
per-image file.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

from ..atomic import atomic_write_text
from ..errors import EnergyVAEError
from ..train.logger import read_metrics

#: per-image test NLLs of the ``nll`` metric (``RUN/evaluation/per_image_nll.json``), for paired
#: comparisons of runs in ``energyvae report``
PER_IMAGE_NLL = "per_image_nll.json"

ALL_METRICS = ("fid_gen", "fid_rec", "mse", "kid", "is", "pr", "nll", "latent", "holes", "sampler", "cost",
               "figures")
DATA_FREE_METRICS = {"sampler"}     # what a run copied without its data can still be evaluated on


def _batched(fn, n: int, batch: int):
    return torch.cat([fn(min(batch, n - s)) for s in range(0, n, batch)])


@torch.no_grad()
def generate(model, n: int, batch: int = 500) -> tuple[torch.Tensor, float]:
    """n samples in model space and the wall time per sample (seconds)."""
    t = time.perf_counter()
    x = _batched(model.sample, n, batch)
    return x, (time.perf_counter() - t) / n


@torch.no_grad()
def reconstruct(model, data, split: str, n: int, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    dev = next(model.parameters()).device
    raw = getattr(data, split).x[:n]
    xs, recs = [], []
    for s in range(0, len(raw), batch):
        x = data.preprocess(raw[s:s + batch]).to(dev)
        xs.append(x)
        recs.append(model.reconstruct(x))
    return torch.cat(xs), torch.cat(recs)


@torch.no_grad()
def prior_sampler_diagnostics(model, n: int = 1000, seed: int = 0) -> dict | None:
    """The convergence diagnostic of the prior's MCMC sampler on ``n`` chains (the sampler's own
    start), with the sampler's name and settings; None for a prior without one."""
    prior = getattr(model, "prior", None)
    sampler = getattr(prior, "sampler", None)
    if sampler is None or not hasattr(prior, "energy_net"):
        return None
    scheme = getattr(prior, "scheme", None)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        _, tr = prior.sample(n, trace=True)
        own = scheme is not None and scheme.sample(prior, 2) is not None
    d = tr.diagnostics()
    d["sampler"] = type(sampler).__name__
    d["generates_without_it"] = own
    return d


def describe_diagnostics(d: dict) -> str:
    """One line: sampler, steps, R-hat, drift, acceptance, and whether the chains mixed."""
    acc = f", acceptance {d['acceptance']:.2f}" if d.get("acceptance") is not None else ""
    verdict = "mixed" if d["mixed"] else "NOT mixed (more steps, or another sampler)"
    line = (f"sampler {d['sampler']}, {d['steps']} steps x {d['chains']} chains: split R-hat "
            f"{d['rhat_max']:.3f}, drift {d['drift_max']:.1f} sd{acc}: {verdict}")
    if d.get("generates_without_it"):
        line += " (samples come from the training scheme's own generator, not from this sampler)"
    return line


def time_train_steps(cfg, model, data, steps: int = 20, warmup: int = 3) -> float:
    """Median wall time of one training step (all of the model's updates), measured on a copy
    of the model with fresh optimizers in a scratch folder; the run itself is untouched."""
    import copy
    import dataclasses
    import tempfile

    from ..train import Trainer
    with tempfile.TemporaryDirectory() as tmp, torch.random.fork_rng():
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, dir=tmp))
        trainer = Trainer(cfg, copy.deepcopy(model).train(), data)
        times = []
        for i in range(warmup + steps):
            x = trainer.batch(i)
            t = time.perf_counter()
            trainer.train_step(x)
            trainer.step += 1
            times.append(time.perf_counter() - t)
    return statistics.median(times[warmup:])


def _figures(model, data, out: Path, fake, x_test, x_rec) -> dict:
    from ..viz import analysis, figures
    to_unit = data.preprocess.to_unit
    paths = {}
    if data.kind != "image":
        paths["toy_density"] = analysis.plot_toy_density(fake.cpu(), out / "toy_density.png",
                                                         reference=x_test.cpu())
        return paths
    paths["samples"] = figures.save_image_grid(to_unit(fake[:64]).cpu(), out / "samples.png")
    if not hasattr(model, "posterior"):                            # the rest needs an encoder
        return paths
    paths["reconstructions"] = figures.save_reconstruction_pairs(
        to_unit(x_test[:16]).cpu(), to_unit(x_rec[:16]).cpu(), out / "reconstructions.png")
    # per-pixel variance of the decoder mean over 50 posterior draws of one test image
    q = model.encode(x_test[:1])
    draws = model.reconstruction.mean(model.decode(q.rsample(50)[:, 0]))
    paths["variance_map"] = analysis.plot_variance_map(to_unit(draws).cpu(), out / "variance_map.png",
                                                       input_image=to_unit(x_test[0]).cpu())
    scale = None
    if hasattr(model.reconstruction, "scale") and callable(model.reconstruction.scale):
        scale = float(model.reconstruction.scale())
    paths["residuals"] = analysis.plot_residual_histogram(x_test.cpu(), x_rec.cpu(), out / "residuals.png",
                                                          scale=scale)
    paths["spectra"] = analysis.plot_spectra(to_unit(x_test).cpu(), to_unit(x_rec).cpu(), out / "spectra.png")
    # latent walks between posterior means of test pairs: the two ends + 10 steps
    mu = model.encode(x_test[:8]).mean
    t = torch.linspace(0, 1, 12, device=mu.device)[None, :, None]
    z = mu[0::2, None] * (1 - t) + mu[1::2, None] * t             # [4, 12, m]
    walk = model.reconstruction.mean(model.decode(z))
    paths["latent_walk"] = analysis.save_latent_walk(to_unit(walk).cpu(), out / "latent_walk.png")
    return paths


def evaluate_run(run_dir: str | Path, *, metrics=ALL_METRICS, n: int = 2000, reference: str = "test",
                 iw_samples: int = 100, nll_examples: int = 1000, ais_chains: int = 256,
                 ais_temps: int = 1000, checkpoint: str = "best", ema: bool = True, seed: int = 0,
                 inception_weights: str | None = None, progress: bool = True) -> dict:
    from ..runs import load_run
    from .likelihood import test_log_likelihood

    unknown = set(metrics) - set(ALL_METRICS)
    if unknown:
        raise EnergyVAEError(f"--metrics: unknown {sorted(unknown)} (choose from {', '.join(ALL_METRICS)})")
    if reference not in ("train", "test"):
        raise EnergyVAEError(f"--reference must be train or test, got {reference!r}")
    run_dir = Path(run_dir)
    out = run_dir / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    cfg, data, model = load_run(run_dir, checkpoint, ema=ema, need_data=False)
    to_unit = data.preprocess.to_unit
    result: dict = {"run": str(run_dir), "checkpoint": checkpoint, "checkpoint_step": _checkpoint_step(run_dir, checkpoint),
                    "ema": ema, "seed": seed, "metrics": {}}
    m = result["metrics"]
    if not data.available:         # a copied run without its data: only what needs none
        needs_data = [k for k in metrics if k not in DATA_FREE_METRICS]
        if needs_data and not set(metrics) & DATA_FREE_METRICS:
            raise EnergyVAEError(f"--metrics {','.join(metrics)}: each needs the run's data, which is "
                                 f"not available ({data.missing_reason}); data-free metrics: "
                                 f"{', '.join(sorted(DATA_FREE_METRICS))}")
        result["skipped"] = {k: f"needs the run's data ({data.missing_reason})" for k in needs_data}
        metrics = [k for k in metrics if k in DATA_FREE_METRICS]
    per_image_nll = None
    torch.manual_seed(seed)
    if not hasattr(model, "posterior"):   # no encoder (EC-Flow, a data-space EBM): no latent metrics
        skipped = [k for k in ("fid_rec", "mse", "latent", "holes") if k in metrics]
        if skipped:
            result.setdefault("skipped", {}).update(
                {k: f"{type(model).__name__} has no encoder / posterior" for k in skipped})
        metrics = [k for k in metrics if k not in skipped]

    need_samples = {"fid_gen", "kid", "is", "pr", "figures", "cost"} & set(metrics)
    need_recon = {"fid_rec", "mse", "figures"} & set(metrics)
    n_fake = n if data.kind == "image" else max(n, 2000)
    fake, sec_per_image = generate(model, n_fake) if need_samples else (None, None)
    x_test, x_rec = reconstruct(model, data, "test", n) if need_recon else (None, None)

    feature_metrics = {"fid_gen", "fid_rec", "kid", "is", "pr"} & set(metrics)
    if feature_metrics:
        from .features import get_feature_net, inception_feature_extractor, to_unit_images
        from .sample_metrics import compute_sample_metrics
        if inception_weights:
            net, info = inception_feature_extractor(inception_weights)
        else:
            net, info = get_feature_net(data, seed=seed, progress=progress)
        ref_split = getattr(data, reference)
        real = to_unit_images(data, ref_split.x[:n])
        result["features"] = info
        result["reference"] = {"split": reference, "n": len(real)}
        wanted = []
        if "fid_gen" in metrics:
            wanted.append("fid")
        if "kid" in metrics:
            wanted.append("kid")
        if "is" in metrics and info.get("name") != "raw-coordinates":   # IS needs a classifier
            wanted.append("is")
        if "pr" in metrics:
            wanted += ["precision", "recall"]
        if wanted:
            gen = compute_sample_metrics(real, to_unit(fake).cpu(), net, metrics=tuple(wanted))
            result["n_samples"] = gen.pop("n_fake", len(fake))
            gen.pop("n_real", None)
            for k, v in gen.items():
                m[{"fid": "fid_gen", "is": "is_gen"}.get(k, k)] = v
        if "fid_rec" in metrics:
            rec = compute_sample_metrics(real, to_unit(x_rec).cpu(), net, metrics=("fid",))
            m["fid_rec"] = rec["fid"]
            result["n_reconstructions"] = len(x_rec)
    if "mse" in metrics:
        per_image = (to_unit(x_rec) - to_unit(x_test)).flatten(1).pow(2).mean(1).double()
        m["mse"] = float(per_image.mean())
        m["mse_stderr"] = float(per_image.std() / len(per_image) ** 0.5) if len(per_image) > 1 else float("nan")
    if "nll" in metrics:
        ll = test_log_likelihood(model, data, k=iw_samples, max_examples=nll_examples,
                                 ais_chains=ais_chains, ais_temps=ais_temps, seed=seed, progress=progress)
        per_image = ll.pop("per_image_ll", None)       # to per_image_nll.json, not metrics.json
        if per_image is not None:
            per_image_nll = {"split": ll.get("split", "test"), "examples": ll.get("examples", len(per_image)),
                             "k": ll.get("k"), "seed": seed, "per_image_nll": [-v for v in per_image],
                             "dims": ll.get("dims")}
        result["likelihood"] = ll
        for key in ("nll", "nll_stderr", "bits_per_dim"):
            if key in ll:
                m[key] = ll[key]
    if "latent" in metrics:
        from .latent import latent_diagnostics
        m.update(latent_diagnostics(model, data))
    if "holes" in metrics and model.posterior.stochastic:
        from .prior_holes import prior_hole_metrics
        holes = prior_hole_metrics(model, data, n_prior=n, n_data=n, seed=seed)
        m.update({k: holes[k] for k in ("log_q_agg_gap", "hole_fraction")})
    if "sampler" in metrics:
        diag = prior_sampler_diagnostics(model, seed=seed)
        if diag is not None:
            result["sampler"] = diag
            m.update(sampler_rhat=diag["rhat_max"], sampler_drift=diag["drift_max"],
                     sampler_mixed=float(diag["mixed"]))
            if diag.get("acceptance") is not None:
                m["sampler_acceptance"] = diag["acceptance"]
    if "cost" in metrics:
        m["sec_per_step"] = time_train_steps(cfg, model, data)
        m["sec_per_image"] = sec_per_image
        logged = [r["sec_per_step"] for r in read_metrics(run_dir) if r.get("split") == "train"
                  and isinstance(r.get("sec_per_step"), (int, float))]
        if logged:
            result["cost"] = {"logged_median_sec_per_step": statistics.median(logged),
                              "batch_size": cfg.train.batch_size, "device": "cpu",
                              "threads": torch.get_num_threads()}
    if "figures" in metrics:
        pairs = (reconstruct(model, data, "test", min(n, 500)) if hasattr(model, "posterior")
                 else (data.preprocess(data.test.x[:min(n, 500)]), None))
        result["figures"] = {k: str(v) for k, v in _figures(model, data, out, fake, *pairs).items()}
    result = _merge_previous(out, result, computed=set(metrics))
    m = result["metrics"]
    # the per-image NLLs belong to this metrics.json: written with it, or a stale one removed
    if per_image_nll is not None:
        atomic_write_text(out / PER_IMAGE_NLL, json.dumps(per_image_nll))
    elif "nll" not in result["metrics"]:
        (out / PER_IMAGE_NLL).unlink(missing_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2, default=str))
    from .report import metrics_markdown_table
    atomic_write_text(out / "metrics.md", _notes(result) + "\n\n" + metrics_markdown_table({run_dir.name: m}) + "\n")
    return result


# the metrics one ``--metrics`` name writes into result["metrics"] (merging drops these first)
_KEYS_OF = {"fid_gen": ("fid_gen",), "fid_rec": ("fid_rec",), "kid": ("kid", "kid_std"), "is": ("is_gen", "is_std"),
            "latent": ("lipschitz_pairs", "lipschitz_jacobian", "posterior_variance"),
            "pr": ("precision", "recall"), "mse": ("mse", "mse_stderr"),
            "nll": ("nll", "nll_stderr", "bits_per_dim"), "holes": ("log_q_agg_gap", "hole_fraction"),
            "sampler": ("sampler_rhat", "sampler_drift", "sampler_mixed", "sampler_acceptance"),
            "cost": ("sec_per_step", "sec_per_image")}


def _checkpoint_step(run_dir: Path, checkpoint: str) -> int | None:
    """The training step of the checkpoint an evaluation reads (its side-car JSON), or None."""
    from ..train import BEST, LAST
    folder = run_dir / "checkpoints"
    name = {"best": BEST, "last": LAST}[checkpoint]
    if checkpoint == "best" and not (folder / name).exists():
        name = LAST
    try:
        step = json.loads((folder / name).with_suffix(".json").read_text()).get("step")
    except (OSError, ValueError, AttributeError):
        return None
    return step if isinstance(step, int) else None


def _merge_previous(out: Path, result: dict, computed: set) -> dict:
    """``evaluate --metrics X`` adds to the run's evaluation instead of erasing it: the metrics
    of an earlier ``metrics.json`` of the same checkpoint (name and training step), weights and
    seed are kept, except those this call recomputed. Anything else starts afresh. (Metric
    options such as ``--n`` or ``--iw-samples`` are not compared: the notes in metrics.md
    record each metric's settings.)"""
    path = out / "metrics.json"
    try:
        old = json.loads(path.read_text()) if path.is_file() else None
    except (ValueError, UnicodeDecodeError, OSError):
        old = None
    same = isinstance(old, dict) and all(old.get(k) == result[k]
                                         for k in ("checkpoint", "checkpoint_step", "ema", "seed"))
    if not same or not isinstance(old.get("metrics"), dict):
        return result
    kept = dict(old["metrics"])
    for name in computed:
        for key in _KEYS_OF.get(name, ()):
            kept.pop(key, None)
    merged = {**{k: v for k, v in old.items() if k not in ("metrics", "skipped")}, **result}
    merged["metrics"] = {**kept, **result["metrics"]}
    merged["skipped"] = {k: v for k, v in {**old.get("skipped", {}), **result.get("skipped", {})}.items()
                         if k not in merged["metrics"] and k not in _computed_keys(merged["metrics"])}
    if not merged["skipped"]:
        merged.pop("skipped")
    return merged


def _computed_keys(metrics: dict) -> set:
    return {name for name, keys in _KEYS_OF.items() if any(k in metrics for k in keys)}


def _notes(result: dict) -> str:
    lines = [f"# Evaluation of {result['run']}", "",
             f"- checkpoint: {result['checkpoint']} ({'EMA' if result['ema'] else 'raw'} weights), seed {result['seed']}"]
    if "features" in result:
        f = result["features"]
        acc = f.get("test_accuracy")
        lines.append(f"- feature network: {f.get('name')} ({f.get('hash', '')[:12]}"
                     + (f", test accuracy {acc:.3f}" if isinstance(acc, float) else "") + ")")
        lines.append(f"- reference: {result['reference']['split']} split, {result['reference']['n']} images; "
                     f"{result.get('n_samples', '?')} samples")
    if "likelihood" in result and "k" in result["likelihood"]:
        ll = result["likelihood"]
        lines.append(f"- NLL: importance-weighted, K={ll['k']}, {ll['examples']} {ll['split']} examples"
                     + (f"; ln Z by AIS {ll['ais']['log_z']:.3f} +- {ll['ais']['stderr']:.3f}" if "ais" in ll else ""))
    if result.get("likelihood", {}).get("exact"):
        ll = result["likelihood"]
        lines.append(f"- NLL: exact (the model's density), {ll['examples']} {ll['split']} examples")
    if "sampler" in result:
        lines.append("- prior " + describe_diagnostics(result["sampler"]))
    for k, why in result.get("skipped", {}).items():
        lines.append(f"- {k}: skipped ({why})")
    return "\n".join(lines)
