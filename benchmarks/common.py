"""Shared driver of the benchmark scripts (run each from the repository root as
``python -m benchmarks.NAME``): train or reuse, evaluate, table.

- :func:`train_or_reuse`: one run, a config with overrides trained by the library's trainer
  into its folder under ``runs/``. A finished run there is reused and an unfinished one resumed
  from its last checkpoint, so an interrupted benchmark continues where it stopped; either only
  if the run was trained with the config asked for now (:func:`check_cached`: a budget or an
  override changed since then stops the benchmark instead of reporting the old run under the new
  settings). :func:`run_config` is that config and check without training.
- :func:`run_variants`: every variant (config overrides) x seed through :func:`train_or_reuse`
  (folders :func:`run_path`), evaluated with ``energyvae evaluate``'s back end:
  {variant: {column: [value per seed]}}.
- :func:`table`, :func:`header`, :func:`write`: a Markdown table (mean +- std over seeds) that
  states machine, command, seeds and budget, written to benchmarks/results/.
"""
from __future__ import annotations

import json
import math
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from energyvae.config import dump_config, load_config
from energyvae.errors import EnergyVAEError
from energyvae.commands.evaluate import evaluate_run
from energyvae.commands.train import train_run

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def run_path(runs_dir: Path, name: str, seed: int) -> Path:
    """The folder of variant ``name``'s run with ``seed`` under ``runs_dir``."""
    return runs_dir / f"{slug(name)}_s{seed}"


