"""DT-VAE (Han et al. 2020; paper 000 Table 2's base): the conv digits VAE trained jointly with a
latent EBM E(x, z) by the divergence triangle, then the same with the energy score (+EnL): one
config line apart.

    python examples/dtvae_triangle.py            # under a minute on one CPU core
"""
import shutil

from energyvae import load_config, train_run

for name, extra in [("dtvae", []), ("dtvae_enl", ["model.reconstruction={name: energy_score, samples: 10}",
                                                  "model.kl_weight=0.01", "model.calibrators.0.weight=0.01"])]:
    cfg = load_config("dtvae_digits", ["train.steps=300", "train.progress=false", "eval.iw_samples=0",
                                       "train.eval_every=300", "train.checkpoint_every=300",
                                       f"run.dir=runs/examples/{name}", *extra])
    shutil.rmtree(cfg.run.dir, ignore_errors=True)      # a rerun starts afresh
    result = train_run(cfg)
    print(name, "test:", result["metrics"]["test"], "samples:", result["paths"]["samples"])
