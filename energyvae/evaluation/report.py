"""An offline HTML page comparing run folders side by side, and a Markdown metrics table.

:func:`build_report` reads, for each run folder (all optional; a missing or unreadable file is
shown as "—" and noted, never an error):

- ``config.yaml``: a few settings (data set, model and part names, latent size, steps, ...);
- ``metrics.json``: the end-of-training metrics (``test``, ``iw``, ``train``, ...);
- ``evaluation/metrics.json``: the metrics of ``energyvae evaluate`` (its ``"metrics"``
  entry: FID, KID, IS, precision / recall, NLL, bits/dim, timings; the other entries, such as
  the feature network, the reference split and the likelihood settings, become notes; a flat
  dict of metrics and info keys is read too);
- ``evaluation/per_image_nll.json``: the per-image test NLLs of ``energyvae evaluate``'s
  ``nll`` metric; runs evaluated on the same examples (split, number, seed, data settings) are
  compared with a baseline run in a "Paired NLL differences" section (see
  :func:`paired_nll_comparisons`); runs that cannot be paired get one line saying why;
- every ``*.png`` in the folder and in ``evaluation/``.

and writes one self-contained ``index.html``: inline CSS, no script, no external resource
(a Content-Security-Policy forbids any), images embedded as base64 ``data:image/png`` URIs.
Layout: a settings table and a metrics table (runs as columns, best value per row
highlighted where the direction is known), the paired NLL differences (only where runs have
per-image NLLs), notes (feature network, reference split, caveats), then one row per figure
name with each run's version side by side.

Metric names are flattened with dots: ``test.loss``, ``iw.nll``, ``train.seconds`` from
``metrics.json``; ``evaluation/metrics.json`` keys are kept as they are (``fid_gen``,
``kid.mean``, ...), or prefixed ``eval.`` if a name would clash.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..atomic import atomic_write_text

__all__ = [
    "RunSummary",
    "build_report",
    "flatten_metrics",
    "format_value",
    "load_run",
    "metric_direction",
    "metrics_markdown_table",
    "paired_nll_comparisons",
]

PER_IMAGE_NLL = "evaluation/per_image_nll.json"

MISSING = "—"

#: keys whose contents describe how metrics were obtained: shown as notes, not as metric rows
INFO_KEYS = frozenset({
    "features", "feature", "feature_net", "feature_network", "feature_extractor", "extractor",
    "reference", "reference_split", "ref", "ref_split", "fid_reference", "split", "data",
    "dataset", "config", "settings", "info", "notes", "note", "source", "device", "checkpoint",
    "run", "seed", "n_samples", "num_samples", "n_reference", "n_gen", "n_real", "sizes",
    "official_test", "version", "k", "examples", "n_test", "dtype", "precision_k", "ema",
    "dims",
})

#: preferred row order (then first appearance)
_ORDER = ["fid_gen", "fid_rec", "mse", "mse_stderr", "fid", "kid", "kid_gen", "kid_rec", "precision", "recall",
          "density", "coverage", "is", "is_gen", "inception_score", "nll", "nll_stderr",
          "bits_per_dim", "psnr", "ssim",
          "lpips", "consistency", "sec_per_step", "sec_per_image"]

_LOWER = ("fid", "kid", "nll", "bits_per_dim", "bpd", "loss", "recon", "mse", "mae", "lpips",
          "consistency", "time", "seconds", "sec_per", "secs", "latency", "error")
_HIGHER = ("precision", "recall", "density", "coverage", "inception_score", "elbo", "psnr",
           "ssim", "log_likelihood", "accuracy", "throughput")
_NO_DIRECTION_TAIL = frozenset({"std", "stderr", "sem", "err", "ci", "n", "count", "step",
                                "steps", "epochs", "k", "examples", "parameters"})


def metric_direction(name: str) -> str | None:
    """``"lower"``, ``"higher"`` or ``None`` (unknown) for a flattened metric name.

    Lower is better for FID / KID / NLL / bits per dim / losses / times; higher for precision,
    recall, IS, ELBO, log-likelihood, PSNR, SSIM. Spreads (``.std``, ``.stderr``) and counts
    have no direction.
    """
    key = name.lower()
    parts = [p for p in re.split(r"[./]", key) if p]
    if not parts or parts[-1] in _NO_DIRECTION_TAIL or \
            parts[-1].endswith(("_std", "_stderr", "_err", "_sem", "_ci")):
        return None
    tokens = set(re.split(r"[._/\-\s]", key))
    for pat in _HIGHER:
        if pat in key:
            return "higher"
    if "is" in tokens or "is_mean" in parts or key.startswith("is_"):
        return "higher"
    for pat in _LOWER:
        if pat in key:
            return "lower"
    return None


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def format_value(v) -> str:
    """A metric value as text: integers as is, floats to 4 significant digits (2 decimals from
    100 on, scientific below 1e-3 or from 1e6), ``None`` as "—"."""
    if v is None:
        return MISSING
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if isinstance(v, numbers.Real):
        v = float(v)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        a = abs(v)
        if a == 0:
            return "0"
        if a >= 1e6 or a < 1e-3:
            return f"{v:.3e}"
        if a >= 100:
            return f"{v:.2f}"
        return f"{v:.{max(0, 3 - math.floor(math.log10(a)))}f}"
    if isinstance(v, Mapping):
        return ", ".join(f"{k}: {format_value(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    return str(v)


def flatten_metrics(d: Mapping, prefix: str = "", notes: dict | None = None) -> dict[str, float]:
    """Numeric leaves of a nested metrics dict as ``{"a.b.c": value}``.

    Non-numeric leaves (strings, lists) and everything under an info key (see ``INFO_KEYS``:
    ``features``, ``reference``, ``data``, ``k``, ...) go to ``notes`` (if given) instead,
    keyed by their dotted name. A ``{"metric": name, "value": v, ...}`` dict (as
    ``train.best``) gives the row ``prefix.name``.
    """
    out: dict[str, float] = {}
    if isinstance(d.get("metric"), str) and _is_number(d.get("value")):
        out[f"{prefix}{d['metric']}"] = float(d["value"])
        rest = {k: v for k, v in d.items() if k not in ("metric", "value")}
        for k, v in flatten_metrics(rest, prefix, notes).items():
            out[k] = v
        return out
    for k, v in d.items():
        name = f"{prefix}{k}"
        if str(k).lower() in INFO_KEYS:
            if notes is not None:
                notes[name] = v
        elif isinstance(v, Mapping):
            out.update(flatten_metrics(v, name + ".", notes))
        elif _is_number(v):
            out[name] = v
        elif v is not None and notes is not None:
            notes[name] = v
    return out


# --------------------------------------------------------------------------- reading runs

@dataclass
class RunSummary:
    """What :func:`load_run` found in one run folder."""
    name: str
    path: Path
    settings: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)         # flattened, in row order
    sections: dict[str, str] = field(default_factory=dict)          # metric -> section title
    notes: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)          # "samples" / "evaluation/x"
    problems: list[str] = field(default_factory=list)
    data: dict[str, Any] | None = None        # config.yaml's data section, as written
    per_image_nll: dict[str, Any] | None = None   # a valid evaluation/per_image_nll.json
    per_image_problem: str | None = None      # why there is none ("no ..." when the file is absent)


def _read_json(path: Path, shown: str, problems: list[str]):
    if not path.is_file():
        problems.append(f"no {shown}")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        problems.append(f"unreadable {shown} ({type(e).__name__})")
        return None
    if not isinstance(data, Mapping):
        problems.append(f"{shown}: not a JSON object")
        return None
    return data


def _plain(v) -> str:
    """A setting as short text: floats with ``:g`` (``0.001``, ``1``), lists in brackets."""
    if isinstance(v, float) and math.isfinite(v):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_plain(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k}: {_plain(x)}" for k, x in v.items()) + "}"
    return format_value(v)


def _part(v) -> str:
    """A model part ``{name: conv, channels: [...]}`` as ``conv (channels=[...])``."""
    if isinstance(v, Mapping):
        name = str(v.get("name", "?"))
        extra = ", ".join(f"{k}={_plain(x)}" for k, x in v.items() if k != "name")
        s = f"{name} ({extra})" if extra else name
    elif isinstance(v, (list, tuple)):
        s = ", ".join(_part(x) for x in v) if v else "none"
    else:
        s = _plain(v)
    return s if len(s) <= 120 else s[:117] + "..."


def _settings(cfg: Mapping) -> dict[str, Any]:
    out: dict[str, Any] = {}
    data = cfg.get("data") if isinstance(cfg.get("data"), Mapping) else {}
    model = cfg.get("model") if isinstance(cfg.get("model"), Mapping) else {}
    train = cfg.get("train") if isinstance(cfg.get("train"), Mapping) else {}
    if "name" in data:
        out["data"] = data["name"]
        if data.get("image_size"):
            out["data"] = f"{data['name']} ({data['image_size']} px)"
    if "name" in model:
        out["model"] = model["name"]
    if "latent_dim" in model:
        out["latent_dim"] = model["latent_dim"]
    for k, v in model.items():
        if k in ("name", "latent_dim"):
            continue
        if isinstance(v, Mapping) and "name" in v:
            out[k] = _part(v)
        elif isinstance(v, (list, tuple)) and v and all(isinstance(x, Mapping) for x in v):
            out[k] = _part(v)
        elif _is_number(v) or isinstance(v, str):
            out[k] = v
    for k in ("steps", "epochs", "batch_size", "lr", "ema", "seed"):
        if train.get(k) is not None:
            out[k] = train[k]
    return out


def _read_yaml(path: Path, problems: list[str]):
    if not path.is_file():
        problems.append("no config.yaml")
        return None
    try:
        import yaml
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception as e:  # noqa: BLE001 - any parse error is reported, not raised
        problems.append(f"unreadable config.yaml: {type(e).__name__}")
        return None
    if not isinstance(data, Mapping):
        problems.append("config.yaml: not a mapping")
        return None
    return data


def _features_note(v) -> str:
    """The feature network info of ``energyvae evaluate`` in one line: name, hash, accuracy."""
    if not isinstance(v, Mapping):
        return format_value(v)
    parts = [str(v.get("name", "?"))]
    if v.get("hash"):
        parts.append(f"hash {str(v['hash'])[:12]}")
    arch = v.get("architecture")
    if isinstance(arch, Mapping) and arch.get("kind"):
        parts.append(f"architecture {arch['kind']}")
    for key, label in (("dim", "dim"), ("dataset", "trained on"), ("test_accuracy", "accuracy")):
        if v.get(key) is not None and not isinstance(v.get(key), (Mapping, list)):
            val = v[key]
            parts.append(f"{label} {format_value(val) if _is_number(val) else val}")
    if v.get("accuracy_split") and v.get("test_accuracy") is not None:
        parts[-1] += f" ({v['accuracy_split']})"
    return ", ".join(parts)


def _reference_note(v) -> str:
    if isinstance(v, Mapping) and "split" in v:
        n = v.get("n")
        return f"{v['split']} split" + (f", {n} images" if n is not None else "")
    return format_value(v)


def _leaves(d: Mapping, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


_FEATURE_KEYS = ("features", "feature", "feature_net", "feature_network", "feature_extractor")
_REFERENCE_KEYS = ("reference", "reference_split", "ref_split", "fid_reference")


def _evaluation(ev: Mapping) -> tuple[dict[str, float], dict[str, Any]]:
    """(metrics, notes) of an ``evaluation/metrics.json``.

    Two layouts: ``energyvae evaluate``'s ``{"metrics": {...}, "features": {...},
    "reference": {...}, "likelihood": {...}, ...}`` (rows from ``metrics``; the other entries,
    except ``figures`` and ``run``, become notes), or a flat dict of metrics and info keys.
    """
    notes: dict[str, Any] = {}
    if isinstance(ev.get("metrics"), Mapping):
        metrics = flatten_metrics(ev["metrics"], notes=notes)
        for k, v in ev.items():
            if k in ("metrics", "figures", "run") or k in _FEATURE_KEYS or k in _REFERENCE_KEYS:
                continue
            if isinstance(v, Mapping):
                for name, leaf in _leaves(v, f"{k}.").items():
                    if name.rsplit(".", 1)[-1] not in metrics and not isinstance(leaf, list):
                        notes[name] = leaf
            else:
                notes[k] = v
    else:
        metrics = flatten_metrics(ev, notes=notes)
    for k in _FEATURE_KEYS:
        notes.pop(k, None)
        if k in ev:
            notes[k] = _features_note(ev[k])
    for k in _REFERENCE_KEYS:
        notes.pop(k, None)
        if k in ev:
            notes[k] = _reference_note(ev[k])
    ordered = {k: notes[k] for k in (*_FEATURE_KEYS, *_REFERENCE_KEYS) if k in notes}
    ordered.update({k: v for k, v in notes.items() if k not in ordered})
    return metrics, ordered


def _order_key(name: str, first_seen: int) -> tuple:
    base = name.split(".")[0]
    return (_ORDER.index(base) if base in _ORDER else len(_ORDER), first_seen)


def load_run(run_dir, name: str | None = None) -> RunSummary:
    """Read one run folder (see the module doc); never raises for missing or bad files."""
    path = Path(run_dir)
    run = RunSummary(name=name or path.name or str(path), path=path)
    if not path.is_dir():
        run.problems.append("folder not found")
        return run
    cfg = _read_yaml(path / "config.yaml", run.problems)
    if cfg is not None:
        run.settings = _settings(cfg)
        if isinstance(cfg.get("data"), Mapping):
            run.data = dict(cfg["data"])
    run.per_image_nll, run.per_image_problem = _read_per_image_nll(path / PER_IMAGE_NLL)
    if run.per_image_problem and (path / PER_IMAGE_NLL).exists():   # a missing file is no problem
        run.problems.append(run.per_image_problem)
    ev = _read_json(path / "evaluation" / "metrics.json", "evaluation/metrics.json",
                    run.problems)
    ev_metrics, ev_notes = _evaluation(ev) if ev is not None else ({}, {})
    tr_notes: dict = {}
    tr = _read_json(path / "metrics.json", "metrics.json", run.problems)
    tr_metrics = flatten_metrics(tr, notes=tr_notes) if tr is not None else {}
    clash = set(ev_metrics) & set(tr_metrics)
    ev_items = sorted(enumerate(ev_metrics.items()), key=lambda t: _order_key(t[1][0], t[0]))
    for _, (k, v) in ev_items:
        key = f"eval.{k}" if k in clash else k
        run.metrics[key] = v
        run.sections[key] = "evaluation"
    for k, v in tr_metrics.items():
        run.metrics[k] = v
        run.sections[k] = "training run"
    run.notes.update({f"evaluation: {k}": v for k, v in ev_notes.items()})
    keep = {"iw.note", "iw.k", "iw.examples", "iw.split", "n_test", "units", "data.source",
            "data.official_test", "data.sizes"}
    run.notes.update({f"metrics.json: {k}": v for k, v in tr_notes.items()
                      if k in keep or k.endswith("note")})
    for folder, prefix in ((path, ""), (path / "evaluation", "evaluation/")):
        if folder.is_dir():
            for png in sorted(folder.glob("*.png")):
                if png.is_file():
                    run.figures[prefix + png.stem] = png
    return run


def _read_per_image_nll(path: Path) -> tuple[dict | None, str | None]:
    """(the per-image NLL file, None) or (None, why not): absent, unreadable (truncated,
    corrupt) or not of the layout ``energyvae evaluate`` writes."""
    shown = PER_IMAGE_NLL
    if not path.is_file():
        return None, f"no {shown}"
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return None, f"unreadable {shown} ({type(e).__name__})"
    if not isinstance(d, Mapping):
        return None, f"{shown}: not a JSON object"
    vals = d.get("per_image_nll")
    if not isinstance(vals, list) or not all(_is_number(v) for v in vals):
        return None, f"{shown}: per_image_nll is not a list of numbers"
    ex = d.get("examples")
    if not isinstance(ex, int) or isinstance(ex, bool) or ex != len(vals):
        return None, f"{shown}: {len(vals)} values for {ex!r} examples"
    dims = d.get("dims")
    if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims <= 0):
        return None, f"{shown}: dims {dims!r} is not a positive integer"
    return {"split": d.get("split"), "examples": ex, "k": d.get("k"), "seed": d.get("seed"),
            "dims": dims, "per_image_nll": [float(v) for v in vals]}, None


#: data settings that do not change the test examples (where the files are, the training subset)
_DATA_KEYS_IGNORED = frozenset({"path", "limit"})


def _data_difference(a: Mapping | None, b: Mapping | None) -> str | None:
    """The first data setting that differs between two runs' configs (keys both have), or None."""
    if a is None or b is None:
        return None
    for k in a:
        if k in b and k not in _DATA_KEYS_IGNORED and a[k] != b[k]:
            return (f"data.{k} {json.dumps(a[k], default=str)}, the baseline's "
                    f"{json.dumps(b[k], default=str)}")
    return None


