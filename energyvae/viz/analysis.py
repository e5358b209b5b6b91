"""Analysis figures of the papers (docs/methods.md §1, "Analyses"): data in, PNG out.

- :func:`plot_variance_map`: per-pixel variance of decoder outputs over latent draws of one image;
- :func:`plot_residual_histogram`: normalised residuals ``(x - x_hat) / s`` against N(0, 1);
- :func:`plot_spectra`: mean 2-D FFT log-magnitude spectra and radially averaged power spectra;
- :func:`save_latent_walk`: latent interpolations, one walk per row;
- :func:`plot_beta_walk`: one labelled row of images per energy-score ``beta``;
- :func:`plot_toy_density`: 2-D toy samples beside the reference data and a model density.

The functions only take data (tensors / arrays, or a callable for densities), never a model,
so they can be tested without training. As in :mod:`energyvae.viz.figures`, images are float
``[N, C, H, W]`` in [0, 1] (clamped; NaN shown as 0) with ``C`` in {1, 3}; every ``plot_*`` /
``save_*`` function creates the parent folders of ``path``, writes one PNG with matplotlib's Agg
backend (or PIL for pixel grids) and returns its :class:`~pathlib.Path`. Any image size works
(8x8 digits to 64x64 and beyond): images are drawn with nearest-neighbour interpolation.

The numbers behind the plots (:func:`pixel_variance`, :func:`normalized_residuals`,
:func:`image_spectrum`, :func:`radial_power_spectrum`, :func:`lattice_power_fraction`) live in
:mod:`energyvae.imaging.statistics` and are re-exported here.
"""
from __future__ import annotations

import math
from os import PathLike
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..atomic import atomic_write  # noqa: E402
from ..imaging.statistics import (  # noqa: E402
    as_images,
    as_numpy,
    image_spectrum,
    lattice_power_fraction,
    normalized_residuals,
    pixel_variance,
    radial_power_spectrum,
)
from .figures import (  # noqa: E402
    _draw_points,
    _points,
    _prepare,
    auto_lim,
    density_grid,
    make_grid,
    save_image_grid,
)

__all__ = [
    "image_spectrum",
    "lattice_power_fraction",
    "normalized_residuals",
    "pixel_variance",
    "plot_beta_walk",
    "plot_residual_histogram",
    "plot_spectra",
    "plot_toy_density",
    "plot_variance_map",
    "radial_power_spectrum",
    "save_compare",
    "save_figure",
    "save_latent_walk",
    "show_image",
]

_DPI = 100


def save_figure(fig, path) -> Path:
    try:
        fig.tight_layout()
        path = _prepare(path)
        atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=_DPI, bbox_inches="tight"))   # long row labels stay whole
    finally:
        plt.close(fig)
    return path


