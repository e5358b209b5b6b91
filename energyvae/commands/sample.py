"""``energyvae sample`` and ``energyvae reconstruct``: PNG grids of a trained run's samples and
of test images above their reconstructions (also what the end of ``train`` draws)."""
from __future__ import annotations

from pathlib import Path

from ..viz import plot_points_2d, save_image_grid, save_reconstruction_pairs


def save_samples(path: Path, model, data, n: int, mcmc: int = 0) -> Path:
    """A grid of ``n`` samples (a 2-D scatter of at least 2000 for toy data); ``mcmc`` > 0 refines
    them by that many Langevin steps of the model's data-space energy (EC-VAE "w/ MCMC")."""
    draw = (lambda k: model.sample(k, mcmc=mcmc)) if mcmc else model.sample
    if data.kind == "image":
        return save_image_grid(data.preprocess.to_unit(draw(n)).cpu(), path)
    n = max(n, 2000)
    reference = data.test.x[:n] if len(data.test) else None
    return plot_points_2d(draw(n).cpu(), path, reference=reference, title="samples")


def save_reconstructions(path: Path, model, data, n: int, split: str = "test") -> Path:
    dev = next(model.parameters()).device
    x = data.preprocess(getattr(data, split).x[:n]).to(dev)
    x_hat = model.reconstruct(x)
    if data.kind == "image":
        to_unit = data.preprocess.to_unit
        return save_reconstruction_pairs(to_unit(x).cpu(), to_unit(x_hat).cpu(), path)
    return plot_points_2d(x_hat.cpu(), path, reference=x.cpu(), title="reconstructions")
