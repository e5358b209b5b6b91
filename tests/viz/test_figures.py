"""Figure helpers write valid PNGs; make_grid has an exact pixel layout."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from energyvae.viz import (
    make_grid,
    plot_density_2d,
    plot_loss_curves,
    plot_points_2d,
    save_image_grid,
    save_reconstruction_pairs,
)


def _open(path):
    assert path.exists() and path.stat().st_size > 0
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.load()
        assert img.size[0] > 0 and img.size[1] > 0
        return img.copy()


def test_make_grid_exact_layout():
    # three 1x2x2 images with constant values 0, 0.2, 0.4 (plus one distinct pixel each)
    x = torch.zeros(3, 1, 2, 2)
    for k in range(3):
        x[k] = 0.2 * k
        x[k, 0, 1, 1] = 1.0 - 0.1 * k
    g = make_grid(x, nrow=2, pad=1, pad_value=0.0)
    assert g.dtype == np.uint8 and g.shape == (2 * 3 + 1, 2 * 3 + 1, 1)
    v = lambda f: int(round(255 * f))  # noqa: E731
    expected = np.zeros((7, 7), dtype=np.uint8)
    for k, (top, left) in enumerate([(1, 1), (1, 4), (4, 1)]):
        expected[top:top + 2, left:left + 2] = v(0.2 * k)
        expected[top + 1, left + 1] = v(1.0 - 0.1 * k)
    np.testing.assert_array_equal(g[..., 0], expected)
    # the empty cell and the padding take pad_value
    g = make_grid(x, nrow=2, pad=1, pad_value=1.0)
    assert (g[4:6, 4:6] == 255).all() and (g[0] == 255).all() and (g[:, 3] == 255).all()


def test_make_grid_rgb_clamp_and_defaults():
    x = np.zeros((5, 3, 4, 4), dtype=np.float32)
    x[:, 0] = 2.0      # clamped to 1
    x[:, 1] = -1.0     # clamped to 0
    x[:, 2] = np.nan   # shown as 0
    g = make_grid(x, pad=0)  # nrow = ceil(sqrt(5)) = 3 -> 2 rows x 3 columns
    assert g.shape == (8, 12, 3)
    np.testing.assert_array_equal(g[0, 0], [255, 0, 0])
    g = make_grid(x, nrow=10, pad=2)  # nrow > N: one row of N images
    assert g.shape == (4 + 2 * 2, 5 * 6 + 2, 3)
    with pytest.raises(ValueError):
        make_grid(torch.zeros(2, 2, 4, 4), nrow=1, pad=0)
    with pytest.raises(ValueError):
        make_grid(torch.zeros(4, 4), nrow=1, pad=0)


def test_save_image_grid_gray_upscaled(tmp_path):
    torch.manual_seed(0)
    x = torch.rand(4, 1, 8, 8)
    path = save_image_grid(x, tmp_path / "a" / "b" / "grid.png", nrow=2, pad=1)
    img = _open(path)
    assert img.mode == "L"
    assert img.size == (4 * 19, 4 * 19)  # 8x8 tiles upscaled 4x -> 32 px per tile
    arr = np.asarray(img)
    np.testing.assert_array_equal(arr[::4, ::4], make_grid(x, nrow=2, pad=1)[..., 0])


def test_save_image_grid_rgb(tmp_path):
    x = torch.rand(3, 3, 32, 32)
    img = _open(save_image_grid(x, tmp_path / "rgb.png"))
    assert img.mode == "RGB" and img.size == (2 * 33 + 1, 2 * 33 + 1)
    img = _open(save_image_grid(torch.rand(2, 3, 28, 28), tmp_path / "s.png", nrow=2, scale=1))
    assert img.size == (2 * 29 + 1, 29 + 1)


def test_save_reconstruction_pairs(tmp_path):
    x = torch.zeros(3, 1, 8, 8)
    x_hat = torch.ones(3, 1, 8, 8)
    img = _open(save_reconstruction_pairs(x, x_hat, tmp_path / "rec.png", scale=1, pad=1))
    assert img.size == (3 * 9 + 1, 2 * 9 + 1)
    arr = np.asarray(img)
    assert (arr[1:9, 1:9] == 0).all()        # first input, top row
    assert (arr[10:18, 1:9] == 255).all()    # its reconstruction, below it
    # more images than columns: rows alternate inputs / reconstructions
    img = _open(save_reconstruction_pairs(torch.zeros(5, 3, 8, 8), torch.ones(5, 3, 8, 8),
                                          tmp_path / "rec2.png", ncol=2, scale=1,
                                          pad_value=0.5))
    arr = np.asarray(img)
    assert img.size == (2 * 9 + 1, 6 * 9 + 1)
    assert (arr[1:9, 1:9] == 0).all() and (arr[10:18, 1:9] == 255).all()
    assert (arr[37:45, 10:18] == 128).all()  # empty cell after the 5th input
    with pytest.raises(ValueError):
        save_reconstruction_pairs(torch.zeros(2, 1, 8, 8), torch.zeros(3, 1, 8, 8),
                                  tmp_path / "bad.png")


def _records():
    recs = []
    for step in range(0, 200, 5):
        recs.append({"step": step, "split": "train", "loss": 10 * math.exp(-step / 50)
                     + 0.1 * math.sin(step), "elbo": -step, "recon": 1.0, "kl": 0.5,
                     "lr": 1e-3, "time": 0.1})
        if step % 50 == 0:
            recs.append({"step": step, "split": "val", "loss": 10 * math.exp(-step / 50),
                         "elbo": -step - 1.0, "kl": float("nan")})
    return recs


def test_plot_loss_curves(tmp_path):
    img = _open(plot_loss_curves(_records(), tmp_path / "curves" / "loss.png"))
    # default keys: loss, elbo, recon, kl (not lr/time) -> 3 x 2 subplot grid
    assert img.size[0] > img.size[1]
    _open(plot_loss_curves(_records(), tmp_path / "one.png", keys=["loss"]))
    _open(plot_loss_curves([], tmp_path / "empty.png"))


def test_plot_loss_curves_ema():
    from energyvae.viz.figures import _ema
    np.testing.assert_allclose(_ema(np.full(10, 3.0), 0.9), np.full(10, 3.0))
    np.testing.assert_allclose(_ema(np.array([1.0, 2.0]), 0.0), [1.0, 2.0])
    out = _ema(np.array([0.0, 1.0]), 0.5)
    np.testing.assert_allclose(out, [0.0, (0.5 * 0.5 * 0 + 0.5 * 1.0) / 0.75])


def test_plot_points_2d(tmp_path):
    torch.manual_seed(0)
    pts = torch.randn(300, 2)
    ref = np.random.default_rng(0).normal(size=(400, 2))
    one = _open(plot_points_2d(pts, tmp_path / "p1.png", title="samples"))
    two = _open(plot_points_2d(pts, tmp_path / "p2.png", reference=ref, lim=4.0))
    assert two.size[0] > one.size[0]
    pts[0, 0] = float("nan")
    _open(plot_points_2d(pts, tmp_path / "hist.png", reference=ref, hist_above=100))
    with pytest.raises(ValueError):
        plot_points_2d(torch.randn(10, 3), tmp_path / "bad.png")


def test_plot_density_2d(tmp_path):
    calls = []

    def log_normal(z):
        calls.append(z.shape)
        assert z.dtype == torch.float32 and z.shape[1] == 2
        return -0.5 * (z ** 2).sum(dim=1) - math.log(2 * math.pi)

    _open(plot_density_2d(log_normal, tmp_path / "d" / "density.png", lim=3.0, n=50))
    assert sum(s[0] for s in calls) == 50 * 50
    # unnormalized energies with huge offsets, [K, 1] outputs and -inf are fine
    _open(plot_density_2d(lambda z: (1e4 - (z ** 2).sum(1, keepdim=True)), tmp_path / "e.png",
                          n=20, chunk=64))
    _open(plot_density_2d(lambda z: torch.full((z.shape[0],), -float("inf")),
                          tmp_path / "inf.png", n=10))
    _open(plot_density_2d(log_normal, tmp_path / "raw.png", n=20, normalize=False))
    with pytest.raises(ValueError):
        plot_density_2d(lambda z: z[:3, 0], tmp_path / "bad.png", n=10)
