"""EBM prior (paper 002): a GRBM energy p(z) ~ exp(-E(z)) trained by sliced score matching
jointly with the digits VAE, sampled by Gibbs-Langevin; the sampler's mixing diagnostic is printed.

    python examples/ebm_prior_ssm.py                # under a minute on one CPU core
"""
import shutil

from energyvae import load_config, load_run, train_run
from energyvae.evaluation.model_metrics import describe_diagnostics, prior_sampler_diagnostics

prior = "model.prior={name: ebm, energy: {name: grbm, hidden: 16}, scheme: {name: ssm, lr: 2.0e-4}}"
cfg = load_config("digits_vae", ["train.steps=300", "train.progress=false", "eval.iw_samples=0",
                                 "model.latent_dim=8", prior, "run.dir=runs/examples/ebm_prior"])
shutil.rmtree(cfg.run.dir, ignore_errors=True)      # a rerun starts afresh
result = train_run(cfg)
print("test:", result["metrics"]["test"], f"({result['metrics']['units']})")
_, _, model = load_run(cfg.run.dir)
print("prior", describe_diagnostics(prior_sampler_diagnostics(model, n=256, seed=0)))
