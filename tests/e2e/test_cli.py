"""CLI smoke tests: train/sample/reconstruct, one-line errors, kill -9 then --resume."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

from energyvae.train import LAST, load_checkpoint
from helpers import ROOT, TINY, cli





def test_train_sample_reconstruct(tmp_path):
    run = tmp_path / "run"
    res = cli("train", "--config", "configs/digits_vae.yaml", *TINY, "train.steps=30",
              "train.eval_every=10", "train.checkpoint_every=10", f"run.dir={run}")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "run folder" in res.stdout and "test NLL" in res.stdout
    for name in ("samples.png", "reconstructions.png", "loss_curves.png"):
        with Image.open(run / name) as im:
            assert im.size[0] > 0
    import json
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["iw"]["nll"] > 0 and "elbo" in metrics["test"]
    res = cli("sample", run, "--n", 16, "--out", tmp_path / "s.png")
    assert res.returncode == 0, res.stderr[-2000:]
    Image.open(tmp_path / "s.png").verify()
    res = cli("reconstruct", run, "--n", 8, "--out", tmp_path / "r.png")
    assert res.returncode == 0, res.stderr[-2000:]
    Image.open(tmp_path / "r.png").verify()


@pytest.mark.parametrize("args, message", [
    (["train.stpes=3"], "train.stpes: unknown key"),
    (["train.lr=0"], "lr must be > 0"),
    (["model.reconstruction.name=nope"], "unknown reconstruction 'nope'"),
])
def test_bad_config_is_one_line(tmp_path, args, message):
    res = cli("train", "--config", "configs/digits_vae.yaml", *args, f"run.dir={tmp_path}/r")
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and message in res.stderr, res.stderr


def test_truncated_idx_is_one_line(tmp_path):
    import gzip
    import struct
    d = tmp_path / "idx"
    d.mkdir()
    header = struct.pack(">IIII", 0x00000803, 100, 28, 28)
    with gzip.open(d / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(header + bytes(28 * 28 * 3))                  # promises 100 images, holds 3
    res = cli("train", "--config", "configs/fashion_vae.yaml", "data.name=mnist-idx",
              "--data-dir", d, f"run.dir={tmp_path}/r")
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "train-images" in res.stderr, res.stderr


def test_missing_run_and_sample_errors(tmp_path):
    res = cli("sample", tmp_path / "nothing")
    assert res.returncode == 2 and "not a run folder" in res.stderr


@pytest.mark.slow
def test_kill_9_then_resume_matches_uninterrupted(tmp_path):
    common = ["--config", "configs/digits_vae.yaml", *TINY, "train.steps=400",
              "train.checkpoint_every=20", "train.eval_every=100", "eval.iw_samples=0"]
    ref = cli("train", *common, f"run.dir={tmp_path}/ref")
    assert ref.returncode == 0, ref.stderr[-2000:]
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "energyvae", "train", *common, f"run.dir={run}"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = run / "checkpoints" / LAST
    deadline = time.time() + 120
    while time.time() < deadline and not (ckpt.exists() and load_checkpoint(ckpt)["step"] >= 60):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(ckpt)["step"]
    assert 0 < killed_at < 400
    res = cli("train", "--resume", run)
    assert res.returncode == 0, res.stderr[-2000:]
    a = load_checkpoint(tmp_path / "ref" / "checkpoints" / LAST)
    b = load_checkpoint(ckpt)
    assert b["step"] == 400
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
