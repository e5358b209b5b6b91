"""energyvae: energy-based variational autoencoders in PyTorch.

Docstrings cite papers by key (paper 000, 001, 002, 003, NCP-VAE, DT-VAE) and equations and
sections of ``docs/methods.md``, where the paper key gives each full reference; the package's
layer order is in :mod:`energyvae.layers` (docs/layout.md).

The public Python API (imported lazily, so ``import energyvae`` and the CLI start fast)::

    from energyvae import VAE, Trainer, load_config, train_run, load_run, energy_score

    vae = VAE.from_parts((1, 8, 8), latent_dim=8, reconstruction="energy_score")  # names, specs or nn.Modules
    out = vae(x)                                  # ModelOutput: out.loss, out.recon, out.kl, out.z, ...
    cfg = load_config("digits_vae", ["train.steps=500"])   # a shipped config by name, or a YAML file
    result = train_run(cfg)                       # what `energyvae train` does: the run folder, metrics, figures
    cfg, data, model = load_run("runs/digits_vae")          # a trained run back (no data needed to sample)

Registries (``MODELS``, ``PRIORS``, ``RECONSTRUCTIONS``, ``CALIBRATORS``, ``ENCODERS``,
``DECODERS``, ``POSTERIORS``) take new parts by ``@PRIORS.register("name", Params)``; other
packages add theirs through the ``energyvae.plugins`` entry-point group
(:func:`energyvae.registry.load_plugins`).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # models and their parts
    "VAE": "energyvae.models.vae", "VAEParams": "energyvae.models.vae", "ModelOutput": "energyvae.models.vae",
    "ModelContext": "energyvae.models.base", "build_model": "energyvae.models",
    "MODELS": "energyvae.models.base", "PRIORS": "energyvae.models.base",
    "RECONSTRUCTIONS": "energyvae.models.base", "CALIBRATORS": "energyvae.models.base",
    "POSTERIORS": "energyvae.models.base", "ENCODERS": "energyvae.nets", "DECODERS": "energyvae.nets",
    "Prior": "energyvae.models.priors", "StandardNormal": "energyvae.models.priors",
    "EBMPrior": "energyvae.models.priors.ebm", "FlowPrior": "energyvae.models.priors.flow",
    "EnergyScore": "energyvae.models.reconstruction.energy_score",
    "FastEnergyScore": "energyvae.models.reconstruction.energy_score",
    "energy_score": "energyvae.models.reconstruction.energy_score",
    # configs, data, training, runs, evaluation
    "Config": "energyvae.config", "load_config": "energyvae.config", "build_config": "energyvae.config",
    "shipped_configs": "energyvae.config", "DataConfig": "energyvae.data", "load_data": "energyvae.data",
    "Trainer": "energyvae.train", "train_run": "energyvae.commands.train", "load_run": "energyvae.runs",
    "prepare": "energyvae.runs", "evaluate_run": "energyvae.commands.evaluate",
    "Registry": "energyvae.registry", "load_plugins": "energyvae.registry",
    "EnergyVAEError": "energyvae.errors", "ConfigError": "energyvae.errors",
    "DataError": "energyvae.errors", "CheckpointError": "energyvae.errors",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'energyvae' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
