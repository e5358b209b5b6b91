"""Analysis figures (energyvae.viz.analysis): each writes a readable PNG on small and larger,
gray and RGB images; the numeric helpers behind them are exact on known inputs."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from energyvae.viz import (
    image_spectrum,
    normalized_residuals,
    pixel_variance,
    plot_beta_walk,
    plot_residual_histogram,
    plot_spectra,
    plot_toy_density,
    plot_variance_map,
    radial_power_spectrum,
    save_latent_walk,
)

SHAPES = [(1, 8), (1, 28), (3, 8), (3, 28)]


def _open(path, min_side=50):
    assert path.exists() and path.stat().st_size > 0
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.load()
        assert img.size[0] >= min_side and img.size[1] >= min_side
        return img.copy()


# --------------------------------------------------------------------------- variance map

def test_pixel_variance_exact():
    draws = torch.zeros(4, 3, 5, 6)
    draws[:, 0, 2, 3] = torch.tensor([0.0, 1.0, 0.0, 1.0])   # one pixel of the red channel
    var = pixel_variance(draws)
    assert var.shape == (5, 6)
    expected = np.zeros((5, 6))
    expected[2, 3] = np.var([0, 1, 0, 1], ddof=1) / 3        # averaged over 3 channels
    np.testing.assert_allclose(var, expected)
    np.testing.assert_allclose(pixel_variance(draws, ddof=0)[2, 3], 0.25 / 3)
    assert (pixel_variance(draws[:1]) == 0).all()            # one draw: no variance


@pytest.mark.parametrize("c,hw", SHAPES)
def test_plot_variance_map(tmp_path, c, hw):
    draws = torch.rand(50, c, hw, hw)
    with_input = _open(plot_variance_map(draws, tmp_path / "sub" / "var.png",
                                         input_image=draws[0]))
    without = _open(plot_variance_map(draws, tmp_path / "var2.png"))
    assert with_input.size[0] > with_input.size[1]           # panels side by side
    assert with_input.size[0] > without.size[0]              # one panel more
    _open(plot_variance_map(draws, tmp_path / "var3.png", input_image=draws[:1], title="t"))


def test_plot_variance_map_64_and_bad_input(tmp_path):
    _open(plot_variance_map(torch.rand(10, 3, 64, 64), tmp_path / "v64.png"))
    with pytest.raises(ValueError):
        plot_variance_map(torch.rand(5, 2, 8, 8), tmp_path / "bad.png")
    with pytest.raises(ValueError):
        plot_variance_map(torch.rand(5, 1, 8, 8), tmp_path / "bad.png",
                          input_image=torch.rand(2, 1, 8, 8))


# --------------------------------------------------------------------------- residuals

def test_normalized_residuals_scales():
    x = torch.zeros(2, 1, 4, 4)
    x_hat = torch.full((2, 1, 4, 4), -0.5)                   # residual 0.5 everywhere
    np.testing.assert_allclose(normalized_residuals(x, x_hat, scale=0.25), 2.0)
    # own std: residuals 0.1 +- 0.5 have std 0.5; they are scaled, not centred
    signs = torch.tensor([1.0, -1.0]).repeat(16).reshape(2, 1, 4, 4)
    r = normalized_residuals(x, -(0.1 + 0.5 * signs))
    np.testing.assert_allclose(np.sort(r), np.sort((0.1 + 0.5 * signs.numpy().ravel()) / 0.5))
    # a constant residual has std 0: left unscaled
    np.testing.assert_allclose(normalized_residuals(x, x_hat), 0.5)
    sigma = torch.full((1, 4, 4), 0.5)
    sigma[0, 0, 0] = 0.1
    r = normalized_residuals(x, x_hat, scale=sigma)          # per-pixel, broadcast over N
    assert r.shape == (32,)
    assert np.isclose(r, 5.0).sum() == 2 and np.isclose(r, 1.0).sum() == 30
    # non-finite entries are dropped; zero residuals with own std do not divide by zero
    x_hat[0, 0, 0, 0] = float("nan")
    assert normalized_residuals(x, x_hat).shape == (31,)
    assert np.all(normalized_residuals(x, x) == 0)
    with pytest.raises(ValueError):
        normalized_residuals(x, torch.zeros(2, 1, 4, 5))
    with pytest.raises(ValueError):
        normalized_residuals(x, x, scale=torch.ones(3))
    with pytest.raises(ValueError):
        normalized_residuals(x, x, scale=-1.0)


@pytest.mark.parametrize("c,hw", SHAPES)
def test_plot_residual_histogram_scales(tmp_path, c, hw):
    x = torch.rand(16, c, hw, hw)
    sigma = torch.full_like(x, 0.1)
    x_hat = x + sigma * torch.randn_like(x)
    for name, scale in [("none", None), ("float", 0.1), ("tensor", sigma),
                        ("pixel", sigma[0])]:
        img = _open(plot_residual_histogram(x, x_hat, tmp_path / f"{name}.png", scale=scale,
                                            labels="model"))
        assert img.size[0] > img.size[1]


def test_plot_residual_histogram_several_models(tmp_path):
    x = torch.rand(8, 1, 8, 8)
    a, b = x + 0.05 * torch.randn_like(x), x * 0.8
    # a list of reconstructions of the same inputs, one scale each
    _open(plot_residual_histogram(x, [a, b], tmp_path / "list.png", scale=[0.05, None],
                                  labels=["EnVAE", "VAE"], log=True))
    # a mapping {label: (x, x_hat[, scale])}, path as the second positional argument
    rgb = torch.rand(4, 3, 28, 28)
    models = {"gray": (x, a), "rgb": (rgb, rgb.flip(0), torch.full_like(rgb, 0.2))}
    _open(plot_residual_histogram(models, tmp_path / "dict.png"))
    _open(plot_residual_histogram(models, path=tmp_path / "dict2.png", scale={"gray": 0.05},
                                  bins=30, lim=6.0))
    with pytest.raises(ValueError):
        plot_residual_histogram(x, [a, b], tmp_path / "bad.png", labels=["one"])
    with pytest.raises(ValueError):
        plot_residual_histogram(x, None, tmp_path / "bad.png")


# --------------------------------------------------------------------------- spectra

def test_spectrum_of_constant_image_is_centre_only():
    for h, w in [(8, 8), (28, 28), (7, 10)]:
        x = torch.full((3, 1, h, w), 0.7)
        mag = image_spectrum(x, log=False)
        assert mag.shape == (h, w)
        centre = (h // 2, w // 2)
        np.testing.assert_allclose(mag[centre], 0.7 * math.sqrt(h * w))   # orthonormal DC
        rest = mag.copy()
        rest[centre] = 0
        assert np.abs(rest).max() < 1e-9
        logm = image_spectrum(x)                              # log-magnitude: max at centre
        assert np.unravel_index(np.argmax(logm), logm.shape) == centre
        freq, power = radial_power_spectrum(x)
        assert freq[0] == 0 and len(freq) == min(h, w) // 2 + 1
        np.testing.assert_allclose(power[0], 0.49 * h * w)
        assert np.nanmax(power[1:]) < 1e-12


def test_spectrum_of_a_stripe_pattern():
    # a cosine along x with 2 cycles over 8 pixels: energy at fx = +-0.25 on the fy = 0 row
    n = torch.arange(8, dtype=torch.float32)
    img = (0.5 + 0.5 * torch.cos(2 * math.pi * n / 4)).expand(8, 8)[None, None]
    mag = image_spectrum(img, log=False)
    peaks = {tuple(int(i) for i in ix) for ix in np.argwhere(mag > 1e-6)}
    assert peaks == {(4, 4), (4, 2), (4, 6)}                  # DC and fx = -0.25, +0.25
    freq, power = radial_power_spectrum(img)
    assert np.argmax(power[1:]) + 1 == 2 and freq[2] == pytest.approx(0.25)


def test_spectrum_white_noise_is_flat():
    x = torch.rand(200, 1, 16, 16)
    freq, power = radial_power_spectrum(x)
    # uniform white noise: flat power var(x) = 1/12 in every bin but DC (orthonormal FFT)
    np.testing.assert_allclose(power[1:], 1 / 12, rtol=0.25)
    # chunked accumulation equals a direct computation
    direct = np.log(np.abs(np.fft.fftshift(np.fft.fft2(x.numpy().astype(np.float64),
                                                       norm="ortho"), axes=(-2, -1))) + 1e-8)
    np.testing.assert_allclose(image_spectrum(x), direct.mean(axis=(0, 1)), atol=1e-9)


@pytest.mark.parametrize("c,hw", SHAPES)
def test_plot_spectra(tmp_path, c, hw):
    real = torch.rand(12, c, hw, hw)
    blurred = torch.nn.functional.avg_pool2d(real, 3, stride=1, padding=1)
    img = _open(plot_spectra(real, blurred, tmp_path / "s" / "spec.png"))
    assert img.size[0] > 2 * img.size[1]                     # three panels in a row
    several = _open(plot_spectra(real, {"blur": blurred, "same": real},
                                 tmp_path / "spec2.png", labels=("data",)))
    assert several.size[0] > img.size[0]


def test_plot_spectra_constant_and_64(tmp_path):
    _open(plot_spectra(torch.full((2, 1, 8, 8), 0.5), torch.full((2, 1, 8, 8), 0.5),
                       tmp_path / "const.png"))
    _open(plot_spectra(torch.rand(4, 3, 64, 64), torch.rand(3, 3, 32, 32), tmp_path / "mix.png",
                       labels=("64px", "32px")))


# --------------------------------------------------------------------------- walks

@pytest.mark.parametrize("c,hw", SHAPES)
def test_save_latent_walk(tmp_path, c, hw):
    walks = torch.rand(3, 12, c, hw, hw)
    img = _open(save_latent_walk(walks, tmp_path / "w" / "walk.png", scale=1),
                min_side=1)
    assert img.size == (12 * (hw + 1) + 1, 3 * (hw + 1) + 1)     # one walk per row
    assert img.mode == ("L" if c == 1 else "RGB")
    # the first tile of the second row is the start of walk 2
    arr = np.asarray(img).reshape(img.size[1], img.size[0], -1)
    top = 1 + hw + 1
    expected = np.round(walks[1, 0].numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
    np.testing.assert_array_equal(arr[top:top + hw, 1:1 + hw], expected)
    one = _open(save_latent_walk(walks[0], tmp_path / "one.png"), min_side=1)  # one row
    assert one.size[0] > 5 * one.size[1]
    with pytest.raises(ValueError):
        save_latent_walk(torch.rand(12, hw, hw), tmp_path / "bad.png")


@pytest.mark.parametrize("c,hw", SHAPES + [(3, 64)])
def test_plot_beta_walk(tmp_path, c, hw):
    rows = {b: torch.rand(10, c, hw, hw) for b in (0.1, 0.5, 1.0, 2.0)}
    img = _open(plot_beta_walk(rows, tmp_path / "b" / "beta.png"))
    assert img.size[0] > img.size[1]
    two = _open(plot_beta_walk({0.5: rows[0.5], 2.0: rows[2.0][:4]}, tmp_path / "two.png",
                               title="beta"))
    assert two.size[1] < img.size[1]                           # fewer rows, shorter figure


def test_plot_beta_walk_errors(tmp_path):
    with pytest.raises(ValueError):
        plot_beta_walk({}, tmp_path / "x.png")
    with pytest.raises(ValueError):
        plot_beta_walk({1.0: torch.rand(3, 1, 8, 8), 2.0: torch.rand(3, 1, 28, 28)},
                       tmp_path / "x.png")


# --------------------------------------------------------------------------- toy 2-D

def test_plot_toy_density(tmp_path):
    samples = torch.randn(500, 2)
    ref = np.random.default_rng(0).normal(size=(800, 2))
    one = _open(plot_toy_density(samples, tmp_path / "t" / "one.png"))
    calls = []

    def log_density(z):
        calls.append(z.shape)
        return -0.5 * (z ** 2).sum(dim=1)

    three = _open(plot_toy_density(samples, tmp_path / "three.png", reference=ref,
                                   log_density_fn=log_density, lim=4.0, n=50))
    assert three.size[0] > 2 * one.size[0]
    assert calls and calls[0][1] == 2 and sum(s[0] for s in calls) == 50 * 50
    # large sets switch to 2-D histograms; a [K, 1] density output and -inf values work
    _open(plot_toy_density(torch.randn(6000, 2), tmp_path / "hist.png",
                           log_density_fn=lambda z: torch.where(z[:, :1] > 0, -z[:, :1] ** 2,
                                                                torch.full_like(z[:, :1],
                                                                                -math.inf)),
                           n=20))
    with pytest.raises(ValueError):
        plot_toy_density(torch.randn(10, 3), tmp_path / "bad.png")
    with pytest.raises(ValueError):
        plot_toy_density(samples, tmp_path / "bad.png", log_density_fn=lambda z: z[:5, 0], n=10)


def test_lattice_power_fraction_oracles():
    """White noise spreads its power evenly: 15 of the 783 non-DC frequencies of a 28 x 28 image
    are on the period-2/4 lattice; a period-4 checker has all its power there; a smooth ramp
    almost none; a Nyquist-only pattern counts for period 2 alone."""
    from energyvae.viz.analysis import lattice_power_fraction

    torch.manual_seed(0)
    assert lattice_power_fraction(torch.randn(400, 1, 28, 28)) == pytest.approx(15 / 783, rel=0.05)
    i = torch.arange(28)
    checker = ((i[:, None] // 2 + i[None, :] // 2) % 2).float().expand(3, 1, 28, 28)
    assert lattice_power_fraction(checker) == pytest.approx(1.0)
    ramp = (i[:, None] + i[None, :]).float().div(54).expand(2, 1, 28, 28)
    assert lattice_power_fraction(ramp) < 0.05
    nyquist = ((-1.0) ** (i[:, None] + i[None, :])).expand(2, 1, 28, 28)
    assert lattice_power_fraction(nyquist, periods=(2,)) == pytest.approx(1.0)
    assert math.isnan(lattice_power_fraction(torch.rand(2, 1, 7, 7)))
