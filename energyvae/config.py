"""YAML run configs with dotted ``key=value`` overrides, validated before anything runs.

A config has five sections::

    run:   {dir: runs/NAME}                 # where checkpoints, logs and figures go
    data:  {name: digits, ...}              # energyvae.data.DataConfig
    model: {name: vae, latent_dim: 8, encoder: {name: mlp}, ...}   # a model from MODELS
    train: {steps: 2000, batch_size: 128, lr: 1e-3, ...}          # TrainConfig
    eval:  {iw_samples: 100, ...}                                   # EvalConfig

Every key is checked: an unknown key, a wrong type or an out-of-range value raises one
:class:`ConfigError` naming the dotted key.

A config may start from another (an ablation is a few lines)::

    extends: ecvae_digits.yaml                  # path relative to this file
    run: {dir: runs/ecvae_digits_no_pd}         # mappings merge key by key, other values replace
    model.calibrators.0.primal_dual: false      # a dotted key sets one value, list items by index
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError
from .registry import check, parse_params

SECTIONS = ("run", "data", "model", "train", "eval")


@dataclass
class RunConfig:
    dir: str = "runs/default"


@dataclass
class TrainConfig:
    """Optimisation settings; ``lr``/``betas`` are those of the model's main ("vae") update.

    Components that bring their own optimizer (EBM priors, samplers, calibrators) take their
    own learning rates from their own config sections.
    """
    steps: int | None = None          # total optimisation steps (default 2000), or give epochs
    epochs: int | None = None
    batch_size: int = 128             # global batch, split evenly over DDP processes
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    optimizer: Literal["adam", "adamw"] = "adam"    # energyvae/train/schedules.py
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = 0             # linear warm-up of the learning rate over the first steps
    min_lr_ratio: float = 0.0         # the schedule's floor, as a share of lr
    grad_clip: float | None = None    # max global grad norm per update; None disables
    ema: float = 0.0                  # EMA decay of the weights used for evaluation; 0 disables
    ema_every: int = 4                # apply the EMA every k steps (and at eval/checkpoints; train/ema.py)
    eval_every: int = 500
    checkpoint_every: int = 500
    log_every: int = 50
    eval_batches: int | None = None   # cap on validation batches per evaluation
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    progress: bool = True
    # speed (energyvae.train.threads, energyvae.train.trainer's docstring)
    threads: int | Literal["auto"] = "auto"   # torch threads per process; auto: see train/threads.py
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"   # autocast of the losses (fp16: GradScaler)
    compile: bool = False             # torch.compile the model's loss function
    channels_last: bool = False       # memory format of conv nets' weights and image batches
    data_on_device: Literal["auto", "yes", "no"] = "auto"   # auto: on CUDA when < 1/4 of free memory

    def __post_init__(self):
        check(self.steps is None or self.epochs is None, "give one of steps and epochs, not both (an "
              "override train.steps=N or train.epochs=N replaces the other)")
        if self.epochs is None and self.steps is None:
            self.steps = 2000
        check(self.steps is None or self.steps > 0, f"steps must be > 0, got {self.steps}")
        check(self.epochs is None or self.epochs > 0, f"epochs must be > 0, got {self.epochs}")
        check(self.batch_size > 0, f"batch_size must be > 0, got {self.batch_size}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
              f"betas must be two numbers in [0, 1), got {self.betas}")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        check(0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        check(self.grad_clip is None or self.grad_clip > 0, f"grad_clip must be > 0, got {self.grad_clip}")
        check(0 <= self.ema < 1, f"ema must be in [0, 1), got {self.ema}")
        for k in ("eval_every", "checkpoint_every", "log_every", "ema_every"):
            check(getattr(self, k) > 0, f"{k} must be > 0, got {getattr(self, k)}")
        check(self.eval_batches is None or self.eval_batches > 0, "eval_batches must be > 0")
        check(self.threads == "auto" or self.threads >= 1, f"threads must be 'auto' or >= 1, got {self.threads}")


@dataclass
class EvalConfig:
    """What the end of ``energyvae train`` computes and draws."""
    iw_samples: int = 100             # K of the importance-weighted NLL bound on the test split
    iw_max_examples: int = 1000       # test examples used for the IW bound
    n_samples: int = 64               # sample grid size
    n_reconstructions: int = 16

    def __post_init__(self):
        check(self.iw_samples >= 0, f"iw_samples must be >= 0, got {self.iw_samples}")
        check(self.iw_max_examples > 0, "iw_max_examples must be > 0")
        check(self.n_samples > 0 and self.n_reconstructions > 0, "n_samples and n_reconstructions must be > 0")


@dataclass
class Config:
    run: RunConfig
    data: Any                # energyvae.data.DataConfig
    model: tuple[str, Any]   # (model name, its params dataclass)
    train: TrainConfig
    eval: EvalConfig
    raw: dict = field(default_factory=dict)   # the merged, validated mapping (saved with the run)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.dir)


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested mapping; a number
    after a list names its item (``model.calibrators.0.primal_dual=false``)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value")
        key, value = item.split("=", 1)
        key, value = key.strip(), _parse_value(value)
        _later_length_wins(raw, [key] if value is not None else [])
        _set_path(raw, key, value)
    return raw


_LENGTH_KEYS = {"train.steps": "epochs", "train.epochs": "steps"}


def _later_length_wins(base: dict, new_keys) -> None:
    """``train.steps`` and ``train.epochs`` are two ways to give one length: setting one (an
    override, or a config that ``extends`` another) removes the other, so
    ``train.steps=500`` works on a config that sets epochs."""
    for key in new_keys:
        other = _LENGTH_KEYS.get(key)
        if other is not None:
            train = base.get("train")
            if isinstance(train, dict):
                train.pop(other, None)
            base.pop(f"train.{other}", None)


def _set_path(raw: dict, key: str, value: Any) -> None:
    """raw[a][b][c] = value for the dotted key ``a.b.c`` (a number indexes a list; the index one
    past the end, as the last part of the key, appends: ``model.calibrators.1={name: ...}``)."""
    parts = key.split(".")
    if parts[0] not in SECTIONS:
        raise ConfigError(f"{key}: unknown key (top-level sections: {', '.join(SECTIONS)})")
    node = raw
    for i, p in enumerate(parts):
        if isinstance(node, list):                # a list item by index: model.calibrators.0.lr
            if p.isdigit() and int(p) == len(node) and i == len(parts) - 1:
                node.append(value)
                return
            if not (p.isdigit() and int(p) < len(node)):
                raise ConfigError(f"{key}: {p!r} is not an index of the {len(node)}-item list "
                                  f"{'.'.join(parts[:i])}")
            p = int(p)
        elif not isinstance(node, dict):
            raise ConfigError(f"{key}: {parts[i - 1]!r} is not a section")
        if i == len(parts) - 1:
            node[p] = value
        else:
            node = node.setdefault(p, {}) if isinstance(node, dict) else node[p]


SHIPPED_DIR = Path(__file__).resolve().parent / "configs"


def shipped_configs() -> dict[str, str]:
    """The configs inside the package (``energyvae configs``): name -> its first comment line."""
    out = {}
    for f in sorted(SHIPPED_DIR.glob("*.yaml")):
        first = next((ln for ln in f.read_text().splitlines() if ln.strip()), "")
        out[f.stem] = first.lstrip("# ").strip() if first.startswith("#") else ""
    return out


def resolve_config_path(path: str | Path) -> Path:
    """``path`` itself when it is a file (or ``path.yaml``: a local copy wins); else, for a
    relative ``NAME`` / ``NAME.yaml`` / ``configs/NAME.yaml``, the shipped config of that name,
    so a pip user runs ``energyvae train --config digits_vae`` from any folder."""
    p = Path(path)
    if p.is_file():
        return p
    if p.suffix not in (".yaml", ".yml") and p.with_name(p.name + ".yaml").is_file():
        return p.with_name(p.name + ".yaml")       # a local copy wins over the shipped config
    name = p.name if p.suffix in (".yaml", ".yml") else p.name + ".yaml"
    bare = not p.is_absolute() and (p.parent == Path(".") or p.parent == Path("configs"))
    if bare and (SHIPPED_DIR / name).is_file():
        return SHIPPED_DIR / name
    hint = " (nor a shipped config: `energyvae configs` lists them)" if bare else ""
    raise ConfigError(f"config file not found: {path}{hint}")


def read_yaml(path: str | Path, _chain: tuple = ()) -> dict:
    path = resolve_config_path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    base = raw.pop("extends", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: extends: expected a file name, got {base!r}")
        chain = (*_chain, path.resolve())
        base_path = (path.parent / base).resolve()
        if base_path in chain:
            raise ConfigError(f"{path}: extends: {base} extends itself (a cycle)")
        base_raw = read_yaml(base_path, chain)
        train = raw.get("train")
        _later_length_wins(base_raw, [k for k in raw if k in _LENGTH_KEYS]
                           + [f"train.{k}" for k in (train if isinstance(train, dict) else {})
                              if k in ("steps", "epochs")])
        raw = _merge(base_raw, raw)
    for key in [k for k in raw if "." in str(k)]:   # dotted keys set single values, after the merge
        _set_path(raw, key, raw.pop(key))
    return raw


def _merge(base: dict, top: dict) -> dict:
    """``top`` over ``base``: mappings merge key by key, everything else is replaced."""
    out = copy.deepcopy(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def build_config(raw: dict) -> Config:
    """Validate a nested mapping into a :class:`Config`."""
    from .data import DataConfig
    from .models import MODELS

    unknown = set(raw) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]}: unknown key (top-level sections: {', '.join(SECTIONS)})")
    model_spec = raw.get("model") or {}
    if not isinstance(model_spec, dict):
        raise ConfigError(f"model: expected a mapping, got {model_spec!r}")
    model_spec = dict(model_spec)
    model_spec.setdefault("name", "vae")
    cfg = Config(
        run=parse_params(RunConfig, raw.get("run"), "run"),
        data=parse_params(DataConfig, raw.get("data"), "data"),
        model=MODELS.parse(model_spec, "model"),
        train=parse_params(TrainConfig, raw.get("train"), "train"),
        eval=parse_params(EvalConfig, raw.get("eval"), "eval"),
    )
    cfg.raw = {
        "run": dataclasses.asdict(cfg.run),
        "data": dataclasses.asdict(cfg.data),
        "model": {"name": cfg.model[0], **dataclasses.asdict(cfg.model[1])},
        "train": dataclasses.asdict(cfg.train),
        "eval": dataclasses.asdict(cfg.eval),
    }
    return cfg


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    raw = read_yaml(path) if path is not None else {}
    return build_config(apply_overrides(raw, list(overrides)))


def dump_config(cfg: Config) -> str:
    def plain(o):
        if isinstance(o, dict):
            return {k: plain(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [plain(v) for v in o]
        return o
    return yaml.safe_dump(plain(cfg.raw), sort_keys=False)
