"""Zero-shot restoration (paper 001 §4.3): operators, range-null Langevin restoration, the CLI."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from energyvae.cli import main
from energyvae.config import parse_params
from energyvae.data import DataConfig, load_data
from energyvae.imaging.quality import consistency
from energyvae.models import build_model
from energyvae.models.vae import VAEParams
from energyvae.restoration import (OPERATORS, Inpaint, RestorationError, langevin_latents, pinv_baseline,
                                   random_mask, restore)

ROOT = Path(__file__).resolve().parents[2]
SHAPE = (3, 8, 8)
CASES = [("colorize", {}), ("inpaint", {"mask": "box"}), ("inpaint", {"mask": "random", "fraction": 0.3}),
         ("sr2", {}), ("sr4", {})]
FAST = {"steps": 10, "step_size": 1e-2, "noise_scale": 0.1}


class QuadraticEnergy(nn.Module):
    """Stand-in for the EC-VAE calibrator: its ``name``, ``data_energy`` and chain settings."""
    name = "ec"
    steps, step_size, noise = 20, 1e-2, 0.01

    def data_energy(self, x):
        return 50 * (x - 0.5).pow(2).flatten(1).sum(1)


def tiny_model(shape=SHAPE, ebm=False):
    torch.manual_seed(0)
    params = parse_params(VAEParams, {"latent_dim": 4, "encoder": {"hidden": [16]},
                                      "decoder": {"hidden": [16]}}, "model")
    model = build_model(("vae", params), shape, "image", (0.0, 1.0)).eval()
    if ebm:
        model.calibrators.append(QuadraticEnergy())
    return model


def op_of(task, opts, shape=SHAPE):
    return OPERATORS[task](shape, **opts)


@pytest.mark.parametrize("task, opts", CASES)
def test_pseudo_inverse_identities(task, opts):
    op = op_of(task, opts)
    x = torch.randn(5, *SHAPE, dtype=torch.float64)
    y = torch.randn_like(op.A(x))
    torch.testing.assert_close(op.A(op.pinv(op.A(x))), op.A(x))          # A A+ A = A
    torch.testing.assert_close(op.pinv(op.A(op.pinv(y))), op.pinv(y))    # A+ A A+ = A+
    assert op.A(op.project_null(x)).abs().max() < 1e-12
    assert op.project_null(x).abs().max() > 0.1                          # A is not invertible


def test_inpaint_with_any_mask_and_shipped_masks():
    mask = torch.rand(2, 1, 8, 8) > 0.5                                  # one mask per image
    op = Inpaint(mask)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(op.A(op.pinv(op.A(x))), op.A(x))
    assert torch.equal(op.A(x) == 0, (~mask).expand(2, 3, 8, 8))
    m = random_mask(10, 10, 0.3, seed=1)
    assert (~m).sum() == 30 and torch.equal(m, random_mask(10, 10, 0.3, seed=1))
    assert not torch.equal(m, random_mask(10, 10, 0.3, seed=2))
    box = op_of("inpaint", {"mask": "box", "fraction": 0.25}).mask
    assert (~box).sum() == 16 and not box[4, 4] and box[0, 0]


@pytest.mark.parametrize("task, opts, shape, message", [
    ("colorize", {}, (1, 8, 8), "needs RGB"),
    ("sr4", {}, (1, 10, 10), "not divisible by 4"),
    ("sr2", {}, (2,), "needs images"),
    ("inpaint", {"mask": "circle"}, (1, 8, 8), "mask must be"),
    ("inpaint", {"fraction": 1.5}, (1, 8, 8), "fraction must be"),
])
def test_impossible_inputs_raise(task, opts, shape, message):
    with pytest.raises(RestorationError, match=message):
        op_of(task, opts, shape)


@pytest.mark.parametrize("use_ebm", [False, True])
@pytest.mark.parametrize("task, opts", CASES)
def test_restored_image_is_consistent(task, opts, use_ebm):
    model, op = tiny_model(ebm=True), op_of(task, opts)
    x = torch.rand(3, *SHAPE)
    y = op.A(x)
    x_hat = restore(model, y, op, use_ebm=use_ebm, seed=0, **FAST)
    assert x_hat.shape == x.shape
    torch.testing.assert_close(op.A(x_hat), y, atol=1e-6, rtol=0)
    torch.testing.assert_close(x_hat, restore(model, y, op, use_ebm=use_ebm, seed=0, **FAST))  # seeded
    assert not torch.equal(x_hat, restore(model, y, op, use_ebm=use_ebm, seed=1, **FAST))
    torch.manual_seed(0)
    z = langevin_latents(model, y, op, use_ebm=use_ebm, **FAST)
    decoded = model.reconstruction.mean(model.decode(z))
    assert consistency(op.A, x_hat, x).max() < 1e-6                       # range-null answer
    assert consistency(op.A, decoded, x).min() > 1e-3                     # decoder-only answer


def test_ebm_term_changes_the_answer_and_pinv_baseline():
    model, op = tiny_model(ebm=True), op_of("inpaint", {})
    y = op.A(torch.rand(2, *SHAPE))
    with_ebm, without = (restore(model, y, op, use_ebm=u, seed=0, **FAST) for u in (True, False))
    assert (with_ebm - without).abs().max() > 1e-3
    # without an `ec` calibrator the EBM term is absent: use_ebm has no effect
    plain = tiny_model()
    torch.testing.assert_close(restore(plain, y, op, use_ebm=True, seed=0, **FAST),
                               restore(plain, y, op, use_ebm=False, seed=0, **FAST))
    # the energy pulls toward 0.5 in the missing region
    hole = ~op.mask
    assert ((with_ebm - 0.5)[..., hole].abs().mean() < (without - 0.5)[..., hole].abs().mean())
    torch.testing.assert_close(pinv_baseline(op, y), y)                   # inpainting: A+ = A


@pytest.mark.parametrize("mode", ["data", "latent"])
def test_both_ebm_modes_pull_toward_the_energy_minimum(mode):
    model, op = tiny_model(ebm=True), op_of("inpaint", {})
    y = op.A(torch.rand(2, *SHAPE))
    with_ebm = restore(model, y, op, seed=0, ebm_mode=mode, **FAST)
    without = restore(model, y, op, use_ebm=False, seed=0, **FAST)
    hole = ~op.mask
    factor = 0.5 if mode == "data" else 1.0           # the latent chain acts through a tiny decoder
    assert (with_ebm - 0.5)[..., hole].abs().mean() < factor * (without - 0.5)[..., hole].abs().mean()
    torch.testing.assert_close(op.A(with_ebm), y, atol=1e-6, rtol=0)


@pytest.mark.parametrize("task, opts", [("inpaint", {"mask": "box"}), ("sr2", {}), ("colorize", {})])
def test_consistent_chain_samples_the_energy_at_its_training_temperature(task, opts):
    """Quadratic E(x) = ||x - m||^2 / (2 v), chain of step s and noise c (the calibrator's): on
    {A x = y} the law is exp(-beta E / c^2) restricted, i.e. P x ~ N(P m, (v c^2 / beta) P). The
    Euler-Maruyama chain's exact stationary variance along P is v c^2 / (beta (1 - beta s / (4 v))).
    5000 chains, 200 steps (contraction 0.95 per step): mean within 0.05 c, variance within 3 %."""
    from energyvae.restoration.zero_shot import consistent_langevin

    torch.manual_seed(0)
    v, s, c, beta = 1.0, 0.1, 0.05, 2.0
    shape = (3, 4, 4)
    op = op_of(task, opts, shape)
    m = torch.rand(shape, dtype=torch.float64)
    x0 = torch.rand(5000, *shape, dtype=torch.float64)
    x = consistent_langevin(lambda t: (t - m).pow(2).flatten(1).sum(1) / (2 * v), x0, op,
                            steps=200, step_size=s, noise=c, weight=beta)
    torch.testing.assert_close(op.A(x), op.A(x0), atol=1e-10, rtol=0)    # A x = y throughout
    free = op.project_null(x - m)                                         # P (x - m), mean 0
    assert free.mean(0).abs().max() < 0.05 * c
    # the variance of a coordinate-free projection: E ||P(x - m)||^2 = rank(P) * sigma^2
    rank = float(op.project_null(torch.eye(48, dtype=torch.float64).view(48, *shape)).flatten(1).pow(2).sum())
    var = free.flatten(1).pow(2).sum(1).mean() / rank
    expected = v * c**2 / (beta * (1 - beta * s / (4 * v)))
    assert abs(var / expected - 1) < 0.03, (float(var), expected)


def test_restore_rejects_bad_settings():
    model, op = tiny_model(ebm=True), op_of("inpaint", {})
    y = op.A(torch.rand(1, *SHAPE))
    for bad in ({"step_size": float("nan")}, {"ebm_weight": float("inf")}, {"ebm_mode": "x"}, {"ebm_steps": -1},
                {"noise_scale": 0.0}):
        with pytest.raises(RestorationError):
            restore(model, y, op, **{**FAST, **bad})


def test_with_the_ec_calibrator():
    torch.manual_seed(0)
    ec = {"name": "ec", "energy": {"name": "resnet", "channels": [8], "blocks": 1, "head": 8}}
    params = parse_params(VAEParams, {"latent_dim": 4, "encoder": {"hidden": [16]},
                                      "decoder": {"hidden": [16]}, "calibrators": [ec]}, "model")
    model = build_model(("vae", params), SHAPE, "image", (0.0, 1.0)).eval()
    op = op_of("sr2", {})
    y = op.A(torch.rand(2, *SHAPE))
    with_ebm, without = (restore(model, y, op, use_ebm=u, seed=0, **FAST) for u in (True, False))
    torch.testing.assert_close(op.A(with_ebm), y, atol=1e-6, rtol=0)
    assert torch.isfinite(with_ebm).all() and (with_ebm - without).abs().max() > 1e-4


# ---------------------------------------------------------------------------------------- CLI
def cli(*args):
    return subprocess.run([sys.executable, "-m", "energyvae", *map(str, args)], capture_output=True,
                          text=True, timeout=240, cwd=ROOT)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("restore") / "run"
    res = cli("train", "--config", "configs/digits_conv_vae.yaml", "model.encoder.channels=[8,8]",
              "model.decoder.channels=[8,8]", "train.steps=5", "train.eval_every=5",
              "train.checkpoint_every=5", "train.progress=false", "eval.iw_samples=0",
              "eval.n_samples=4", "eval.n_reconstructions=4", f"run.dir={run}")
    assert res.returncode == 0, res.stderr[-2000:]
    return run


@pytest.mark.e2e
def test_restore_cli_end_to_end(digits_run, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(src / "a.png")
    Image.fromarray(rng.integers(0, 256, (16, 12, 3), dtype=np.uint8)).save(src / "b.png")  # RGB, resized
    for task in ("inpaint", "sr2"):
        out = tmp_path / task
        res = cli("restore", digits_run, "--task", task, "--input", src, "--out", out, "--steps", 5)
        assert res.returncode == 0, res.stderr[-2000:]
        assert "resized to 8x8" in res.stdout and "converted to grayscale" in res.stdout
        for stem in ("a", "b"):
            with Image.open(out / f"{stem}.png") as im:
                assert im.size == (8, 8)                                  # the restored image alone
            with Image.open(out / f"{stem}_compare.png") as im:
                assert im.size[0] > 2 * im.size[1]                        # three columns side by side
        metrics = json.loads((out / "metrics.json").read_text())
        assert set(metrics["images"]) == {"a.png", "b.png"} and metrics["task"] == task
        assert all(np.isfinite(v) for v in metrics["mean"].values())
    assert json.loads((tmp_path / "inpaint" / "metrics.json").read_text())["mean"]["consistency"] == 0


@pytest.mark.e2e
def test_restore_cli_colorizes_with_an_rgb_run(tmp_path):
    """Colorization end to end on the coloured digits (digits-rgb). A x_hat = y holds exactly in
    model space (test_restored_image_is_consistent); the CLI's metric is on images clamped to
    [0, 1], where a channel pushed past 0 or 1 moves the gray value slightly."""
    run = tmp_path / "rgb"
    res = cli("train", "--config", "configs/digits_conv_vae.yaml", "data.name=digits-rgb", "model.encoder.channels=[8,8]",
              "model.decoder.channels=[8,8]", "train.steps=5", "train.eval_every=5", "train.checkpoint_every=5",
              "train.progress=false", "eval.iw_samples=0", "eval.n_samples=4", "eval.n_reconstructions=4",
              f"run.dir={run}")
    assert res.returncode == 0, res.stderr[-2000:]
    src = tmp_path / "in"
    src.mkdir()
    rgb = load_data(DataConfig(name="digits-rgb")).test.x[:2].permute(0, 2, 3, 1).numpy()
    for i, im in enumerate(rgb):
        Image.fromarray(im).save(src / f"{i}.png")
    out = tmp_path / "out"
    res = cli("restore", run, "--task", "colorize", "--input", src, "--out", out, "--steps", 5)
    assert res.returncode == 0, res.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["images"]) == {"0.png", "1.png"} and metrics["mean"]["consistency"] < 0.05
    with Image.open(out / "0.png") as im:
        assert im.mode == "RGB" and im.size == (8, 8)


@pytest.mark.parametrize("task, name, message", [
    ("sr2", "missing.png", "no such file"),
    ("sr2", "bad.png", "not a readable image"),
    ("colorize", "good.png", "needs RGB"),                               # the digits run is grayscale
])
def test_restore_cli_bad_input_is_one_line(digits_run, tmp_path, capsys, task, name, message):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_text("not an image")
    args = ["restore", digits_run, "--task", task, "--input", tmp_path / name, "--out", tmp_path / "o"]
    assert main([str(a) for a in args]) == 2                             # in-process: no interpreter start
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and message in err, err
