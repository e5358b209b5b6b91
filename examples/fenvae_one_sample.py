"""FEnVAE (paper 000): the one-sample energy score (antithetic pair, the documented default)
on the digits VAE; compare its reconstruction error with EnVAE's in examples/envae_energy_score.py.

    python examples/fenvae_one_sample.py            # under a minute on one CPU core
"""
import shutil

from energyvae import load_config, train_run

cfg = load_config("digits_vae", ["train.steps=300", "train.progress=false", "eval.iw_samples=0",
                                 "model.reconstruction={name: fast_energy_score}",
                                 "run.dir=runs/examples/fenvae"])
shutil.rmtree(cfg.run.dir, ignore_errors=True)      # a rerun starts afresh
result = train_run(cfg)
print("test:", result["metrics"]["test"], f"({result['metrics']['units']})")
print("reconstructions:", result["paths"]["reconstructions"])
