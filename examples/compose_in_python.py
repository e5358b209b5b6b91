"""Compose a VAE from your own modules and train it with the library's loop: a custom encoder
(an nn.Module) with the energy-score objective, on the embedded digits.

    python examples/compose_in_python.py            # under a minute on one CPU core
"""
import shutil

import torch
from torch import nn

from energyvae import VAE, Trainer, load_config
from energyvae.data import load_data

cfg = load_config("digits_vae", ["train.steps=300", "train.progress=false", "run.dir=runs/examples/compose"])
data = load_data(cfg.data)
encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.SiLU(), nn.Linear(128, 2 * 8))   # 2 x latent_dim
model = VAE.from_parts(data.shape, latent_dim=8, encoder=encoder, reconstruction="energy_score",
                       value_range=data.preprocess.value_range)
out = model(data.preprocess(data.test.x[:8]))
print("before training:", {k: round(float(v), 3) for k, v in out.items() if torch.is_tensor(v) and v.dim() == 0})
shutil.rmtree(cfg.run.dir, ignore_errors=True)
Trainer(cfg, model, data).fit()
out = model(data.preprocess(data.test.x[:8]))
print("after training: ", {k: round(float(v), 3) for k, v in out.items() if torch.is_tensor(v) and v.dim() == 0})
