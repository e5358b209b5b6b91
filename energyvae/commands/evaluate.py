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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..atomic import atomic_write_text
from ..errors import EnergyVAEError
from ..evaluation.features import get_feature_net, inception_feature_extractor, to_unit_images
from ..evaluation.latent import latent_diagnostics
from ..evaluation.likelihood import test_log_likelihood
from ..evaluation.model_metrics import (describe_diagnostics, generate, prior_sampler_diagnostics, reconstruct,
                                        time_train_steps)
from ..evaluation.prior_holes import prior_hole_metrics
from ..evaluation.report import metrics_markdown_table
from ..evaluation.sample_metrics import compute_sample_metrics
from ..runs import load_run
from ..train import BEST, LAST
from ..train.logger import read_metrics
from ..viz import analysis, figures

#: per-image test NLLs of the ``nll`` metric (``RUN/evaluation/per_image_nll.json``), for paired
#: comparisons of runs in ``energyvae report``
PER_IMAGE_NLL = "per_image_nll.json"



def _figures(model, data, out: Path, fake, x_test, x_rec) -> dict:
    to_unit = data.preprocess.to_unit
    paths = {}
    if data.kind != "image":
        paths["toy_density"] = analysis.plot_toy_density(fake.cpu(), out / "toy_density.png",
                                                         reference=x_test.cpu())
        return paths
    paths["samples"] = figures.save_image_grid(to_unit(fake[:64]).cpu(), out / "samples.png")
    if not model.has_encoder:                                      # the rest needs an encoder
        return paths
    paths["reconstructions"] = figures.save_reconstruction_pairs(
        to_unit(x_test[:16]).cpu(), to_unit(x_rec[:16]).cpu(), out / "reconstructions.png")
    # per-pixel variance of the decoder mean over 50 posterior draws of one test image
    q = model.encode(x_test[:1])
    draws = model.reconstruction.mean(model.decode(q.rsample(50)[:, 0]))
    paths["variance_map"] = analysis.plot_variance_map(to_unit(draws).cpu(), out / "variance_map.png",
                                                       input_image=to_unit(x_test[0]).cpu())
    scale = model.reconstruction.residual_scale()
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


class _Evaluation:
    """What the metrics of one ``evaluate`` call share: the run, the options, the samples and
    reconstructions (drawn once, before any metric), the feature network and the generative
    feature metrics (computed together, once), and the result being written."""

    def __init__(self, cfg, data, model, run_dir: Path, out: Path, metrics: list[str], opt: dict, result: dict):
        self.cfg, self.data, self.model, self.run_dir, self.out = cfg, data, model, run_dir, out
        self.metrics, self.opt, self.result, self.m = metrics, opt, result, result["metrics"]
        self.to_unit = data.preprocess.to_unit
        self.per_image_nll = None
        self._features = None
        self._generative_done = False
        n = opt["n"]
        need_samples = any(METRIC[k].needs_samples for k in metrics)
        need_recon = any(METRIC[k].needs_reconstructions for k in metrics)
        n_fake = n if data.kind == "image" else max(n, 2000)
        self.fake, self.sec_per_image = generate(model, n_fake) if need_samples else (None, None)
        self.x_test, self.x_rec = reconstruct(model, data, "test", n) if need_recon else (None, None)

    def features(self):
        """(feature network, its info, the reference images in [0, 1]), loaded once."""
        if self._features is None:
            weights = self.opt["inception_weights"]
            if weights:
                net, info = inception_feature_extractor(weights)
            else:
                net, info = get_feature_net(self.data, seed=self.opt["seed"], progress=self.opt["progress"])
            real = to_unit_images(self.data, getattr(self.data, self.opt["reference"]).x[:self.opt["n"]])
            self.result["features"] = info
            self.result["reference"] = {"split": self.opt["reference"], "n": len(real)}
            self._features = net, info, real
        return self._features

    def generative(self) -> None:
        """FID / KID / IS / precision-recall of the samples: the requested ones, in one pass."""
        if self._generative_done:
            return
        self._generative_done = True
        net, info, real = self.features()
        wanted = []
        if "fid_gen" in self.metrics:
            wanted.append("fid")
        if "kid" in self.metrics:
            wanted.append("kid")
        if "is" in self.metrics and info.get("name") != "raw-coordinates":   # IS needs a classifier
            wanted.append("is")
        if "pr" in self.metrics:
            wanted += ["precision", "recall"]
        if wanted:
            gen = compute_sample_metrics(real, self.to_unit(self.fake).cpu(), net, metrics=tuple(wanted))
            self.result["n_samples"] = gen.pop("n_fake", len(self.fake))
            gen.pop("n_real", None)
            for k, v in gen.items():
                self.m[{"fid": "fid_gen", "is": "is_gen"}.get(k, k)] = v


