"""Paired per-image NLL differences between runs evaluated on the same test examples
(:func:`paired_nll_comparisons`), with the reasons a pair is refused."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping
from .summary import PER_IMAGE_NLL, RunSummary


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
    from ..paired import nats_to_bits_per_dim, paired_difference
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
