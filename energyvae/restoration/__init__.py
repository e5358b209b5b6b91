"""Zero-shot image restoration with a trained (EC-)VAE (paper 001 §4.3): linear degradations
(:mod:`.operators`), latent Langevin + range-null composition (:mod:`.zero_shot`) and the
``energyvae restore`` pipeline on image files (:mod:`.files`)."""
from .operators import (OPERATORS, Colorize, Inpaint, Operator, RestorationError, SuperResolution,
                        box_mask, random_mask)
from .zero_shot import data_energy, langevin_latents, pinv_baseline, restore

__all__ = ["OPERATORS", "Colorize", "Inpaint", "Operator", "RestorationError", "SuperResolution",
           "box_mask", "random_mask", "data_energy", "langevin_latents", "pinv_baseline", "restore"]
