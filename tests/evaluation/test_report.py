"""The offline HTML comparison report and the Markdown metrics table."""
import base64
import io
import json
import re

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from energyvae.evaluation.report import (
    build_report,
    flatten_metrics,
    format_value,
    load_run,
    metric_direction,
    metrics_markdown_table,
)
from energyvae.viz import save_image_grid


def _config(name, latent_dim, steps, recon="gaussian"):
    return {"run": {"dir": f"runs/{name}"},
            "data": {"name": "digits", "scale": "01"},
            "model": {"name": "vae", "latent_dim": latent_dim,
                      "encoder": {"name": "conv", "channels": [32, 64]},
                      "decoder": {"name": "conv", "channels": [32, 64]},
                      "posterior": {"name": "gaussian"}, "prior": {"name": "normal"},
                      "reconstruction": {"name": recon, "beta": 1.0},
                      "kl_weight": 1.0, "calibrators": []},
            "train": {"steps": steps, "batch_size": 128, "lr": 1e-3, "seed": 0}}


def _make_run(root, name, *, fid, loss, latent_dim=8, evaluation=True, figures=("samples",),
              features="inception-v3", layout="flat"):
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(_config(name, latent_dim, 1000)))
    metrics = {"test": {"loss": loss, "recon": loss - 1.0, "kl": 1.0, "elbo": -loss},
               "n_test": 180,
               "iw": {"k": 100, "examples": 180, "log_likelihood": -loss + 0.5,
                      "nll": loss - 0.5, "stderr": 0.1, "bits_per_dim": loss / 64 / 0.693},
               "seconds_to_sample": 0.01,
               "train": {"steps": 1000, "seconds": 12.5,
                         "best": {"metric": "loss", "value": loss, "step": 1000}},
               "data": {"source": "sklearn.datasets.load_digits", "sizes": {"test": 180}},
               "parameters": 73105}
    (run / "metrics.json").write_text(json.dumps(metrics))
    for fig in figures:
        save_image_grid(torch.rand(4, 1, 8, 8), run / f"{fig}.png")
    if evaluation:
        ev = run / "evaluation"
        ev.mkdir()
        if layout == "flat":    # a flat dict of metrics and info
            ev_metrics = {
                "fid_gen": fid, "fid_rec": fid / 2, "kid": {"mean": fid / 1000, "std": 0.001},
                "precision": 0.5 + fid / 1000, "recall": 0.4, "is": 2.0, "nll": loss,
                "bits_per_dim": 1.2, "sec_per_step": 0.02, "sec_per_image": 1e-4,
                "features": {"name": features, "dim": 2048}, "reference": "test split (1000)"}
        else:                   # the layout of `energyvae evaluate`
            ev_metrics = {
                "run": str(run), "checkpoint": "best", "ema": True, "seed": 0,
                "metrics": {"fid_gen": fid, "kid": fid / 1000, "kid_std": 0.001,
                            "is_gen": 2.0, "precision": 0.5 + fid / 1000, "recall": 0.4,
                            "fid_rec": fid / 2, "nll": loss, "nll_stderr": 0.2,
                            "bits_per_dim": 1.2, "sec_per_step": 0.02, "sec_per_image": 1e-4},
                "features": {"name": features, "hash": "0123456789abcdef0123",
                             "architecture": {"kind": "convnet", "width": 32},
                             "training": {"epochs": 5}, "test_accuracy": 0.975,
                             "accuracy_split": "test", "dataset": "digits"},
                "reference": {"split": "test", "n": 1000}, "n_samples": 2000,
                "likelihood": {"k": 100, "examples": 180, "split": "test", "nll": loss,
                               "nll_stderr": 0.2, "bits_per_dim": 1.2,
                               "ais": {"log_z": 1.5, "stderr": 0.01}},
                "figures": {"variance_map": str(ev / "variance_map.png")}}
        (ev / "metrics.json").write_text(json.dumps(ev_metrics))
        save_image_grid(torch.rand(6, 3, 28, 28), ev / "variance_map.png")
    return run


def _data_uris(page):
    return re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)


