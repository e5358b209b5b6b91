"""EC-VAE (paper 001): the conv digits VAE with the energy calibrator (a spectral-norm ResNet
energy, conditional Langevin, primal-dual lambda), then samples refined by the energy's chain.

    python examples/ecvae_calibration.py            # under a minute on one CPU core
"""
import shutil
import torch

from energyvae import load_config, load_run, train_run
from energyvae.commands.sample import save_samples

cfg = load_config("ecvae_digits", ["train.steps=60", "train.progress=false", "eval.iw_samples=0",
                                   "train.eval_every=60", "train.checkpoint_every=60",
                                   "run.dir=runs/examples/ecvae"])
shutil.rmtree(cfg.run.dir, ignore_errors=True)      # a rerun starts afresh
result = train_run(cfg)
print("test:", result["metrics"]["test"])
cfg, data, model = load_run(cfg.run.dir)
torch.manual_seed(0)
print("samples refined by 15 Langevin steps:", save_samples(cfg.run_dir / "samples_mcmc15.png", model, data, 16, mcmc=15))
