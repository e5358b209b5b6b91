"""DDP with two gloo processes (torchrun) gives the same parameters as one process on the
same global batch. A deterministic posterior makes the loss a function of the batch alone."""
import subprocess
import sys

import pytest
import torch

from energyvae.train import LAST, load_checkpoint

OVERRIDES = ["data.name=digits", "model.latent_dim=3", "model.posterior.name=delta",
             "model.encoder.hidden=[16]", "model.decoder.hidden=[16]",
             "model.reconstruction.name=gaussian", "model.reconstruction.scale=fixed",
             "train.steps=12", "train.batch_size=32", "train.checkpoint_every=6",
             "train.eval_every=6", "train.progress=false", "train.ema=0.9", "train.grad_clip=5.0",
             "eval.iw_samples=0"]


def train(run_dir, nproc):
    launcher = [sys.executable, "-m", "energyvae"] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        "-m", "energyvae"]
    cmd = [*launcher, "train", *OVERRIDES, f"run.dir={run_dir}", "--config", str(EMPTY)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    return load_checkpoint(run_dir / "checkpoints" / LAST)


@pytest.mark.slow
def test_two_gloo_processes_match_one(tmp_path):
    global EMPTY
    EMPTY = tmp_path / "empty.yaml"
    EMPTY.write_text("{}\n")
    one = train(tmp_path / "one", 1)
    two = train(tmp_path / "two", 2)
    assert two["info"]["world_size"] == 2 and len(two["rng"]["ranks"]) == 2
    assert one["step"] == two["step"] == 12
    for k, v in one["model"].items():
        assert torch.allclose(v, two["model"][k], atol=1e-5, rtol=1e-4), k
    moved = sum((v - w).abs().sum() for v, w in zip(one["model"].values(), one["ema"].values()))
    assert moved > 0                       # training changed the weights (EMA lags behind)