def test_build_report_two_runs(tmp_path):
    a = _make_run(tmp_path / "runs", "envae", fid=30.0, loss=60.0,
                  figures=("samples", "reconstructions"))
    b = _make_run(tmp_path / "runs", "vae", fid=45.0, loss=55.0, latent_dim=16,
                  layout="evaluate")
    out = build_report([a, b], tmp_path / "report", title="EnVAE vs VAE")
    assert out == tmp_path / "report" / "index.html"
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "EnVAE vs VAE" in page
    # both runs, settings and metric names
    for text in ("envae", "vae", "digits", "latent_dim", "16", "conv (channels=[32, 64])",
                 "fid_gen", "fid_rec", "kid.mean", "precision", "recall", "bits_per_dim",
                 "sec_per_step", "test.loss", "iw.nll", "train.best.loss"):
        assert text in page, text
    # feature network and reference split notes, from both layouts
    assert "inception-v3" in page and "test split (1000)" in page
    assert "inception-v3, hash 0123456789ab, architecture convnet, trained on digits, " \
           "accuracy 0.9750 (test)" in page
    assert "test split, 1000 images" in page and "likelihood.ais.log_z" in page
    assert "metrics.fid_gen" not in page and "likelihood.nll<" not in page
    # figures: embedded, decodable PNGs; run a has reconstructions, b does not
    uris = _data_uris(page)
    assert len(uris) == 2 + 1 + 2          # samples x2, reconstructions x1, variance_map x2
    for u in uris:
        Image.open(io.BytesIO(base64.b64decode(u))).verify()
    assert "vae: no reconstructions.png" in page
    assert "evaluation/variance_map" in page
    # offline: no network references at all
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower() and "<link" not in page.lower()
    # best value highlighted: lower fid for a, lower test.loss for b, higher precision for b
    row = lambda name: re.search(r'<th class="row">' + re.escape(name) + r"<.*?</tr>",  # noqa: E731
                                 page).group(0)
    assert re.search(r'class="num best"[^>]*>30\.00<', row("fid_gen"))
    assert re.search(r'class="num best"[^>]*>55\.00<', row("test.loss"))
    assert re.search(r'class="num best"[^>]*>0\.5450<', row("precision"))
    assert "best" not in row("recall")     # a tie: nothing highlighted
    assert "best" not in row("test.kl")    # direction unknown
    assert "different feature networks" in page      # the two layouts name different nets


def test_build_report_missing_files_and_escaping(tmp_path):
    good = _make_run(tmp_path, "good", fid=30.0, loss=60.0)
    evil = tmp_path / "run<script>alert('x')"
    evil.mkdir()
    (evil / "metrics.json").write_text("{not json")             # unreadable
    bare = tmp_path / "bare"                                     # config only
    bare.mkdir()
    (bare / "config.yaml").write_text(yaml.safe_dump(_config("bare", 4, 10)))
    (bare / "broken.png").write_bytes(b"not a png")
    gone = tmp_path / "does_not_exist"
    out = build_report([good, evil, bare, gone], tmp_path / "r", title="<b>title</b> & co")
    page = out.read_text(encoding="utf-8")
    assert "<script" not in page and "run&lt;script&gt;alert(&#x27;x&#x27;)" in page
    assert "<b>title</b>" not in page and "&lt;b&gt;title&lt;/b&gt; &amp; co" in page
    assert "—" in page
    assert "unreadable metrics.json" in page and "no config.yaml" in page
    assert "folder not found" in page and "no evaluation/metrics.json" in page
    assert "broken" in page and "not a PNG file" in page
    assert len(_data_uris(page)) == 2                            # good: samples, variance_map
    assert "http://" not in page and "https://" not in page


def test_build_report_edge_cases(tmp_path):
    # no runs at all, duplicate names, different feature networks, explicit names
    page = build_report([], tmp_path / "empty").read_text(encoding="utf-8")
    assert "No runs" in page
    a = _make_run(tmp_path / "x", "run", fid=10.0, loss=1.0, features="inception-v3")
    b = _make_run(tmp_path / "y", "run", fid=20.0, loss=2.0, features="dinov2")
    page = build_report([a, b], tmp_path / "dup").read_text(encoding="utf-8")
    assert "x/run" in page and "y/run" in page
    assert "different feature networks" in page
    page = build_report([a, b], tmp_path / "named", names=["first", "<script>b</script>"],
                        title="t").read_text(encoding="utf-8")
    assert "<th>first</th><th>&lt;script&gt;b&lt;/script&gt;</th>" in page
    assert "<script" not in page
    with pytest.raises(ValueError):
        build_report([a, b], tmp_path / "bad", names=["only one"])


