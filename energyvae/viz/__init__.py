"""Figures written as PNG files (matplotlib Agg backend; image grids with PIL)."""
from .figures import (  # noqa: F401
    make_grid,
    plot_density_2d,
    plot_loss_curves,
    plot_points_2d,
    save_image_grid,
    save_reconstruction_pairs,
)

from .analysis import (  # noqa: E402,F401
    image_spectrum,
    normalized_residuals,
    pixel_variance,
    plot_beta_walk,
    plot_residual_histogram,
    plot_spectra,
    plot_toy_density,
    plot_variance_map,
    radial_power_spectrum,
    save_compare,
    save_latent_walk,
)