def _mismatch(run: RunSummary, base: RunSummary) -> str | None:
    """Why ``run``'s per-image NLLs are not of the same examples as ``base``'s, or None."""
    a, b = run.per_image_nll, base.per_image_nll
    why = []
    if a["split"] != b["split"]:
        why.append(f"{a['split']} split, the baseline's is {b['split']}")
    if a["examples"] != b["examples"]:
        why.append(f"{a['examples']} examples, the baseline has {b['examples']}")
    if a["seed"] != b["seed"]:
        why.append(f"seed {a['seed']}, the baseline's {b['seed']}")
    if a["dims"] is not None and b["dims"] is not None and a["dims"] != b["dims"]:
        why.append(f"{a['dims']} data dimensions, the baseline's {b['dims']}")
    data = _data_difference(run.data, base.data)
    if data:
        why.append(data)
    return "; ".join(why) or None


def _stderr(vals: list[float]) -> float:
    n = len(vals)
    if n < 2:
        return math.nan
    mean = math.fsum(vals) / n
    return math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1) / n)


def paired_nll_comparisons(runs: list[RunSummary], baseline: str | None = None) -> dict | None:
    """Paired per-image NLL differences of ``runs`` against a baseline run, from their
    ``evaluation/per_image_nll.json`` (see :mod:`energyvae.evaluation.paired`).

    ``baseline``: a run's name (or folder); by default the first run with readable per-image
    NLLs. Two runs are paired when their split, number of examples and seed agree (and the
    data dimensions and the config's data settings, where both are known).

    Returns None when fewer than two runs are given or no run has a per-image file (nor a
    baseline was asked for); else ``{"baseline": name or None, "baseline_info": {...} or None,
    "note": str or None, "pairs": [...], "unpaired": [(name, reason), ...]}``, each pair
    ``{"run", "mean", "stderr", "z", "n", "bits_per_dim": {"mean", "stderr"} or None,
    "unpaired_stderr", "k", "nll", "baseline_nll"}`` with ``mean`` = mean of run - baseline
    (nats), ``stderr`` its paired standard error and ``unpaired_stderr`` = sqrt(se_run^2 +
    se_baseline^2), what the difference of the two NLLs' own error bars would claim.
    """
    from .paired import nats_to_bits_per_dim, paired_difference
    base = None
    if baseline is not None:
        base = next((r for r in runs if r.name == str(baseline)), None) or next(
            (r for r in runs if str(r.path) == str(baseline) or r.path == Path(baseline)), None)
        if base is None:
            raise ValueError(f"baseline {baseline!r} is not one of the runs "
                             f"({', '.join(r.name for r in runs) or 'none'})")
    absent = f"no {PER_IMAGE_NLL}"
    if len(runs) < 2 or (baseline is None and all(
            r.per_image_nll is None and r.per_image_problem in (None, absent) for r in runs)):
        return None
    if base is None:
        base = next((r for r in runs if r.per_image_nll is not None), None)

    def why_none(r: RunSummary) -> str:
        why = r.per_image_problem or absent
        return why + " (evaluate the run with the nll metric)" if why == absent else why

    out: dict = {"baseline": base.name if base else None, "baseline_info": None, "note": None,
                 "pairs": [], "unpaired": []}
    if base is None or base.per_image_nll is None:
        out["note"] = (f"baseline {base.name}: {why_none(base)}; nothing paired" if base else
                       "no run has readable per-image NLLs; nothing paired")
        out["unpaired"] = [(r.name, why_none(r)) for r in runs if r is not base and r.per_image_nll is None]
        return out
    b = base.per_image_nll
    b_vals = b["per_image_nll"]
    info = out["baseline_info"] = {
        "nll": math.fsum(b_vals) / len(b_vals) if b_vals else math.nan, "stderr": _stderr(b_vals),
        "split": b["split"], "examples": b["examples"], "seed": b["seed"], "k": b["k"], "dims": b["dims"]}
    for r in runs:
        if r is base:
            continue
        a = r.per_image_nll
        why = why_none(r) if a is None else _mismatch(r, base)
        if why is None and len(b_vals) < 2:
            why = f"{len(b_vals)} example(s): a paired standard error needs two"
        if why:
            out["unpaired"].append((r.name, why))
            continue
        d = paired_difference(a["per_image_nll"], b_vals)
        dims = a["dims"] if a["dims"] is not None and b["dims"] is not None else None
        bpd = None if dims is None else {"mean": nats_to_bits_per_dim(d["mean"], dims),
                                         "stderr": nats_to_bits_per_dim(d["stderr"], dims)}
        out["pairs"].append({
            "run": r.name, **d, "bits_per_dim": bpd,
            "unpaired_stderr": math.hypot(_stderr(a["per_image_nll"]), info["stderr"]),
            "k": a["k"], "nll": math.fsum(a["per_image_nll"]) / len(a["per_image_nll"]),
            "baseline_nll": info["nll"]})
    return out


