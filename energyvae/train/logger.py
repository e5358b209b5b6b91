"""Metrics to ``metrics.jsonl`` (one JSON object per line) and TensorBoard; rank 0 only."""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

from ..atomic import atomic_write_text


def _records(path: Path) -> list[dict]:
    """The JSON records of a metrics file, read tolerantly: a line that does not parse (what a
    kill in the middle of a write leaves as the last line, or damaged bytes) is dropped with a
    warning instead of making the run unreadable or unresumable."""
    out, bad = [], 0
    for ln in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        if not ln.strip():
            continue
        try:
            rec = json.loads(ln)
        except ValueError:
            bad += 1
            continue
        if isinstance(rec, dict):
            out.append(rec)
        else:
            bad += 1
    if bad:
        warnings.warn(f"{path}: dropped {bad} unreadable line(s) (a torn write?)", stacklevel=3)
    return out


def _plain(v):
    if hasattr(v, "item"):
        v = v.item()
    return v if not isinstance(v, float) or math.isfinite(v) else str(v)


class MetricsLogger:
    def __init__(self, run_dir: Path, start_step: int = 0, tensorboard: bool = True):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if start_step > 0 and self.path.exists():   # drop lines written after the checkpoint
            keep = [rec for rec in _records(self.path) if _step(rec) <= start_step]
            atomic_write_text(self.path, "".join(json.dumps(rec) + "\n" for rec in keep))
        elif start_step == 0 and self.path.exists():
            self.path.unlink()
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=start_step or None)
            except ImportError:
                self.tb = None

    def log(self, step: int, split: str, values: dict) -> None:
        rec = {"step": step, "split": split, **{k: _plain(v) for k, v in values.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.tb is not None:
            for k, v in rec.items():
                if k not in ("step", "split") and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{split}/{k}", v, step)

    def images(self, step: int, tag: str, images) -> None:
        """A grid of ``[N, C, H, W]`` images in [0, 1] on TensorBoard (samples, reconstructions)."""
        if self.tb is not None:
            self.tb.add_images(tag, images.clamp(0, 1).float().cpu(), step)

    def hparams(self, params: dict, metrics: dict) -> None:
        """The run's hyper-parameters beside its final metrics (TensorBoard's HPARAMS tab)."""
        if self.tb is not None:
            plain = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in params.items()}
            self.tb.add_hparams(plain, {f"hparam/{k}": v for k, v in metrics.items()
                                        if isinstance(v, (int, float)) and math.isfinite(v)}, run_name=".")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return _records(path)


def _step(rec: dict) -> float:
    step = rec.get("step", 0)
    return step if isinstance(step, (int, float)) and not isinstance(step, bool) else float("inf")
