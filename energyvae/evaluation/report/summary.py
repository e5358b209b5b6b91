"""Reading one run folder for the report: its settings, metrics and evaluation flattened into a
:class:`RunSummary` (missing or unreadable files become notes, never errors)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from .tables import _evaluation, _is_number, _order_key, _plain, flatten_metrics


PER_IMAGE_NLL = "evaluation/per_image_nll.json"


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