def _unique_names(paths: list[Path], names: list[str] | None) -> list[str]:
    if names is not None:
        if len(names) != len(paths):
            raise ValueError(f"{len(names)} names for {len(paths)} runs")
        out = [str(n) for n in names]
    else:
        out = [p.name or str(p) for p in paths]
    seen: dict[str, int] = {}
    for i, n in enumerate(out):
        if out.count(n) > 1:
            parent = paths[i].parent.name
            cand = f"{parent}/{n}" if parent else n
            seen[cand] = seen.get(cand, 0) + 1
            out[i] = cand if seen[cand] == 1 else f"{cand} ({seen[cand]})"
    return out


# --------------------------------------------------------------------------- tables

def _best(values: list, direction: str | None) -> set[int]:
    nums = [(i, float(v)) for i, v in enumerate(values) if _is_number(v) and math.isfinite(v)]
    if direction is None or len(nums) < 2:
        return set()
    target = min(v for _, v in nums) if direction == "lower" else max(v for _, v in nums)
    if all(v == target for _, v in nums):
        return set()
    return {i for i, v in nums if v == target}


def _rows(runs: list[Mapping[str, float]]) -> list[str]:
    rows: list[str] = []
    seen: set[str] = set()
    for m in runs:
        for k in m:
            if k not in seen:
                seen.add(k)
                rows.append(k)
    return rows


