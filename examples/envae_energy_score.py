"""EnVAE (paper 000): the digits VAE with the energy-score reconstruction loss (M samples per
image), against the same VAE with its Bernoulli likelihood, on the same seed and steps.

    python examples/envae_energy_score.py          # under a minute on one CPU core
"""
import shutil

from energyvae import load_config, train_run

STEPS = ["train.steps=300", "train.progress=false", "eval.iw_samples=0"]
for name, recon in (("bernoulli", "model.reconstruction={name: bernoulli}"),
                    ("energy score, M = 4", "model.reconstruction={name: energy_score, samples: 4}")):
    cfg = load_config("digits_vae", [*STEPS, recon, f"run.dir=runs/examples/envae_{name.split()[0]}"])
    shutil.rmtree(cfg.run.dir, ignore_errors=True)      # a rerun starts afresh
    result = train_run(cfg)
    print(f"{name:22s} test: {result['metrics']['test']}  ({result['metrics']['units']})")
    print(f"{'':22s} samples: {result['paths']['samples']}")
