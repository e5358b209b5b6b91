"""Shared pieces of the model tests: tiny configs, a fit that records the calibrators' start,
weight equality, the kill-and-resume check, the --mcmc sampling check and a NaN-poisoned loss."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image

from energyvae.config import build_config
from energyvae.runs import load_run, prepare
from energyvae.train import LAST, Trainer, load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
TINY_TRAIN = {"steps": 6, "batch_size": 16, "eval_every": 3, "checkpoint_every": 3, "log_every": 1,
              "eval_batches": 1, "progress": False, "ema": 0.9}


def tiny_vae_cfg(run_dir, calibrators, prior=None, **train):
    """A 3-D MLP VAE on binarised digits (binarization draws from the global RNG)."""
    model = {"latent_dim": 3, "encoder": {"name": "mlp", "hidden": [16]},
             "decoder": {"name": "mlp", "hidden": [16]}, "reconstruction": {"name": "bernoulli"},
             "calibrators": calibrators}
    if prior:
        model["prior"] = prior
    return build_config({"run": {"dir": str(run_dir)}, "data": {"name": "digits", "binarize": True},
                         "model": model, "train": {**TINY_TRAIN, **train}})


def fit_recording_calibrators(cfg):
    """Train ``cfg``; return the trainer and the calibrators' initial parameters."""
    data, model = prepare(cfg)
    trainer = Trainer(cfg, model, data)
    start = [p.detach().clone() for p in model.calibrators.parameters()]
    trainer.fit()
    return trainer, start


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Every tensor of ``a``'s state dict equals ``b``'s bit for bit (b may hold more)."""
    sd = b.state_dict()
    for k, v in a.state_dict().items():
        assert torch.equal(v, sd[k]), k


def assert_resume_exact(make_cfg, ref_dir: Path, run_dir: Path, kill_training_at) -> None:
    """A run of ``make_cfg(run_dir)`` killed at step 3 and resumed ends with ``ref_dir``'s weights."""
    cfg = make_cfg(run_dir)
    data, model = prepare(cfg)
    kill_training_at(3, lambda: Trainer(cfg, model, data).fit())
    data, model = prepare(cfg)
    resumed = Trainer(cfg, model, data, resume=True)
    resumed.fit()
    ref = load_checkpoint(ref_dir / "checkpoints" / LAST)["model"]
    for k, v in resumed.model.state_dict().items():
        assert torch.equal(v, ref[k]), k


def assert_mcmc_sampling(run_dir: Path, tmp_path: Path) -> None:
    """``sample(mcmc=3)`` refines the samples of the trained 8x8 run and ``energyvae sample --mcmc``
    writes a PNG."""
    _, _, model = load_run(run_dir)
    torch.manual_seed(0)
    plain = model.sample(8)
    torch.manual_seed(0)
    refined = model.sample(8, mcmc=3)
    assert plain.shape == refined.shape == (8, 1, 8, 8) and not torch.equal(plain, refined)
    out = tmp_path / "mcmc.png"
    res = subprocess.run([sys.executable, "-m", "energyvae", "sample", str(run_dir), "--n", "8", "--mcmc", "3",
                          "--out", str(out)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    Image.open(out).verify()


def poison_loss(monkeypatch, model, at_step=None) -> None:
    """Make ``model``'s loss NaN at training step ``at_step`` (0-based; None: at every step)."""
    forward = type(model).forward

    def poisoned(self, update, x, state):
        loss, logs = forward(self, update, x, state)
        return (loss * float("nan") if at_step is None or state["step"] == at_step else loss), logs
    monkeypatch.setattr(type(model), "forward", poisoned)