def _fid_rec(ev: _Evaluation) -> None:
    net, _, real = ev.features()
    ev.m["fid_rec"] = compute_sample_metrics(real, ev.to_unit(ev.x_rec).cpu(), net, metrics=("fid",))["fid"]
    ev.result["n_reconstructions"] = len(ev.x_rec)


def _mse(ev: _Evaluation) -> None:
    per_image = (ev.to_unit(ev.x_rec) - ev.to_unit(ev.x_test)).flatten(1).pow(2).mean(1).double()
    ev.m["mse"] = float(per_image.mean())
    ev.m["mse_stderr"] = float(per_image.std() / len(per_image) ** 0.5) if len(per_image) > 1 else float("nan")


def _nll(ev: _Evaluation) -> None:
    o = ev.opt
    ll = test_log_likelihood(ev.model, ev.data, k=o["iw_samples"], max_examples=o["nll_examples"],
                             ais_chains=o["ais_chains"], ais_temps=o["ais_temps"], seed=o["seed"],
                             progress=o["progress"])
    per_image = ll.pop("per_image_ll", None)       # to per_image_nll.json, not metrics.json
    if per_image is not None:
        ev.per_image_nll = {"split": ll.get("split", "test"), "examples": ll.get("examples", len(per_image)),
                            "k": ll.get("k"), "seed": o["seed"], "per_image_nll": [-v for v in per_image],
                            "dims": ll.get("dims")}
    ev.result["likelihood"] = ll
    for key in ("nll", "nll_stderr", "bits_per_dim"):
        if key in ll:
            ev.m[key] = ll[key]


def _holes(ev: _Evaluation) -> None:
    if ev.model.posterior.stochastic:
        n, seed = ev.opt["n"], ev.opt["seed"]
        holes = prior_hole_metrics(ev.model, ev.data, n_prior=n, n_data=n, seed=seed)
        ev.m.update({k: holes[k] for k in ("log_q_agg_gap", "hole_fraction")})


def _sampler(ev: _Evaluation) -> None:
    diag = prior_sampler_diagnostics(ev.model, seed=ev.opt["seed"])
    if diag is not None:
        ev.result["sampler"] = diag
        ev.m.update(sampler_rhat=diag["rhat_max"], sampler_drift=diag["drift_max"],
                    sampler_mixed=float(diag["mixed"]))
        if diag.get("acceptance") is not None:
            ev.m["sampler_acceptance"] = diag["acceptance"]


def _cost(ev: _Evaluation) -> None:
    ev.m["sec_per_step"] = time_train_steps(ev.cfg, ev.model, ev.data)
    ev.m["sec_per_image"] = ev.sec_per_image
    logged = [r["sec_per_step"] for r in read_metrics(ev.run_dir) if r.get("split") == "train"
              and isinstance(r.get("sec_per_step"), (int, float))]
    if logged:
        ev.result["cost"] = {"logged_median_sec_per_step": statistics.median(logged),
                             "batch_size": ev.cfg.train.batch_size, "device": "cpu",
                             "threads": torch.get_num_threads()}


def _figure_metric(ev: _Evaluation) -> None:
    model, data, n = ev.model, ev.data, ev.opt["n"]
    pairs = (reconstruct(model, data, "test", min(n, 500)) if model.has_encoder
             else (data.preprocess(data.test.x[:min(n, 500)]), None))
    ev.result["figures"] = {k: str(v) for k, v in _figures(model, data, ev.out, ev.fake, *pairs).items()}


@dataclass(frozen=True)
class Metric:
    """One ``--metrics`` name: the keys it writes into ``metrics.json``'s ``"metrics"`` (an
    evaluation that recomputes it drops them first), what it needs, and how it is computed."""
    name: str
    keys: tuple[str, ...]
    compute: Callable[[_Evaluation], None]
    needs_data: bool = True            # False: works on a run copied without its data
    needs_encoder: bool = False        # needs q(z|x) (skipped for EC-Flow or a data-space EBM)
    needs_samples: bool = False        # the prior samples, drawn before any metric runs
    needs_reconstructions: bool = False


