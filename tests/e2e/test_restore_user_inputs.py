"""``energyvae restore`` on the user's own inputs (issue 12): mask files, already degraded images,
the output files and one-line errors for bad input."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import energyvae.commands.restore as files
from energyvae.cli import main
from energyvae.config import build_config
from energyvae.restoration import OPERATORS, RestorationError
from energyvae.runs import prepare
from energyvae.train import Trainer

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--steps", "3", "--step-size", "1e-2"]
RNG = np.random.default_rng(0)


def train_tiny(run_dir: Path, dataset: str) -> Path:
    """Two steps of a small MLP VAE on 8x8 digits (gray or coloured), in-process."""
    cfg = build_config({"run": {"dir": str(run_dir)}, "data": {"name": dataset},
                        "model": {"latent_dim": 3, "encoder": {"name": "mlp", "hidden": [16]},
                                  "decoder": {"name": "mlp", "hidden": [16]}},
                        "train": {"steps": 2, "batch_size": 16, "eval_every": 2, "checkpoint_every": 2,
                                  "eval_batches": 1, "progress": False, "device": "cpu"}})
    data, model = prepare(cfg)
    Trainer(cfg, model, data).fit()
    return run_dir


@pytest.fixture(scope="module")
def gray_run(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("restore_user") / "gray", "digits")


@pytest.fixture(scope="module")
def rgb_run(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("restore_user") / "rgb", "digits-rgb")


def save_png(path: Path, array) -> Path:
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def random_image(*shape):
    return RNG.integers(0, 256, shape, dtype=np.uint8)


def checker_mask(h=8, w=8):
    """uint8 0 / 255 mask with an off-centre missing block (not the tool's centre box)."""
    m = np.full((h, w), 255, np.uint8)
    m[1:4, 2:7] = 0
    return m


@pytest.fixture
def spy(monkeypatch):
    """Records (op, y, x_hat) of every ``restore`` call the pipeline makes."""
    calls = []

    def recording(model, y, op, **kw):
        x_hat = real(model, y, op, **kw)
        calls.append((op, y, x_hat))
        return x_hat
    real = files.restore
    monkeypatch.setattr(files, "restore", recording)
    return calls


def restore_cli(run, *args) -> int:
    return main(["restore", str(run), *map(str, args), *FAST])


def assert_consistent(calls):
    """A x_hat = y exactly (1e-6) in model space for every restored batch."""
    assert calls
    for op, y, x_hat in calls:
        torch.testing.assert_close(op.A(x_hat), y, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------ operators
def test_inpaint_operator_from_an_explicit_mask():
    mask = torch.from_numpy(checker_mask() == 255)
    op = OPERATORS["inpaint"]((1, 8, 8), mask=mask)
    assert torch.equal(op.mask, mask)
    assert torch.equal(OPERATORS["inpaint"]((1, 8, 8), mask=mask.to(torch.uint8)).mask, mask)
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(op.A(x)[..., ~mask], torch.zeros(2, 1, int((~mask).sum())))
    for bad, message in [(mask[:4], "the mask is"), (mask * 2.0, "0 / 1 values")]:
        with pytest.raises(RestorationError, match=message):
            OPERATORS["inpaint"]((1, 8, 8), mask=bad)
    with pytest.raises(RestorationError, match="fraction applies"):
        OPERATORS["inpaint"]((1, 8, 8), mask=mask, fraction=0.3)
    assert (~OPERATORS["inpaint"]((1, 8, 8), mask="box").mask).sum() == 16   # the string masks as before


# ------------------------------------------------------------------------------ restoration
def test_user_mask_file_with_clean_inputs(gray_run, tmp_path, spy, capsys):
    """The mask file defines A; observed pixels come back unchanged; all outputs are written."""
    src = tmp_path / "in"
    src.mkdir()
    images = {name: random_image(8, 8) for name in ("a", "b")}
    for name, im in images.items():
        save_png(src / f"{name}.png", im)
    mask_file = save_png(tmp_path / "mask.png", checker_mask())
    out = tmp_path / "out"
    assert restore_cli(gray_run, "--task", "inpaint", "--input", src, "--out", out, "--mask-file", mask_file) == 0
    assert "PSNR" in capsys.readouterr().out
    assert_consistent(spy)
    observed = checker_mask() == 255
    assert torch.equal(spy[0][0].mask, torch.from_numpy(observed))
    for name, im in images.items():
        with Image.open(out / f"{name}.png") as restored:
            assert restored.size == (8, 8) and restored.mode == "L"
            restored = np.asarray(restored)
        assert np.array_equal(restored[observed], im[observed])         # A+ y on the observed pixels
        with Image.open(out / f"{name}_compare.png") as fig:
            assert fig.size[0] > 2 * fig.size[1]                        # three labelled columns
            row_aspect = fig.size[1] / fig.size[0]
    with Image.open(out / "overview.png") as fig:
        assert fig.size[1] / fig.size[0] > 1.5 * row_aspect             # two rows of three
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["options"]["mask_file"] == str(mask_file) and not metrics["degraded"]
    assert set(metrics["images"]["a.png"]) == {"psnr", "ssim", "consistency", "consistency_model"}
    assert metrics["mean"]["consistency_model"] < 1e-6


def test_degraded_inpainting_ignores_the_missing_pixels(gray_run, tmp_path, spy, capsys):
    mask_file = save_png(tmp_path / "mask.png", checker_mask())
    observed = checker_mask() == 255
    clean = random_image(8, 8)
    outs = []
    for k in range(2):                        # two different junk fillings of the missing pixels
        damaged = np.where(observed, clean, random_image(8, 8))
        src = save_png(tmp_path / f"d{k}.png", damaged)
        outs.append(tmp_path / f"out{k}")
        assert restore_cli(gray_run, "--task", "inpaint", "--input", src, "--out", outs[-1],
                           "--mask-file", mask_file, "--degraded") == 0
    assert_consistent(spy)
    torch.testing.assert_close(spy[0][1], spy[1][1], rtol=0, atol=0)    # same y
    torch.testing.assert_close(spy[0][2], spy[1][2], rtol=0, atol=0)    # same answer
    metrics = json.loads((outs[0] / "metrics.json").read_text())
    assert metrics["degraded"] and set(metrics["mean"]) == {"consistency_model"}
    assert "PSNR" not in capsys.readouterr().out
    # the compare figure has two columns, degraded | restored (no input column): its width is that of
    # a two-column figure of the same titles, well short of a three-column one
    from energyvae.viz import save_compare
    tile = torch.rand(1, 8, 8)
    refs = {n: save_compare([tile] * n, ["input", "degraded (A+ y)", "restored"][3 - n:], tmp_path / f"ref{n}.png")
            for n in (2, 3)}
    width = {n: Image.open(path).size[0] for n, path in refs.items()}
    with Image.open(outs[0] / "d0_compare.png") as fig:
        assert abs(fig.size[0] - width[2]) <= 2 and fig.size[0] < 0.8 * width[3], (fig.size, width)
    assert not (outs[0] / "overview.png").exists()                      # a single image


@pytest.mark.parametrize("task, factor", [("sr2", 2), ("sr4", 4)])
def test_degraded_super_resolution_uses_the_low_res_images_as_y(gray_run, tmp_path, spy, task, factor):
    src = tmp_path / "in"
    src.mkdir()
    low = {name: random_image(8 // factor, 8 // factor) for name in ("p", "q")}
    for name, im in low.items():
        save_png(src / f"{name}.png", im)
    out = tmp_path / "out"
    assert restore_cli(gray_run, "--task", task, "--input", src, "--out", out, "--degraded") == 0
    assert_consistent(spy)
    y = torch.from_numpy(np.stack(list(low.values()))[:, None]).float() / 255   # the run scales to [0, 1]
    torch.testing.assert_close(spy[0][1], y, rtol=0, atol=0)
    for name in low:
        with Image.open(out / f"{name}.png") as restored:
            assert restored.size == (8, 8)                              # the run's resolution
        assert (out / f"{name}_compare.png").is_file()
    assert (out / "overview.png").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["images"]) == {"p.png", "q.png"} and metrics["mean"]["consistency_model"] < 1e-6


def test_degraded_colorization_of_grayscale_inputs(rgb_run, tmp_path, spy):
    gray = random_image(8, 8)
    src = save_png(tmp_path / "g.png", gray)
    out = tmp_path / "out"
    assert restore_cli(rgb_run, "--task", "colorize", "--input", src, "--out", out, "--degraded") == 0
    assert_consistent(spy)
    torch.testing.assert_close(spy[0][1], torch.from_numpy(gray)[None, None].float() / 255, rtol=0, atol=0)
    with Image.open(out / "g.png") as restored:
        assert restored.size == (8, 8) and restored.mode == "RGB"


# ------------------------------------------------------------------------------ bad input
def _bad_case(tmp_path, case):
    """CLI arguments after the run for one bad-input case (files made in ``tmp_path``)."""
    gray8 = save_png(tmp_path / "gray8.png", random_image(8, 8))
    gray4 = save_png(tmp_path / "gray4.png", random_image(4, 4))
    rgb4 = save_png(tmp_path / "rgb4.png", random_image(4, 4, 3))
    good_mask = save_png(tmp_path / "mask.png", checker_mask())
    out = ["--out", tmp_path / "o"]
    inpaint = ["--task", "inpaint", "--input", gray8, *out]
    (tmp_path / "junk.png").write_text("not an image")
    gray_levels = save_png(tmp_path / "m128.png", np.where(checker_mask(), 255, 128))
    return {
        "mask size": [*inpaint, "--mask-file", save_png(tmp_path / "m6.png", np.full((6, 6), 255))],
        "mask gray levels": [*inpaint, "--mask-file", gray_levels],
        "mask missing": [*inpaint, "--mask-file", tmp_path / "nope.png"],
        "mask unreadable": [*inpaint, "--mask-file", tmp_path / "junk.png"],
        "mask for sr": ["--task", "sr2", "--input", gray4, *out, "--mask-file", good_mask, "--degraded"],
        "degraded inpaint without mask": [*inpaint, "--degraded"],
        "degraded sr size": ["--task", "sr2", "--input", gray8, *out, "--degraded"],
        "degraded sr channels": ["--task", "sr2", "--input", rgb4, *out, "--degraded"],
        "degraded input missing": ["--task", "sr2", "--input", tmp_path / "nope.png", *out, "--degraded"],
        "step size nan": ["--task", "sr2", "--input", gray8, *out, "--step-size", "nan"],
        "noise scale inf": ["--task", "sr2", "--input", gray8, *out, "--noise-scale", "inf"],
        "fraction nan": [*inpaint, "--fraction", "nan"],
        "overwrite input": ["--task", "sr2", "--input", gray8, "--out", tmp_path],
    }[case]


@pytest.mark.parametrize("case, message", [
    ("mask size", "masks are not resized"),
    ("mask gray levels", "must be binary"),
    ("mask missing", "no such mask file"),
    ("mask unreadable", "not a readable image"),
    ("mask for sr", "--mask-file is for --task inpaint"),
    ("degraded inpaint without mask", "needs --mask-file"),
    ("degraded sr size", "must be 4x4 grayscale"),
    ("degraded sr channels", "of mode RGB"),
    ("degraded input missing", "no such file"),
    ("step size nan", "--step-size must be a finite number"),
    ("noise scale inf", "--noise-scale must be a finite number"),
    ("fraction nan", "--fraction must be a finite number"),
    ("overwrite input", "would overwrite an input image"),
])
def test_bad_input_is_one_error_line(gray_run, tmp_path, capsys, case, message):
    args = _bad_case(tmp_path, case)
    assert main(["restore", str(gray_run), *map(str, args)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("energyvae: error: ") and err.strip().count("\n") == 0 and message in err, err


def test_degraded_colorization_needs_grayscale_inputs(rgb_run, tmp_path, capsys):
    src = save_png(tmp_path / "c.png", random_image(8, 8, 3))
    assert restore_cli(rgb_run, "--task", "colorize", "--input", src, "--out", tmp_path / "o", "--degraded") == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "must be 8x8 grayscale" in err, err


def test_bad_mask_exit_status_in_a_real_process(gray_run, tmp_path):
    args = _bad_case(tmp_path, "mask gray levels")
    res = subprocess.run([sys.executable, "-m", "energyvae", "restore", str(gray_run), *map(str, args)],
                         capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0 and "must be binary" in res.stderr, res.stderr
