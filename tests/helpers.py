"""Shared pieces of the model tests: tiny configs, a fit that records the calibrators' start,
weight equality, the kill-and-resume check, the --mcmc sampling check and a NaN-poisoned loss."""
from __future__ import annotations

import itertools
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


# -- shared by several test modules (moved from test_trainer, test_ebm_prior, test_cli) --

def make_cfg(run_dir, **train):
    t = {"steps": 20, "batch_size": 32, "eval_every": 5, "checkpoint_every": 5, "log_every": 5,
         "progress": False, "ema": 0.9, **train}
    return build_config({
        "run": {"dir": str(run_dir)},
        "data": {"name": "digits", "binarize": True},      # dynamic binarization uses the RNG
        "model": {"latent_dim": 3, "encoder": {"name": "mlp", "hidden": [16]},
                  "decoder": {"name": "mlp", "hidden": [16]},
                  "reconstruction": {"name": "bernoulli"}},
        "train": t,
    })


def run(cfg, resume=False):
    data, model = prepare(cfg)
    trainer = Trainer(cfg, model, data, resume=resume)
    trainer.fit()
    return trainer


def grbm_moments(e):
    """Exact mean and covariance of a GRBM: p(z) = sum_h pi_h N(mu + W h, diag sigma^2) with
    ln pi_h = b^T h + sum_i ((W h)_i^2 + 2 mu_i (W h)_i) / (2 sigma_i^2) - const (complete the
    square in z of exp(-E(z, h)), as in ais.grbm_exact_log_partition)."""
    W, b, mu, s = (t.detach().double() for t in (e.W, e.b, e.mu, e.sigma**2))
    h = torch.tensor(list(itertools.product([0.0, 1.0], repeat=W.shape[1])), dtype=torch.float64)
    wh = h @ W.T
    pi = torch.softmax(h @ b + ((wh**2 + 2 * mu * wh) / (2 * s)).sum(1), 0)
    c = mu + wh
    mean = pi @ c
    cov = torch.diag(s) + (pi[:, None] * c).T @ c - torch.outer(mean, mean)
    return mean, cov


TINY = ["model.latent_dim=3", "model.encoder.hidden=[16]", "model.decoder.hidden=[16]",
        "train.batch_size=32", "train.progress=false", "eval.iw_samples=10", "eval.iw_max_examples=50"]


def cli(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "energyvae", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


class SyncCounter:
    """Counts the Tensor methods that copy a value to the host (each one a synchronisation on CUDA)."""
    NAMES = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__")

    def __init__(self, monkeypatch):
        self.calls = []
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)

            def counted(t, *a, _name=name, _orig=original, **k):
                self.calls.append(_name)
                return _orig(t, *a, **k)
            monkeypatch.setattr(torch.Tensor, name, counted)