#: the metrics, in the order they are computed (the four sample-feature metrics share one pass)
METRICS = (
    Metric("fid_gen", ("fid_gen",), lambda ev: ev.generative(), needs_samples=True),
    Metric("kid", ("kid", "kid_std"), lambda ev: ev.generative(), needs_samples=True),
    Metric("is", ("is_gen", "is_std"), lambda ev: ev.generative(), needs_samples=True),
    Metric("pr", ("precision", "recall"), lambda ev: ev.generative(), needs_samples=True),
    Metric("fid_rec", ("fid_rec",), _fid_rec, needs_encoder=True, needs_reconstructions=True),
    Metric("mse", ("mse", "mse_stderr"), _mse, needs_encoder=True, needs_reconstructions=True),
    Metric("nll", ("nll", "nll_stderr", "bits_per_dim"), _nll),
    Metric("latent", ("lipschitz_pairs", "lipschitz_jacobian", "posterior_variance"),
           lambda ev: ev.m.update(latent_diagnostics(ev.model, ev.data)), needs_encoder=True),
    Metric("holes", ("log_q_agg_gap", "hole_fraction"), _holes, needs_encoder=True),
    Metric("sampler", ("sampler_rhat", "sampler_drift", "sampler_mixed", "sampler_acceptance"), _sampler,
           needs_data=False),
    Metric("cost", ("sec_per_step", "sec_per_image"), _cost, needs_samples=True),
    Metric("figures", (), _figure_metric, needs_samples=True, needs_reconstructions=True),
)
METRIC = {m.name: m for m in METRICS}
ALL_METRICS = ("fid_gen", "fid_rec", "mse", "kid", "is", "pr", "nll", "latent", "holes", "sampler", "cost",
               "figures")   # the --metrics default and its documented order
DATA_FREE_METRICS = {m.name for m in METRICS if not m.needs_data}
# the metrics one ``--metrics`` name writes into result["metrics"] (merging drops these first)
_KEYS_OF = {m.name: m.keys for m in METRICS if m.keys}


def evaluate_run(run_dir: str | Path, *, metrics=ALL_METRICS, n: int = 2000, reference: str = "test",
                 iw_samples: int = 100, nll_examples: int = 1000, ais_chains: int = 256,
                 ais_temps: int = 1000, checkpoint: str = "best", ema: bool = True, seed: int = 0,
                 inception_weights: str | None = None, progress: bool = True) -> dict:
    """Compute ``metrics`` (names of :data:`METRICS`) for the run; write ``RUN/evaluation/``."""
    unknown = set(metrics) - set(ALL_METRICS)
    if unknown:
        raise EnergyVAEError(f"--metrics: unknown {sorted(unknown)} (choose from {', '.join(ALL_METRICS)})")
    if reference not in ("train", "test"):
        raise EnergyVAEError(f"--reference must be train or test, got {reference!r}")
    run_dir = Path(run_dir)
    out = run_dir / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    cfg, data, model = load_run(run_dir, checkpoint, ema=ema, need_data=False)
    result: dict = {"run": str(run_dir), "checkpoint": checkpoint, "checkpoint_step": _checkpoint_step(run_dir, checkpoint),
                    "ema": ema, "seed": seed, "metrics": {}}
    if not data.available:         # a copied run without its data: only what needs none
        needs_data = [k for k in metrics if k not in DATA_FREE_METRICS]
        if needs_data and not set(metrics) & DATA_FREE_METRICS:
            raise EnergyVAEError(f"--metrics {','.join(metrics)}: each needs the run's data, which is "
                                 f"not available ({data.missing_reason}); data-free metrics: "
                                 f"{', '.join(sorted(DATA_FREE_METRICS))}")
        result["skipped"] = {k: f"needs the run's data ({data.missing_reason})" for k in needs_data}
        metrics = [k for k in metrics if k in DATA_FREE_METRICS]
    torch.manual_seed(seed)
    if not model.has_encoder:   # no encoder (EC-Flow, a data-space EBM): no latent metrics
        skipped = [m.name for m in METRICS if m.needs_encoder and m.name in metrics]
        if skipped:
            result.setdefault("skipped", {}).update(
                {k: f"{type(model).__name__} has no encoder / posterior" for k in skipped})
        metrics = [k for k in metrics if k not in skipped]
    options = dict(n=n, reference=reference, iw_samples=iw_samples, nll_examples=nll_examples,
                   ais_chains=ais_chains, ais_temps=ais_temps, seed=seed,
                   inception_weights=inception_weights, progress=progress)
    ev = _Evaluation(cfg, data, model, run_dir, out, list(metrics), options, result)
    for metric in METRICS:
        if metric.name in ev.metrics:
            metric.compute(ev)
    result = _merge_previous(out, result, computed=set(ev.metrics))
    # the per-image NLLs belong to this metrics.json: written with it, or a stale one removed
    if ev.per_image_nll is not None:
        atomic_write_text(out / PER_IMAGE_NLL, json.dumps(ev.per_image_nll))
    elif "nll" not in result["metrics"]:
        (out / PER_IMAGE_NLL).unlink(missing_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2, default=str))
    atomic_write_text(out / "metrics.md", _notes(result) + "\n\n"
                      + metrics_markdown_table({run_dir.name: result["metrics"]}) + "\n")
    return result


def _checkpoint_step(run_dir: Path, checkpoint: str) -> int | None:
    """The training step of the checkpoint an evaluation reads (its side-car JSON), or None."""
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
