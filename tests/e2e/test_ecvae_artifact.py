"""Regression test for the periodic grid of conv EC-VAE samples on Fashion-MNIST (issue 12;
diagnosis in energyvae/models/energy_calibration.py, evidence in benchmarks/results/ecvae_grid.md).

The grid grows out of an energy whose scale is left free: with Eq. 2 alone, e_real and e_cal
drift and swing by units within the first hundred steps and by tens later (the diagnosis
runs' training figure, ecvae_grid_training.png), the chain's moves grow with |grad E|, and the decoder copies the
pattern the chain writes. A short run cannot wait for the grid itself, so the test checks
the measurable precursors and the outcome it can reach in 120 steps, on the shipped CPU config
(configs/ecvae_fashion_cpu.yaml) at batch 32:

- the energies stay bounded: every logged |e_real|, |e_cal| < 1 (the regulariser's optimum is
  +-1 / (2 alpha) = +-0.5 for the gap it is given);
- the calibration constraint holds: every logged L_con < eps1;
- the samples have no more period-2/4 lattice power than the data (viz.analysis
  lattice_power_fraction ratio < 1.5).

The old settings (s = 0.1, no regulariser) run under the same budget fail the first check, so
the test can fail.
"""
from pathlib import Path

import pytest
import torch

from energyvae.config import load_config
from energyvae.evaluation.features import to_unit_images
from energyvae.commands.train import train_run
from energyvae.runs import load_run
from energyvae.train.logger import read_metrics
from energyvae.viz.analysis import lattice_power_fraction

ROOT = Path(__file__).resolve().parents[2]
FASHION = Path("/usr/share/datasets/fashion-mnist")
SHORT = ["train.steps=120", "train.epochs=null", "train.batch_size=32", "train.log_every=10",
         "train.eval_every=1000000", "train.checkpoint_every=1000", "train.progress=false", "eval.iw_samples=0",
         "train.eval_batches=1", "train.seed=0"]
OLD = ["model.calibrators.0.step_size=0.1", "model.calibrators.0.energy_reg=0.0"]


def short_run(tmp_path, name, extra=()):
    run = tmp_path / name
    train_run(load_config(ROOT / "configs/ecvae_fashion_cpu.yaml", [*SHORT, *extra, f"run.dir={run}"]))
    logs = [r for r in read_metrics(run) if r.get("split") == "train"]
    energies = [abs(r[k]) for r in logs for k in ("ec/e_real", "ec/e_cal")]
    return run, max(energies), max(r["ec/l_con"] for r in logs)


@pytest.mark.skipif(not FASHION.is_dir(), reason="dataset-fashion-mnist not installed")
def test_shipped_fashion_ecvae_keeps_the_energy_bounded_and_leaves_no_grid(tmp_path):
    torch.manual_seed(0)
    run, e_max, l_con_max = short_run(tmp_path, "fixed")
    assert e_max < 1.0, e_max
    assert l_con_max < 0.05, l_con_max
    _, data, model = load_run(run)
    torch.manual_seed(0)
    with torch.no_grad():
        fake = data.preprocess.to_unit(model.sample(500))
    ratio = lattice_power_fraction(fake) / lattice_power_fraction(to_unit_images(data, data.test.x[:500]))
    assert ratio < 1.5, ratio
    _, e_max_old, _ = short_run(tmp_path, "old", OLD)     # the negative control: the check can fail
    assert e_max_old > 1.0, e_max_old
