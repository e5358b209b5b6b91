"""`energyvae evaluate` and `energyvae report` end to end on tiny digits runs."""
import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
TINY = ["model.latent_dim=3", "model.encoder.hidden=[16]", "model.decoder.hidden=[16]",
        "train.batch_size=32", "train.progress=false", "train.steps=40", "train.eval_every=20",
        "train.checkpoint_every=20", "eval.iw_samples=0"]


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "energyvae", *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT, env=env)


def test_evaluate_and_report(tmp_path):
    env = {**os.environ, "ENERGYVAE_CACHE": str(tmp_path / "cache")}
    runs = []
    for name, extra, bpd_range in (("bern", ["data.binarize=true"], (0.05, 1.5)),   # bits per binary pixel
                                   ("gauss", ["model.reconstruction.name=gaussian",
                                              "data.dequantize=uniform"], (0.5, 20))):
        run = tmp_path / name
        res = cli("train", "--config", "configs/digits_vae.yaml", *TINY, *extra, f"run.dir={run}", env=env)
        assert res.returncode == 0, res.stderr[-2000:]
        res = cli("evaluate", run, "--n", 150, "--iw-samples", 5, "--nll-examples", 40, env=env)
        assert res.returncode == 0, res.stderr[-2000:]
        for word in ("fid_gen", "fid_rec", "kid", "precision", "recall", "is_gen", "nll",
                     "bits_per_dim", "sec_per_step", "sec_per_image", "energyvae-classifier",
                     "hole_fraction", "log_q_agg_gap"):
            assert word in res.stdout, word
        out = json.loads((run / "evaluation" / "metrics.json").read_text())
        assert out["reference"] == {"split": "test", "n": 150}
        assert out["features"]["name"] == "energyvae-classifier" and out["n_samples"] == 150
        assert bpd_range[0] < out["metrics"]["bits_per_dim"] < bpd_range[1]
        assert out["metrics"]["fid_gen"] > 0
        assert 0 <= out["metrics"]["hole_fraction"] <= 1
        for png in ("variance_map", "residuals", "spectra", "latent_walk", "samples", "reconstructions"):
            Image.open(run / "evaluation" / f"{png}.png").verify()
        runs.append(run)
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1     # trained once, cached
    res = cli("report", *runs, "--out", tmp_path / "report")
    assert res.returncode == 0, res.stderr[-2000:]
    html = (tmp_path / "report" / "index.html").read_text()
    assert "bern" in html and "gauss" in html and "fid_gen" in html and "data:image/png;base64" in html
    assert "http://" not in html and "https://" not in html


def test_evaluate_bad_input(tmp_path):
    res = cli("evaluate", tmp_path / "nothing")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "not a run folder" in res.stderr
    res = cli("report", tmp_path / "nothing", "--out", tmp_path / "r")
    assert res.returncode == 2 and "not a run folder" in res.stderr


def test_evaluate_mse_is_the_mean_per_pixel_reconstruction_error(tmp_path):
    """``mse``: per image mean over pixels of (x_rec - x)^2 on [0, 1] images, then the mean over
    images; checked against numpy on the same images, decoded at the posterior mean."""
    import numpy as np
    import torch

    from energyvae.commands.evaluate import evaluate_run
    from energyvae.runs import load_run

    run = tmp_path / "run"
    res = cli("train", "--config", "configs/digits_vae.yaml", *TINY, f"run.dir={run}")
    assert res.returncode == 0, res.stderr[-2000:]
    out = evaluate_run(run, metrics=("mse",), n=50, progress=False)["metrics"]
    _, data, model = load_run(run)
    x = data.test.x[:50].numpy().astype(np.float64) / 255
    with torch.no_grad():
        rec = data.preprocess.to_unit(model.reconstruct(data.preprocess(data.test.x[:50]))).double().numpy()
    per_image = ((rec - x) ** 2).reshape(50, -1).mean(1)
    assert abs(out["mse"] - per_image.mean()) < 1e-6
    assert abs(out["mse_stderr"] - per_image.std(ddof=1) / np.sqrt(50)) < 1e-6
    assert set(out) == {"mse", "mse_stderr"}
