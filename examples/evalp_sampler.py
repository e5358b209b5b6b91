"""EVaLP (paper 003): an EBM prior whose samples come from a sampler network trained with it,
in place of MCMC.

    python examples/evalp_sampler.py                # under a minute on one CPU core
"""
import shutil

from energyvae import load_config, train_run

# the tilted energy (N(0, I) times an MLP factor) and a flow sampler: the settings of benchmarks/evalp.py
prior = ("model.prior={name: ebm, energy: {name: tilted, hidden: [64, 64]}, "
         "scheme: {name: evalp, sampler_net: flow}}")
cfg = load_config("digits_vae", ["train.steps=300", "train.progress=false", "eval.iw_samples=0",
                                 prior, "run.dir=runs/examples/evalp"])
shutil.rmtree(cfg.run.dir, ignore_errors=True)      # a rerun starts afresh
result = train_run(cfg)
print("test:", result["metrics"]["test"], f"({result['metrics']['units']})")
print("samples from the sampler network:", result["paths"]["samples"])