def test_load_run_and_flatten(tmp_path):
    run = load_run(_make_run(tmp_path, "r", fid=30.0, loss=60.0))
    assert run.problems == []
    assert list(run.metrics)[:2] == ["fid_gen", "fid_rec"]       # evaluation metrics first
    assert run.metrics["kid.mean"] == pytest.approx(0.03) and run.metrics["iw.nll"] == 59.5
    assert run.metrics["train.best.loss"] == 60.0                # {"metric", "value"} dict
    assert "iw.k" not in run.metrics and "data.sizes.test" not in run.metrics
    assert run.notes["evaluation: features"] == "inception-v3, dim 2048"
    assert run.settings["latent_dim"] == 8 and run.settings["reconstruction"] == \
        "gaussian (beta=1)"
    assert set(run.figures) == {"samples", "evaluation/variance_map"}
    run = load_run(_make_run(tmp_path, "e", fid=30.0, loss=60.0, layout="evaluate"))
    assert list(run.metrics)[:6] == ["fid_gen", "fid_rec", "kid", "precision", "recall",
                                     "is_gen"]
    assert run.metrics["nll"] == 60.0 and run.metrics["test.loss"] == 60.0
    assert list(run.notes)[:2] == ["evaluation: features", "evaluation: reference"]
    assert run.notes["evaluation: likelihood.k"] == 100
    assert "evaluation: likelihood.nll" not in run.notes
    assert not any("figures" in k or k == "evaluation: run" for k in run.notes)
    notes = {}
    flat = flatten_metrics({"a": {"b": 1, "c": "text", "features": {"dim": 3}}, "d": True},
                           notes=notes)
    assert flat == {"a.b": 1} and notes == {"a.c": "text", "a.features": {"dim": 3}, "d": True}


def test_metric_direction_and_format():
    for name in ("fid_gen", "fid_rec", "kid.mean", "iw.nll", "bits_per_dim", "test.loss",
                 "sec_per_image", "train.seconds", "seconds_to_sample"):
        assert metric_direction(name) == "lower", name
    for name in ("precision", "recall", "is", "test.elbo", "psnr", "ssim",
                 "iw.log_likelihood", "is.mean"):
        assert metric_direction(name) == "higher", name
    for name in ("kid.std", "iw.stderr", "test.kl", "parameters", "train.steps", "is.std",
                 "iw.log_z_err", "fid_gen_std"):
        assert metric_direction(name) is None, name
    assert format_value(None) == "—" and format_value(73105) == "73105"
    assert format_value(65.90271) == "65.90" and format_value(9.47994) == "9.480"
    assert format_value(0.0095429) == "0.009543" and format_value(1234.567) == "1234.57"
    assert format_value(1e-5) == "1.000e-05" and format_value(float("nan")) == "nan"
    assert format_value(np.float32(0.5)) == "0.5000" and format_value(np.int64(3)) == "3"


def test_metrics_markdown_table():
    runs = {"a|b": {"fid_gen": 30.0, "test": {"loss": 2.0, "kl": 1.0}, "features": {"dim": 1}},
            "c": {"fid_gen": np.float32(40.0), "test": {"loss": 1.0}, "precision": 0.7}}
    md = metrics_markdown_table(runs)
    lines = md.strip().splitlines()
    assert lines[0] == "| metric | a\\|b | c |" and lines[1] == "|---|---:|---:|"
    assert lines[2].startswith("| fid_gen (lower) |")                 # preferred order first
    assert "| fid_gen (lower) | **30.00** | 40.00 |" in md
    assert "| test.loss (lower) | 2.000 | **1.000** |" in md
    assert "| test.kl | 1.000 | — |" in md
    assert "| precision (higher) | — | 0.7000 |" in md               # one value: no bold
    assert "features" not in md                                     # info, not a metric
    assert metrics_markdown_table({}).startswith("| metric |")
    # a whole evaluation/metrics.json of `energyvae evaluate`: the rows of its "metrics"
    md = metrics_markdown_table({"r": {"metrics": {"fid_gen": 3.0, "is_gen": 2.0},
                                       "features": {"name": "x"}, "run": "runs/r"}})
    assert "| fid_gen (lower) | 3.000 |" in md and "| is_gen (higher) | 2.000 |" in md
    assert "features" not in md and "runs/r" not in md


def test_best_is_not_marked_between_runs_of_different_units(tmp_path):
    """An energy-score run's test loss and a Bernoulli run's nats are not ranked (issue 16)."""
    a = _make_run(tmp_path, "nats", fid=10.0, loss=50.0, evaluation=False)
    b = _make_run(tmp_path, "escore", fid=12.0, loss=2.0, evaluation=False)
    c = _make_run(tmp_path, "nats2", fid=11.0, loss=40.0, evaluation=False)
    m = json.loads((b / "metrics.json").read_text())
    m["units"] = "per example; recon is the EnergyScore objective (not nats), kl in nats"
    (b / "metrics.json").write_text(json.dumps(m))
    page = (build_report([a, b], tmp_path / "mixed") and (tmp_path / "mixed" / "index.html")).read_text()
    row = re.search(r"<tr><th class=\"row\">test\.loss.*?</tr>", page, re.S).group(0)
    assert "best" not in row and "not ranked" in row
    page = (build_report([a, c], tmp_path / "same") and (tmp_path / "same" / "index.html")).read_text()
    row = re.search(r"<tr><th class=\"row\">test\.loss.*?</tr>", page, re.S).group(0)
    assert "num best" in row
