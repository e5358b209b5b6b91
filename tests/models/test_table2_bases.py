"""Paper 000 Table 2's plug-in claim on its three bases: EC-VAE (the ``ec`` calibrator), DT-VAE
(the ``triangle`` calibrator) and NCP-VAE (tests/models/priors/test_ncp.py) train and resume bit-exactly with
the original loss, +EnL (``energy_score``) and +FEnL (``fast_energy_score``), one config line
apart."""
import pytest
import torch

from energyvae.config import build_config
from energyvae.train import LAST, load_checkpoint
from helpers import run


CALIBRATORS = {"ec": {"name": "ec", "steps": 2, "step_size": 0.1, "noise": 0.003,
                      "energy": {"name": "mlp", "hidden": [16]}},
               "triangle": {"name": "triangle", "x_net": {"name": "mlp", "hidden": [16]}, "features": 8,
                            "hidden": [16]}}


@pytest.mark.parametrize("calibrator", sorted(CALIBRATORS))
@pytest.mark.parametrize("reconstruction", [{"name": "gaussian", "scale": "calibrated"},
                                            {"name": "energy_score", "samples": 4},
                                            {"name": "fast_energy_score"}])
def test_base_with_each_reconstruction_trains_and_resumes_exactly(tmp_path, kill_training_at, reconstruction,
                                                                   calibrator):
    def cfg(d):
        return build_config({
            "run": {"dir": str(d)}, "data": {"name": "digits", "scale": "01"},
            "model": {"latent_dim": 3, "encoder": {"name": "mlp", "hidden": [16]},
                      "decoder": {"name": "mlp", "hidden": [16]}, "reconstruction": reconstruction,
                      "calibrators": [CALIBRATORS[calibrator]]},
            "train": {"steps": 12, "batch_size": 32, "eval_every": 4, "checkpoint_every": 4, "log_every": 4,
                      "progress": False, "ema": 0.9}})
    ref = run(cfg(tmp_path / "ref"))
    c = cfg(tmp_path / "k")
    kill_training_at(6, lambda: run(c))
    resumed = run(c, resume=True)
    a = load_checkpoint(tmp_path / "ref" / "checkpoints" / LAST)
    b = load_checkpoint(tmp_path / "k" / "checkpoints" / LAST)
    assert resumed.step == ref.step == 12
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    assert any(k.startswith("calibrators.0.") for k in a["model"])       # the EBM is part of the run
