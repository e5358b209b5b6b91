"""Metric names and values: flattening nested metrics (and telling info keys from metrics),
each metric's direction (lower / higher is better), number formatting and the Markdown table."""
from __future__ import annotations

import math
import numbers
import re
from typing import Any, Mapping


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


def _plain(v) -> str:
    """A setting as short text: floats with ``:g`` (``0.001``, ``1``), lists in brackets."""
    if isinstance(v, float) and math.isfinite(v):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_plain(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k}: {_plain(x)}" for k, x in v.items()) + "}"
    return format_value(v)


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
