"""Figures written as PNG files (matplotlib Agg backend; image grids with PIL)."""
from .figures import (
    make_grid,
    plot_density_2d,
    plot_loss_curves,
    plot_points_2d,
    save_image_grid,
    save_reconstruction_pairs,
)

__all__ = [
    "make_grid",
    "plot_density_2d",
    "plot_loss_curves",
    "plot_points_2d",
    "save_image_grid",
    "save_reconstruction_pairs",
]