def show_image(ax, img_chw: np.ndarray, title: str | None = None) -> None:
    """Draw one ``[C, H, W]`` image in [0, 1] (gray or RGB), pixel-exact, without axes."""
    if img_chw.shape[0] == 1:
        ax.imshow(img_chw[0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(img_chw.transpose(1, 2, 0), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)


# --------------------------------------------------------------------------- variance map


def plot_variance_map(draws, path, input_image=None, title: str | None = None,
                      cmap: str = "magma") -> Path:
    """Panels: the input (if given), the mean decoder output and the per-pixel variance map.

    ``draws`` ``[S, C, H, W]``: decoder outputs ``g(z_s)`` of ``S`` latent draws
    ``z_s ~ q(z|x)`` of one image ``x`` (the papers use S = 50); ``input_image`` is ``x`` as
    ``[C, H, W]`` or ``[1, C, H, W]``. The variance (:func:`pixel_variance`, averaged over the
    channels of RGB images) is shown as a heat map with its own colour bar; the title gives the
    mean variance over pixels.
    """
    x = as_images(draws)
    var = pixel_variance(x)
    panels = []
    if input_image is not None:
        inp = as_numpy(input_image)
        inp = as_images(inp[None] if inp.ndim == 3 else inp)
        if inp.shape[0] != 1:
            raise ValueError(f"input_image must be one image [C, H, W], got shape {inp.shape}")
        panels.append(("input", inp[0]))
    panels.append((f"mean of {x.shape[0]} draws", x.mean(axis=0)))
    n = len(panels) + 1
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n + 0.6, 3.4), squeeze=False)
    axes = axes[0]
    for ax, (name, img) in zip(axes, panels):
        show_image(ax, img, name)
    im = axes[-1].imshow(var, cmap=cmap, interpolation="nearest", vmin=0.0,
                         vmax=max(float(var.max()), 1e-12))
    axes[-1].set_xticks([])
    axes[-1].set_yticks([])
    axes[-1].set_title(f"variance (mean {var.mean():.3g})", fontsize=10)
    fig.colorbar(im, ax=axes[-1], fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- residuals


def _is_pathlike(p) -> bool:
    return isinstance(p, (str, PathLike))


def _residual_sets(x, x_hat, scale, labels):
    """[(label, x, x_hat, scale)] from the three call forms of plot_residual_histogram."""
    if isinstance(x, Mapping):
        out = []
        for label, entry in x.items():
            if not isinstance(entry, (tuple, list)) or len(entry) not in (2, 3):
                raise ValueError(f"{label!r}: expected (x, x_hat) or (x, x_hat, scale)")
            s = entry[2] if len(entry) == 3 else (
                scale.get(label) if isinstance(scale, Mapping) else scale)
            out.append((str(label), entry[0], entry[1], s))
        return out
    if x_hat is None:
        raise ValueError("plot_residual_histogram: x_hat is required when x is not a mapping")
    if isinstance(x_hat, (list, tuple)):
        k = len(x_hat)
        names = list(labels) if labels is not None and not isinstance(labels, str) else \
            [f"model {i + 1}" for i in range(k)]
        scales = list(scale) if isinstance(scale, (list, tuple)) else [scale] * k
        if len(names) != k or len(scales) != k:
            raise ValueError("labels and a list of scales need one entry per reconstruction")
        return [(names[i], x, x_hat[i], scales[i]) for i in range(k)]
    name = labels if isinstance(labels, str) else (labels[0] if labels else "residuals")
    return [(str(name), x, x_hat, scale)]


def _scale_name(scale) -> str:
    if scale is None:
        return "own std"
    if isinstance(scale, (int, float)):
        return f"s={float(scale):.3g}"
    return "per-pixel s"


def plot_residual_histogram(x, x_hat=None, path=None, scale=None, bins: int = 100, labels=None,
                            log: bool = False, lim: float | None = None,
                            title: str | None = None) -> Path:
    """Histogram(s) of normalised residuals (:func:`normalized_residuals`) over the N(0, 1) density.

    Three call forms:

    - one model: ``plot_residual_histogram(x, x_hat, path, scale=sigma, labels="EnVAE")``;
    - several models on the same inputs: ``x_hat`` a list of reconstructions, ``labels`` a
      list of names, ``scale`` one value for all or a list with one per model;
    - several models on any inputs: ``x`` a mapping ``{label: (x, x_hat)}`` or
      ``{label: (x, x_hat, scale)}``; then ``path`` may be given as the second positional
      argument (``plot_residual_histogram({"a": (x, xh)}, "res.png")``) and ``scale`` is
      one value for all or a mapping ``{label: scale}`` (a 3-tuple's scale wins).

    ``scale`` (per model): ``None`` = the residuals' own std, a float, or a per-pixel
    array / tensor broadcastable to ``x`` such as the decoder's sigma. The histograms are
    densities over ``[-lim, lim]`` (default: the 99.5% quantile of ``|r|`` over all models,
    at least 4, at most 50), drawn as steps with the fraction of ``|r| > 3`` in the legend;
    ``log=True`` uses a log y axis to show the tails.
    """
    if path is None and isinstance(x, Mapping) and _is_pathlike(x_hat):
        x_hat, path = None, x_hat
    if path is None:
        raise ValueError("plot_residual_histogram: path is required")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    sets = [(name, normalized_residuals(a, b, s), s) for name, a, b, s in
            _residual_sets(x, x_hat, scale, labels)]
    if not sets:
        raise ValueError("plot_residual_histogram: no residuals")
    if lim is None:
        allr = np.concatenate([np.abs(r) for _, r, _ in sets])
        lim = float(np.quantile(allr, 0.995)) if allr.size else 4.0
        lim = min(max(lim, 4.0), 50.0) if math.isfinite(lim) else 4.0
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for name, r, s in sets:
        tail = float((np.abs(r) > 3).mean()) if r.size else float("nan")
        label = f"{name} ({_scale_name(s)}; std {r.std():.3g}, |r|>3: {100 * tail:.2g}%)" \
            if r.size else f"{name} (no finite residuals)"
        ax.hist(np.clip(r, -lim, lim), bins=bins, range=(-lim, lim), density=True,
                histtype="step", lw=1.4, label=label)
    t = np.linspace(-lim, lim, 400)
    ax.plot(t, np.exp(-0.5 * t ** 2) / math.sqrt(2 * math.pi), "k--", lw=1.2, label="N(0, 1)")
    if log:
        ax.set_yscale("log")
    ax.set_xlim(-lim, lim)
    ax.set_xlabel("normalised residual (x - x_hat) / s")
    ax.set_ylabel("density")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title or "normalised residuals", fontsize=10)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- spectra