def metrics_markdown_table(runs: Mapping[str, Mapping]) -> str:
    """A GitHub-flavoured Markdown table: one row per metric, one column per run.

    ``runs``: ``{run name: metrics}``; nested metrics are flattened (:func:`flatten_metrics`,
    info keys left out); a whole ``evaluation/metrics.json`` of ``energyvae evaluate`` (with
    its ``"metrics"`` entry) gives the rows of that entry. Values use :func:`format_value`; a missing value is "—"; the best
    value of a row (where :func:`metric_direction` knows the direction and two or more runs
    have a value) is **bold**; the metric column says ``(lower)`` / ``(higher)``.
    """
    names = list(runs)
    flat = [(_evaluation(m)[0] if isinstance(m.get("metrics"), Mapping) else flatten_metrics(m))
            if isinstance(m, Mapping) else {} for m in runs.values()]
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| metric | " + " | ".join(esc(n) for n in names) + " |",
             "|---|" + "---:|" * len(names)]
    if not names:
        lines = ["| metric |", "|---|"]
    rows = _rows(flat)
    rows = [k for _, k in sorted(enumerate(rows), key=lambda t: _order_key(t[1], t[0]))]
    for row in rows:
        vals = [m.get(row) for m in flat]
        d = metric_direction(row)
        best = _best(vals, d)
        cells = []
        for i, v in enumerate(vals):
            s = esc(format_value(v))
            cells.append(f"**{s}**" if i in best else s)
        label = esc(row) + (f" ({d})" if d else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- HTML

_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 1.5rem; color: #1d1d1f; background: #fff; line-height: 1.35; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2rem;
     border-bottom: 1px solid #ddd; padding-bottom: .2rem; } h3 { font-size: 1rem; }
.meta { color: #666; font-size: .85rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .88rem; }
th, td { border: 1px solid #ddd; padding: .25rem .55rem; vertical-align: top; }
thead th { background: #f3f4f6; position: sticky; top: 0; }
th.row { text-align: left; font-weight: normal; white-space: nowrap; background: #fafafa;
         font-family: ui-monospace, Menlo, Consolas, monospace; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.best { background: #dcfce7; font-weight: 700; }
td.missing { color: #aaa; text-align: center; }
tr.section th { background: #eef2ff; text-align: left; font-weight: 600; }
.dir { color: #888; font-size: .75rem; margin-left: .3rem; }
.warn { background: #fff7ed; border: 1px solid #fdba74; padding: .4rem .7rem; margin: .5rem 0; }
.problems { color: #b45309; font-size: .8rem; }
.figrow { display: grid; gap: 1rem; align-items: start; }
figure { margin: 0; border: 1px solid #e5e7eb; padding: .4rem; background: #fff; min-width: 0; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figure img.grid { image-rendering: pixelated; }
figcaption { font-size: .8rem; color: #444; margin-top: .3rem; text-align: center;
             overflow-wrap: anywhere; }
figure.missing { color: #aaa; text-align: center; padding: 2rem .4rem; }
"""

_FIGURE_ORDER = ["samples", "reconstructions", "loss_curves"]


def _e(s) -> str:
    return html.escape(str(s), quote=True)


def _png_data_uri(path: Path, max_bytes: int) -> tuple[str | None, str]:
    """(data URI or None, info text)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        return None, f"unreadable ({type(e).__name__})"
    if not raw.startswith(b"\x89PNG\r\n\x1a\n"):
        return None, "not a PNG file"
    if len(raw) > max_bytes:
        return None, f"too large to embed ({len(raw) / 1e6:.1f} MB)"
    info = f"{len(raw) / 1024:.0f} KiB"
    if len(raw) >= 26 and raw[12:16] == b"IHDR":
        w, h = int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
        info = f"{w}×{h} px, {info}"
    return "data:image/png;base64," + base64.b64encode(raw).decode("ascii"), info


def _png_meta(path: Path) -> tuple[int | None, bool]:
    """(width, is_pixel_grid): grids from save_image_grid are gray / RGB without alpha and are
    drawn pixelated; matplotlib figures (RGBA) are drawn smoothly."""
    try:
        with open(path, "rb") as f:
            head = f.read(26)
    except OSError:
        return None, False
    if len(head) < 26 or head[12:16] != b"IHDR":
        return None, False
    return int.from_bytes(head[16:20], "big"), head[25] in (0, 2, 3)


def _table(headers: list[str], body: list[str]) -> str:
    head = "<tr><th></th>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr>"
    return (f'<div class="scroll"><table><thead>{head}</thead><tbody>{"".join(body)}'
            f"</tbody></table></div>")


def _value_rows(rows: list[str], values: list[dict], fmt) -> list[str]:
    """One <tr> per row key: each run's formatted value, or the missing marker."""
    return [f'<tr><th class="row">{_e(row)}</th>' + "".join(
        f"<td>{_e(fmt(v[row]))}</td>" if row in v else f'<td class="missing">{MISSING}</td>'
        for v in values) + "</tr>" for row in rows]


def _settings_html(runs: list[RunSummary], names: list[str]) -> str:
    rows = _rows([r.settings for r in runs])
    body = _value_rows(rows, [r.settings for r in runs], _plain)
    cells = "".join(f'<td class="problems">{_e("; ".join(r.problems)) or "all files found"}</td>'
                    for r in runs)
    body.append(f'<tr><th class="row">files</th>{cells}</tr>')
    cells = "".join(f'<td class="meta">{_e(r.path)}</td>' for r in runs)
    body.append(f'<tr><th class="row">folder</th>{cells}</tr>')
    return _table(names, body)


def _same_units(runs: list[RunSummary], vals: list) -> bool:
    """Whether the runs holding a value of a training-run row (loss, recon, kl, elbo) report it
    in one unit with one reconstruction objective: an energy score and a nats likelihood (or
    an unnormalised prior's kl without ln Z) are not ranked against each other."""
    keys = {(str(r.notes.get("metrics.json: units", "nats per example")), str(r.settings.get("reconstruction", "")))
            for r, v in zip(runs, vals) if v is not None}
    return len(keys) <= 1


def _metrics_html(runs: list[RunSummary], names: list[str]) -> str:
    rows = _rows([r.metrics for r in runs])
    section_of = {}
    for r in runs:
        for k, s in r.sections.items():
            section_of.setdefault(k, s)
    order = {"evaluation": 0, "training run": 1}
    rows.sort(key=lambda k: order.get(section_of.get(k, ""), 2))   # stable within a section
    titles = {"evaluation": "evaluation/metrics.json (energyvae evaluate)",
              "training run": "metrics.json (end of training)"}
    body, current = [], None
    for row in rows:
        sec = section_of.get(row, "")
        if sec != current:
            current = sec
            body.append(f'<tr class="section"><th colspan="{len(runs) + 1}">'
                        f"{_e(titles.get(sec, sec))}</th></tr>")
        vals = [r.metrics.get(row) for r in runs]
        d = metric_direction(row)
        comparable = sec != "training run" or _same_units(runs, vals)
        best = _best(vals, d) if comparable else set()
        cells = []
        for i, v in enumerate(vals):
            if v is None:
                cells.append(f'<td class="missing">{MISSING}</td>')
            else:
                cls = "num best" if i in best else "num"
                cells.append(f'<td class="{cls}" title="{_e(repr(v))}">{_e(format_value(v))}</td>')
        arrow = {"lower": "↓ lower is better", "higher": "↑ higher is better"}.get(d, "")
        if not comparable and d:
            arrow = "units or objectives differ: not ranked"
        label = _e(row) + (f'<span class="dir">{_e(arrow)}</span>' if arrow else "")
        body.append(f'<tr><th class="row">{label}</th>{"".join(cells)}</tr>')
    if not rows:
        return '<p class="meta">No metrics found.</p>'
    return _table(names, body)


def _notes_html(runs: list[RunSummary], names: list[str]) -> str:
    parts = []
    feats = {}
    for r, n in zip(runs, names):
        vals = tuple(format_value(v) for k, v in r.notes.items() if re.search(r"feature", k, re.I))
        if vals:
            feats[n] = vals
    if len(set(feats.values())) > 1:
        parts.append('<p class="warn">The runs were evaluated with different feature networks; '
                     "their FID / KID / precision / recall are not comparable.</p>")
    refs = {}
    for r, n in zip(runs, names):
        vals = tuple(format_value(v) for k, v in r.notes.items()
                     if re.search(r"reference|ref_split", k, re.I))
        if vals:
            refs[n] = vals
    if len(set(refs.values())) > 1:
        parts.append('<p class="warn">The runs used different reference sets for the '
                     "feature-based metrics.</p>")
    if any(r.metrics.get(k) is not None for r in runs for k in r.metrics if "fid" in k) \
            and not feats:
        parts.append('<p class="warn">No feature-network information was recorded with the '
                     "FID values.</p>")
    rows = sorted(_rows([r.notes for r in runs]), key=lambda k: not k.startswith("evaluation"))
    body = _value_rows(rows, [r.notes for r in runs], format_value)
    parts.append(_table(names, body) if body else
                 '<p class="meta">No notes (no evaluation/metrics.json info found).</p>')
    return "".join(parts)


def _paired_html(paired: dict) -> str:
    """The "Paired NLL differences" section: one row per run paired with the baseline, then
    one line per run that was not paired."""
    def num(v):
        if v is None:
            return f'<td class="missing">{MISSING}</td>'
        return f'<td class="num" title="{_e(repr(v))}">{_e(format_value(v))}</td>'
    parts = []
    info = paired["baseline_info"]
    if info is not None:
        parts.append(
            f'<p class="meta">Baseline: <b>{_e(paired["baseline"])}</b>, NLL '
            f'{_e(format_value(info["nll"]))} ± {_e(format_value(info["stderr"]))} nats over '
            f'{_e(info["examples"])} {_e(info["split"])} examples (seed {_e(info["seed"])}'
            + (f', K = {_e(info["k"])}' if info["k"] is not None else "") + "). "
            "Δ NLL = mean over the same examples of the run's per-image NLL minus the baseline's "
            "(nats; negative: the run is better); paired stderr = sample std of the per-image "
            "differences / √n; unpaired stderr = √(se_run² + se_baseline²), what the two NLLs' own "
            "error bars would give; bits/dim = nats / (D ln 2).</p>")
    if paired["note"]:
        parts.append(f'<p class="warn">{_e(paired["note"])}</p>')
    if paired["pairs"]:
        headers = ["Δ NLL (nats)", "paired stderr", "z", "n", "Δ bits/dim", "stderr (bits/dim)",
                   "unpaired stderr", "K"]
        body = []
        for p in paired["pairs"]:
            bpd = p["bits_per_dim"] or {}
            cells = [num(p["mean"]), num(p["stderr"]), num(p["z"]), num(p["n"]), num(bpd.get("mean")),
                     num(bpd.get("stderr")), num(p["unpaired_stderr"]), num(p["k"])]
            body.append(f'<tr class="paired"><th class="row">{_e(p["run"])} − {_e(paired["baseline"])}</th>'
                        + "".join(cells) + "</tr>")
        parts.append(_table(headers, body))
    if paired["unpaired"]:
        items = "".join(f"<li>{_e(name)}: not paired: {_e(why)}</li>" for name, why in paired["unpaired"])
        parts.append(f'<ul class="problems">{items}</ul>')
    return "".join(parts)


def _figures_html(runs: list[RunSummary], names: list[str], max_bytes: int) -> str:
    keys = _rows([r.figures for r in runs])
    keys.sort(key=lambda k: (k.startswith("evaluation/"),
                             _FIGURE_ORDER.index(k) if k in _FIGURE_ORDER else len(_FIGURE_ORDER),
                             k))
    if not keys:
        return '<p class="meta">No figures found.</p>'
    out = []
    cols = f"grid-template-columns: repeat({max(1, len(runs))}, minmax(0, 1fr));"
    for key in keys:
        out.append(f'<section><h3 id="fig-{_e(re.sub(r"[^A-Za-z0-9_-]", "-", key))}">'
                   f"{_e(key)}</h3><div class=\"figrow\" style=\"{cols}\">")
        for r, n in zip(runs, names):
            p = r.figures.get(key)
            if p is None:
                out.append(f'<figure class="missing">{MISSING}<figcaption>{_e(n)}: '
                           f"no {_e(key)}.png</figcaption></figure>")
                continue
            uri, info = _png_data_uri(p, max_bytes)
            if uri is None:
                out.append(f'<figure class="missing">{MISSING}<figcaption>{_e(n)}: {_e(key)} '
                           f"({_e(info)})</figcaption></figure>")
                continue
            width, grid = _png_meta(p)
            attrs = (f' width="{width}"' if width else "") + (' class="grid"' if grid else "")
            out.append(f'<figure><img src="{uri}"{attrs} alt="{_e(n)}: {_e(key)}">'
                       f"<figcaption>{_e(n)} — {_e(key)} ({_e(info)})</figcaption></figure>")
        out.append("</div></section>")
    return "".join(out)


def build_report(run_dirs: Iterable, out_dir, title: str | None = None,
                 names: list[str] | None = None, max_image_bytes: int = 25_000_000,
                 baseline: str | None = None) -> Path:
    """Write ``out_dir/index.html`` comparing ``run_dirs`` side by side; return its path.

    Runs are columns, named by their folder names (or ``names``; duplicates get their parent
    folder's name). The page is self-contained and usable offline: inline CSS, no scripts,
    images as base64 data URIs (PNG files above ``max_image_bytes`` are listed, not embedded),
    and a Content-Security-Policy that blocks any network fetch. All text is HTML-escaped.
    Missing or unreadable files are shown as "—" and listed in the "files" row.

    Runs with per-image NLLs (``evaluation/per_image_nll.json``) get a "Paired NLL
    differences" section against ``baseline`` (a run's name or folder; by default the first
    run with per-image NLLs), see :func:`paired_nll_comparisons`; an unknown ``baseline`` is a
    ``ValueError``.
    """
    paths = [Path(p) for p in run_dirs]
    labels = _unique_names(paths, names)
    runs = [load_run(p, n) for p, n in zip(paths, labels)]
    paired = paired_nll_comparisons(runs, baseline)
    title = title or "energyvae: run comparison"
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    csp = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; "
           "form-action 'none'")
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">{len(runs)} run(s), generated {_e(now)}. Missing values: {MISSING}. '
        "Best value per row highlighted where the direction is known.</p>",
        "<h2>Settings</h2>",
        _settings_html(runs, labels) if runs else '<p class="meta">No runs.</p>',
        "<h2>Metrics</h2>", _metrics_html(runs, labels),
        *(["<h2>Paired NLL differences</h2>", _paired_html(paired)] if paired is not None else []),
        "<h2>Notes</h2>", _notes_html(runs, labels) if runs else "",
        "<h2>Figures</h2>", _figures_html(runs, labels, max_image_bytes),
    ]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index = out / "index.html"
    atomic_write_text(index, page)
    return index