def finished(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` trained to its end (it wrote metrics.json)."""
    return (run_dir / "metrics.json").exists()


def train_seconds(run_dir: Path) -> float:
    """The training wall time a finished run recorded."""
    return json.loads((run_dir / "metrics.json").read_text())["train"]["seconds"]


def run_config(config: str | Path, overrides: Sequence[str], run_dir: Path, seed: int):
    """The config of one benchmark run, checked against the run cached in ``run_dir``
    (:func:`check_cached`): ``config`` (a path relative to the repository, or a shipped config's
    name) with ``overrides``, then ``train.seed``, no progress bar, no IW bound at the end of
    training (the benchmarks evaluate separately) and ``run.dir``."""
    path = ROOT / config
    cfg = load_config(path if path.is_file() else config,
                      [*overrides, f"train.seed={seed}", "train.progress=false", "eval.iw_samples=0",
                       f"run.dir={run_dir}"])
    check_cached(run_dir, cfg)
    return cfg


def train_or_reuse(config: str | Path, overrides: Sequence[str], run_dir: Path, *, seed: int):
    """Train the run of :func:`run_config` into ``run_dir``, resuming its last checkpoint if an
    earlier attempt stopped; a finished run is reused. Either way the folder must hold the run
    this config asks for (else SystemExit). Returns the config."""
    cfg = run_config(config, overrides, run_dir, seed)
    if not finished(run_dir):
        train_run(cfg, resume=(run_dir / "checkpoints" / "last.safetensors").exists())
    return cfg


def run_variants(variants: dict[str, list[str]], *, config: str, common: list[str], seeds_for,
                 columns: list[str], metrics: tuple, runs_dir: Path, n: int = 2000, log=print) -> dict:
    """Train or reuse (:func:`train_or_reuse`) and evaluate every variant with each of its seeds
    (``seeds_for(variant)``), in ``run_path(runs_dir, variant, seed)``:
    {variant: {"values": {column: [value per seed]}, "features", "reference", "seeds"}}."""
    rows = {}
    for name, overrides in variants.items():
        per_seed = []
        for seed in seeds_for(name):
            run_dir = run_path(runs_dir, name, seed)
            train_or_reuse(config, [*common, *overrides], run_dir, seed=seed)
            res = evaluate_run(run_dir, n=n, seed=seed, progress=False, metrics=metrics)
            res["metrics"]["train_seconds"] = train_seconds(run_dir)
            per_seed.append(res)
            log(f"{name} seed {seed}: " + ", ".join(f"{k} {res['metrics'].get(k, float('nan')):.4g}"
                                                    for k in columns))
        rows[name] = {"values": {k: [r["metrics"][k] for r in per_seed if k in r["metrics"]] for k in columns},
                      "features": per_seed[-1].get("features"), "reference": per_seed[-1].get("reference"),
                      "seeds": list(seeds_for(name))}
    return rows


def check_cached(run_dir: Path, cfg) -> None:
    """A reused run folder must hold the run this config asks for (a budget or an override
    changed since it was trained would otherwise be reported under the new settings). The saved
    config is loaded with today's defaults, so a key added to the library since (whose default
    keeps the old behaviour) does not invalidate a run; a changed value or default does."""
    saved = run_dir / "config.yaml"
    if not saved.exists():
        return
    try:        # re-validated: a key added since (with its default) is filled in, as on resume
        old = dump_config(load_config(saved))
    except EnergyVAEError:
        old = None
    if old != dump_config(cfg):
        raise SystemExit(f"{run_dir}: the cached run was trained with another config than this "
                         f"benchmark asks for now; delete the folder or point the benchmark elsewhere")


@torch.no_grad()
def draw(model, n: int, spec) -> tuple[torch.Tensor, dict | None, float]:
    """n data-space samples (decoder mean) of a trained model, with the latent sampler ``spec``
    (a ``model.prior.sampler`` dict run on the prior's energy from N(0, I)) or, for ``spec``
    None, the model's own generator; also the chains' diagnostics (None without MCMC) and the
    wall seconds per 1000 samples."""
    from energyvae.models.priors.ebm import LATENT_SAMPLERS
    t = time.perf_counter()
    if spec is None or not hasattr(model.prior, "energy_net"):
        x, diag = model.sample(n), None
    else:
        sampler = LATENT_SAMPLERS.build(spec, "sampler", latent_dim=model.latent_dim,
                                        energy=model.prior.energy_net)
        z, tr = sampler.sample(model.prior.energy_net, n, trace=True)
        x, diag = model.reconstruction.mean(model.decode(z)), tr.diagnostics()
    return x, diag, (time.perf_counter() - t) / n * 1000


def envae_overrides(dataset: str, alpha: float, steps: int, batch_size: int = 64) -> list[str]:
    """The shared budget of the paper-000 benchmarks (configs/fenvae_fashion.yaml's network)."""
    return [f"data.name={dataset}", f"model.kl_weight={alpha}", "train.epochs=null", f"train.steps={steps}",
            f"train.batch_size={batch_size}", "train.eval_every=1000000", "train.checkpoint_every=500"]


def cell(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}"


def cell_se(values, fmt: str = ".4g", se_fmt: str = ".2g") -> str:
    """A table cell: mean ± standard error over seeds (None / NaN values left out; "—" if none)."""
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return "—"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.mean(values), fmt)} ± {format(statistics.stdev(values) / math.sqrt(len(values)), se_fmt)}"


def table(first: str, columns: list[str], rows: dict) -> list[str]:
    """Markdown rows: one line per variant, mean +- std over seeds per column."""
    return (["| " + first + " | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
            + [f"| {name} | " + " | ".join(cell(r["values"][k]) for k in columns) + " |"
               for name, r in rows.items()])


def header(title: str, budget: str, seconds: float, rows: dict) -> list[str]:
    feat = next((r["features"] for r in rows.values() if r.get("features")), None) or {}
    ref = next((r["reference"] for r in rows.values() if r.get("reference")), None) or {}
    acc = feat.get("test_accuracy")
    return [f"# {title}", "",
            f"- command: `{command()}`",
            f"- machine: {platform.platform()}, CPU, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
            f"- budget: {budget}; wall time {seconds:.0f} s",
            f"- features: {feat.get('name', '—')} ({str(feat.get('hash', ''))[:12]}"
            + (f", test accuracy {acc:.3f}" if isinstance(acc, float) else "") + f"); reference: "
            f"{ref.get('split', '—')} split, {ref.get('n', '—')} images"]


def write(name: str, lines: list[str], rows: dict) -> Path:
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
    (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=2, default=str))
    return RESULTS / f"{name}.md"


def now() -> float:
    return time.perf_counter()


def command() -> str:
    """This process's command line as typed from the repository root: ``python -m benchmarks.NAME
    ARGS`` for a benchmark run as a module, else ``python SCRIPT ARGS``."""
    import __main__
    spec = getattr(__main__, "__spec__", None)
    if spec is not None and spec.name:
        head = ["-m", spec.name.removesuffix(".__main__")]
    else:
        script = Path(sys.argv[0]).resolve()
        head = [str(script.relative_to(ROOT)) if script.is_relative_to(ROOT) else sys.argv[0]]
    return "python " + " ".join([*head, *map(shlex.quote, sys.argv[1:])])