def plot_spectra(real, recon, path, labels=("real", "reconstruction"),
                 title: str | None = None, eps: float = 1e-8) -> Path:
    """Mean 2-D FFT log-magnitude spectra side by side plus radially averaged power spectra.

    ``real`` and ``recon``: images ``[N, C, H, W]`` (counts and even sizes may differ);
    ``recon`` may also be a mapping ``{label: images}`` to compare several models with the real
    data (then ``labels[0]`` names ``real``). One panel per set shows :func:`image_spectrum`
    (``ln(|F| + eps)``, axes in cycles per pixel, one colour scale shared by all panels, from
    the 1st percentile, or the maximum minus 12 if that is higher, to the maximum); the last panel shows :func:`radial_power_spectrum`
    curves on a log scale. A missing high-frequency tail in a reconstruction is the blur
    of a model.
    """
    sets = [(str(labels[0]), real)]
    if isinstance(recon, Mapping):
        sets += [(str(k), v) for k, v in recon.items()]
    else:
        sets.append((str(labels[1]) if len(labels) > 1 else "reconstruction", recon))
    specs = [(name, image_spectrum(imgs, log=True, eps=eps), radial_power_spectrum(imgs))
             for name, imgs in sets]
    allv = np.concatenate([s.reshape(-1) for _, s, _ in specs])
    vmax = float(allv.max())
    # at most e^12 (~1.6e5) of dynamic range, so an all-zero set (ln eps) cannot wash out the rest
    vmin = max(float(np.quantile(allv, 0.01)), vmax - 12.0)
    if not vmax > vmin:
        vmin, vmax = vmin - 1.0, vmax + 1.0
    n = len(specs) + 1
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n + 0.8, 3.6), squeeze=False)
    axes = axes[0]
    im = None
    for ax, (name, spec, _) in zip(axes, specs):
        h, w = spec.shape
        # pixel centres at (i - h//2) / h cycles per pixel
        ext = (-(w // 2 + 0.5) / w, (w - w // 2 - 0.5) / w,
               -(h // 2 + 0.5) / h, (h - h // 2 - 0.5) / h)
        im = ax.imshow(spec, cmap="viridis", vmin=vmin, vmax=vmax, origin="lower",
                       extent=ext, interpolation="nearest")
        ax.set_title(f"{name}: ln|F|", fontsize=10)
        ax.set_xlabel("fx (cycles/pixel)", fontsize=8)
        ax.set_ylabel("fy", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.colorbar(im, ax=axes[-2], fraction=0.046, pad=0.04)   # one scale for all panels
    ax = axes[-1]
    for name, _, (freq, power) in specs:
        ok = np.isfinite(power) & (power > 0)
        if ok.any():
            ax.plot(freq[ok], power[ok], marker="o", ms=3, lw=1.3, label=name)
        else:
            ax.plot([], [], marker="o", ms=3, label=f"{name} (zero power)")
    ax.set_yscale("log")
    ax.set_xlabel("frequency (cycles/pixel)", fontsize=8)
    ax.set_ylabel("mean power |F|^2", fontsize=8)
    ax.set_title("radial power spectrum", fontsize=10)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- walks

def save_latent_walk(images, path, pad: int = 1, scale: int | None = None,
                     pad_value: float = 1.0) -> Path:
    """Latent walks as a pixel grid, one walk per row (via :func:`save_image_grid`).

    ``images`` ``[R, S, C, H, W]``: ``R`` walks of ``S`` steps each, the two end points
    included (the paper: 2 ends + 10 steps, S = 12); a single walk ``[S, C, H, W]`` is
    accepted. ``pad``, ``scale`` and ``pad_value`` are those of :func:`save_image_grid`.
    """
    x = as_numpy(images)
    if x.ndim == 4:
        x = x[None]
    if x.ndim != 5:
        raise ValueError(f"images must be [R, S, C, H, W] or [S, C, H, W], got shape {x.shape}")
    r, s = x.shape[:2]
    if r == 0 or s == 0:
        raise ValueError("save_latent_walk: no images")
    return save_image_grid(x.reshape((r * s,) + x.shape[2:]), path, nrow=s, pad=pad,
                           scale=scale, pad_value=pad_value)


def plot_beta_walk(images_by_beta: Mapping[float, object], path, pad: int = 1,
                   title: str | None = None, label: str | None = "β") -> Path:
    """One row of images per ``beta`` (in the mapping's order), labelled ``β = value``.

    ``images_by_beta``: ``{beta: images [N, C, H, W]}`` (e.g. the energy-score exponents
    {0.1, 0.5, 1, 2} of paper 000; rows may hold different counts, but tiles must share
    ``C, H, W``). Each row is a :func:`make_grid` strip drawn at its native pixels
    (nearest neighbour), with the label on its left (``label = key``, or the key alone when
    ``label`` is None).
    """
    if not images_by_beta:
        raise ValueError("plot_beta_walk: no rows")
    rows = [(b, as_images(v)) for b, v in images_by_beta.items()]
    shapes = {v.shape[1:] for _, v in rows}
    if len(shapes) != 1:
        raise ValueError(f"plot_beta_walk: rows have different image shapes {sorted(shapes)}")
    if any(v.shape[0] == 0 for _, v in rows):
        raise ValueError("plot_beta_walk: a row has no images")
    ncol = max(v.shape[0] for _, v in rows)
    strips = []
    for _, v in rows:
        if v.shape[0] < ncol:                      # pad a short row with empty tiles
            v = np.concatenate([v, np.ones((ncol - v.shape[0],) + v.shape[1:], v.dtype)])
        strips.append(make_grid(v, nrow=ncol, pad=pad))
    gh, gw = strips[0].shape[:2]
    width = float(np.clip(0.7 * ncol, 4.0, 18.0))
    row_h = max(0.5, width * gh / gw)
    fig, axes = plt.subplots(len(rows), 1, figsize=(width + 1.0, row_h * len(rows) + 0.4 +
                                                   (0.3 if title else 0.0)), squeeze=False)
    for ax, (beta, _), strip in zip(axes[:, 0], rows, strips):
        if strip.shape[2] == 1:
            ax.imshow(strip[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(strip, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
        b = f"{beta:g}" if isinstance(beta, (int, float)) else str(beta)
        ax.set_ylabel(f"{label} = {b}" if label else b, rotation=0, ha="right", va="center", fontsize=10)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- toy 2-D

def plot_toy_density(samples, path, reference=None, log_density_fn=None,
                     lim: float | None = None, n: int = 200, title: str | None = None,
                     hist_above: int = 5000, density_title: str = "model density",
                     device=None) -> Path:
    """A 2-D toy set in one figure: reference data, model samples, model density.

    ``samples`` ``[N, 2]`` and ``reference`` ``[M, 2]`` (optional) are drawn as in
    :func:`energyvae.viz.plot_points_2d` (scatter, or a 2-D histogram from ``hist_above``
    points). ``log_density_fn`` (optional) maps a float32 tensor ``[K, 2]`` to ``[K]`` log
    densities (unnormalised is fine, e.g. ``-E(z)`` of an energy prior or a model's IW
    ln p(x)); it is shown as a heat map normalised on an ``n x n`` grid, as in
    :func:`energyvae.viz.plot_density_2d`. All panels share ``[-lim, lim]^2`` (default: the
    99.5% quantile of ``|coordinate|`` over the points, times 1.1).
    """
    p = _points(samples, "samples")
    r = None if reference is None else _points(reference, "reference")
    if lim is None:
        lim = auto_lim(p, r, default=4.0)
    lim = float(lim)
    if lim <= 0 or n < 2:
        raise ValueError(f"plot_toy_density: need lim > 0 and n >= 2, got lim={lim}, n={n}")
    panels = ([("reference", r)] if r is not None else []) + [("samples", p)]
    k = len(panels) + (log_density_fn is not None)
    fig, axes = plt.subplots(1, k, figsize=(4.2 * k + (0.6 if log_density_fn else 0), 4.3),
                             squeeze=False)
    axes = axes[0]
    for ax, (name, data) in zip(axes, panels):
        _draw_points(ax, data, lim, name, hist_above)
    if log_density_fn is not None:
        dens = density_grid(log_density_fn, lim, n, device=device)
        ax = axes[-1]
        im = ax.imshow(dens, origin="lower", extent=(-lim, lim, -lim, lim), cmap="viridis",
                       interpolation="nearest", aspect="equal")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(density_title, fontsize=10)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def save_compare(images, titles, path) -> Path:
    """One row of ``[C, H, W]`` images in [0, 1], each under its title, as a PNG figure."""
    tiles = as_images(torch.stack(list(images)))
    fig, axes = plt.subplots(1, len(tiles), figsize=(2.2 * len(tiles), 2.5), squeeze=False)
    for ax, tile, title in zip(axes[0], tiles, titles):
        show_image(ax, tile, title)
    return save_figure(fig, path)
