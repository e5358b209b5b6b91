"""Figures: image grids, reconstruction pairs, loss curves and 2-D sample / density plots.

Every ``save_*`` / ``plot_*`` function creates the parent folders of ``path``, writes one PNG
and returns its :class:`~pathlib.Path`. Image inputs are float ``[N, C, H, W]`` (torch tensor
or numpy array) with values in [0, 1] (clamped; NaN shown as 0) and ``C`` in {1, 3}.
Image grids are written with PIL directly, pixel-exact (no resampling other than an integer
nearest-neighbour upscale); the plots use matplotlib's Agg backend.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from ..atomic import atomic_write  # noqa: E402
from ..imaging.statistics import as_images, as_numpy  # noqa: E402

#: tiles smaller than this (in pixels) are upscaled by an integer factor in saved grids
MIN_TILE_PX = 32


def _prepare(path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def make_grid(images, nrow: int | None = None, pad: int = 1,
              pad_value: float = 1.0) -> np.ndarray:
    """Tile images into one ``uint8`` array of shape ``[H_grid, W_grid, C]``.

    ``nrow`` is the number of images per row (as in torchvision; default ``ceil(sqrt(N))``);
    the grid has ``rows = ceil(N / nrow)`` rows and ``cols = min(nrow, N)`` columns. Image
    ``k`` sits in row ``r = k // nrow``, column ``c = k % nrow`` with its top-left pixel at
    ``(pad + r*(H+pad), pad + c*(W+pad))``, so ``H_grid = rows*(H+pad) + pad`` and
    ``W_grid = cols*(W+pad) + pad``. Padding and empty
    cells have value ``pad_value`` (in [0, 1]). Pixel values are ``round(255 * clamp(x))``.
    """
    x = as_images(images)
    n, c, h, w = x.shape
    if n == 0:
        raise ValueError("make_grid: no images")
    nrow = int(nrow) if nrow else math.ceil(math.sqrt(n))
    if nrow < 1 or pad < 0:
        raise ValueError(f"make_grid: need nrow >= 1 and pad >= 0, got nrow={nrow}, pad={pad}")
    ncol, rows = min(nrow, n), math.ceil(n / nrow)
    grid = np.full((rows * (h + pad) + pad, ncol * (w + pad) + pad, c),
                   float(np.clip(pad_value, 0.0, 1.0)), dtype=np.float32)
    for k in range(n):
        top, left = pad + (k // nrow) * (h + pad), pad + (k % nrow) * (w + pad)
        grid[top:top + h, left:left + w] = x[k].transpose(1, 2, 0)
    return np.round(grid * 255.0).astype(np.uint8)


def _write_png(grid: np.ndarray, path, scale: int) -> Path:
    path = _prepare(path)
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    # uint8 [H, W] -> mode "L", uint8 [H, W, 3] -> mode "RGB"
    image = Image.fromarray(np.ascontiguousarray(grid[..., 0] if grid.shape[2] == 1 else grid))
    atomic_write(path, lambda p: image.save(p, format="PNG"))
    return path


def _auto_scale(h: int, w: int, scale: int | None) -> int:
    if scale is not None:
        return max(1, int(scale))
    return max(1, math.ceil(MIN_TILE_PX / max(1, min(h, w))))


def save_image_grid(images, path, nrow: int | None = None, pad: int = 1,
                    scale: int | None = None, pad_value: float = 1.0) -> Path:
    """Write ``images`` ``[N, C, H, W]`` in [0, 1] as a PNG grid (see :func:`make_grid`).

    The whole grid is upscaled by the integer ``scale`` with nearest neighbour (default: the
    smallest factor making each tile at least ``MIN_TILE_PX`` = 32 pixels, e.g. 4 for 8x8
    images, 2 for 28x28, 1 for 32x32), so padding lines become ``scale`` pixels wide.
    """
    x = as_images(images)
    grid = make_grid(x, nrow=nrow, pad=pad, pad_value=pad_value)
    return _write_png(grid, path, _auto_scale(x.shape[2], x.shape[3], scale))


def save_reconstruction_pairs(x, x_hat, path, ncol: int | None = None, pad: int = 1,
                              scale: int | None = None, pad_value: float = 1.0) -> Path:
    """Write inputs and reconstructions as a PNG: a row of inputs above its reconstructions.

    ``x`` and ``x_hat`` are ``[N, C, H, W]`` in [0, 1] of the same shape. With ``ncol``
    images per row (default ``min(N, 16)``), rows alternate inputs / reconstructions: row
    ``2r`` holds inputs ``r*ncol .. r*ncol+ncol-1`` and row ``2r+1`` their reconstructions
    (a short last chunk is filled with ``pad_value``).
    """
    a, b = as_images(x), as_images(x_hat)
    if a.shape != b.shape:
        raise ValueError(f"x and x_hat must have the same shape, got {a.shape} and {b.shape}")
    n = a.shape[0]
    if n == 0:
        raise ValueError("save_reconstruction_pairs: no images")
    ncol = int(ncol) if ncol else min(n, 16)
    chunks = math.ceil(n / ncol)
    tiles = np.full((2 * chunks * ncol,) + a.shape[1:], float(pad_value), dtype=np.float32)
    for r in range(chunks):
        part = slice(r * ncol, min(n, (r + 1) * ncol))
        m = part.stop - part.start
        tiles[2 * r * ncol: 2 * r * ncol + m] = a[part]
        tiles[(2 * r + 1) * ncol: (2 * r + 1) * ncol + m] = b[part]
    grid = make_grid(tiles, nrow=ncol, pad=pad, pad_value=pad_value)
    return _write_png(grid, path, _auto_scale(a.shape[2], a.shape[3], scale))


def _ema(values: np.ndarray, smoothing: float) -> np.ndarray:
    """Debiased exponential moving average (as TensorBoard's smoothing slider)."""
    out = np.empty_like(values)
    acc, weight = 0.0, 0.0
    for i, v in enumerate(values):
        acc = smoothing * acc + (1.0 - smoothing) * v
        weight = smoothing * weight + (1.0 - smoothing)
        out[i] = acc / weight
    return out


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


_NON_METRIC_KEYS = {"step", "split", "epoch", "time", "wall_time", "elapsed", "lr"}


def plot_loss_curves(records: Iterable[Mapping], path, keys: Sequence[str] | None = None,
                     smoothing: float = 0.9) -> Path:
    """One subplot per metric with train and val curves, from ``metrics.jsonl`` records.

    ``records``: dicts with ``"step"``, ``"split"`` (``"train"``, ``"val"``, any other split
    is drawn too) and numeric metrics. ``keys`` default: every numeric key in order of first
    appearance, except ``step``, ``epoch``, ``time``, ``wall_time``, ``elapsed`` and ``lr``.
    The raw train curve is drawn faintly with its EMA (``smoothing`` in [0, 1), debiased) on
    top; other splits are drawn as lines with markers. Non-finite values are skipped.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    records = [r for r in records if isinstance(r, Mapping)]
    if keys is None:
        keys = []
        for r in records:
            for k, v in r.items():
                if k not in _NON_METRIC_KEYS and k not in keys and _is_number(v):
                    keys.append(k)
    keys = list(keys)
    splits = []
    for r in records:
        s = str(r.get("split", "train"))
        if s not in splits:
            splits.append(s)
    ncols = min(3, max(1, len(keys)))
    nrows = max(1, math.ceil(len(keys) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.5 * ncols, 3.2 * nrows), squeeze=False)
    try:
        if not keys:
            axes[0, 0].text(0.5, 0.5, "no metrics", ha="center", va="center")
            axes[0, 0].set_axis_off()
        for i, ax in enumerate(axes.flat):
            if i >= len(keys):
                if keys:
                    ax.set_axis_off()
                continue
            key = keys[i]
            for split in splits:
                pts = [(float(r["step"]), float(r[key])) for r in records
                       if str(r.get("split", "train")) == split and _is_number(r.get(key))
                       and _is_number(r.get("step")) and math.isfinite(float(r[key]))]
                if not pts:
                    continue
                pts.sort(key=lambda p: p[0])
                steps, vals = np.array(pts).T
                if split == "train":
                    line, = ax.plot(steps, vals, alpha=0.25, lw=0.8)
                    ax.plot(steps, _ema(vals, smoothing), color=line.get_color(), lw=1.5,
                            label="train (EMA)" if smoothing > 0 else "train")
                else:
                    ax.plot(steps, vals, marker="o", ms=3, lw=1.2, label=split)
            ax.set_title(key)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=8)
        fig.tight_layout()
        path = _prepare(path)
        atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    finally:
        plt.close(fig)
    return path


def _points(points, what: str) -> np.ndarray:
    p = as_numpy(points)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"{what} must be [N, 2], got shape {p.shape}")
    return p[np.isfinite(p).all(axis=1)]


def _draw_points(ax, p: np.ndarray, lim: float, title: str, hist_above: int) -> None:
    if len(p) >= hist_above:
        ax.hist2d(p[:, 0], p[:, 1], bins=100, range=[[-lim, lim], [-lim, lim]], cmap="viridis")
    else:
        ax.scatter(p[:, 0], p[:, 1], s=2, alpha=0.5, linewidths=0)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(f"{title} (n={len(p)})", fontsize=10)


def auto_lim(p: np.ndarray, r: np.ndarray | None, default: float) -> float:
    """1.1 x the 99.5% quantile of |coordinate| over both point sets (``default`` if empty)."""
    both = p if r is None else np.concatenate([p, r])
    lim = 1.1 * float(np.quantile(np.abs(both), 0.995)) if len(both) else default
    return lim if math.isfinite(lim) and lim > 0 else default


def plot_points_2d(points, path, reference=None, title: str | None = None,
                   lim: float | None = None, hist_above: int = 5000) -> Path:
    """Plot 2-D samples ``[N, 2]``, beside ``reference`` data ``[M, 2]`` (left) if given.

    A scatter plot, or a 2-D histogram when a set has at least ``hist_above`` points. Axes
    span ``[-lim, lim]`` (default: the 99.5% quantile of ``|coordinate|`` over both sets,
    times 1.1). Non-finite points are dropped.
    """
    p = _points(points, "points")
    r = None if reference is None else _points(reference, "reference")
    if lim is None:
        lim = auto_lim(p, r, default=1.0)
    panels = [(r, "reference"), (p, "samples")] if r is not None else [(p, "samples")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    try:
        for ax, (data, name) in zip(axes.flat, panels):
            _draw_points(ax, data, float(lim), name, hist_above)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        path = _prepare(path)
        atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    finally:
        plt.close(fig)
    return path


def density_grid(log_density_fn: Callable[[torch.Tensor], torch.Tensor], lim: float, n: int,
                 normalize: bool = True, device=None, chunk: int = 65536) -> np.ndarray:
    """``exp(log_density_fn)`` on an ``n x n`` grid over ``[-lim, lim]^2`` (rows = y), either
    normalised over the grid (stable for unnormalised energies) or as is; non-finite -> 0."""
    axis = torch.linspace(-lim, lim, n)
    gy, gx = torch.meshgrid(axis, axis, indexing="ij")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    outs = []
    with torch.no_grad():
        for part in grid.split(chunk):
            out = log_density_fn(part.to(device) if device is not None else part)
            outs.append(as_numpy(out).reshape(-1))
    logp = np.concatenate(outs).astype(np.float64)
    if logp.shape[0] != n * n:
        raise ValueError(f"log_density_fn returned {logp.shape[0]} values for {n * n} points")
    logp[~np.isfinite(logp)] = -np.inf
    if not normalize:
        return np.exp(np.minimum(logp, 700.0)).reshape(n, n)
    m = logp.max()
    if not np.isfinite(m):
        return np.zeros((n, n))
    w = np.exp(logp - m)
    return (w / (w.sum() * (2.0 * lim / (n - 1)) ** 2)).reshape(n, n)


def plot_density_2d(log_density_fn: Callable[[torch.Tensor], torch.Tensor], path,
                    lim: float = 4.0, n: int = 200, normalize: bool = True,
                    title: str | None = None, device=None, chunk: int = 65536) -> Path:
    """Heat map of ``exp(log_density_fn(z))`` on an ``n x n`` grid over ``[-lim, lim]^2``.

    ``log_density_fn`` takes a float32 tensor ``[K, 2]`` (on ``device``, default CPU; called
    under ``torch.no_grad()`` in chunks of ``chunk`` rows) and returns ``[K]`` or ``[K, 1]``
    log densities (unnormalized is fine). With ``normalize=True`` (default) the density is
    normalized over the grid (``exp(l - logsumexp(l)) / cell_area``), which is stable for
    unnormalized energies; with ``normalize=False`` ``exp(l)`` is shown as is. Non-finite
    log densities are shown as zero density.
    """
    if n < 2 or lim <= 0:
        raise ValueError(f"plot_density_2d: need n >= 2 and lim > 0, got n={n}, lim={lim}")
    dens = density_grid(log_density_fn, lim, n, normalize=normalize, device=device, chunk=chunk)
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    try:
        im = ax.imshow(dens, origin="lower", extent=(-lim, lim, -lim, lim), cmap="viridis",
                       interpolation="nearest", aspect="equal")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(title or ("density (normalized on grid)" if normalize else "exp(log density)"),
                     fontsize=10)
        fig.tight_layout()
        path = _prepare(path)
        atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    finally:
        plt.close(fig)
    return path
