"""Every shipped config trains a few steps and writes its artifacts (tiny budget)."""
from pathlib import Path

import pytest

from energyvae.config import load_config
from energyvae.commands.train import train_run

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_runs(path, tmp_path):
    cfg = load_config(path)
    if cfg.data.name == "fashion-mnist" and not FASHION.exists():
        pytest.skip("dataset-fashion-mnist is not installed")
    tiny = ["train.epochs=null", "train.steps=4", "train.batch_size=16", "train.eval_every=2",
            "train.checkpoint_every=2", "train.eval_batches=1", "train.progress=false", "eval.iw_samples=3",
            "eval.iw_max_examples=10", "eval.n_samples=4", "data.limit=200"]
    extra = []
    init_run = getattr(cfg.model[1], "init_run", None)
    if init_run:   # starts from a trained run (data_ebm init: run): train the config that writes it, tiny
        init_cfg = next(p for p in CONFIGS if load_config(p).run.dir == init_run)
        train_run(load_config(init_cfg, [f"run.dir={tmp_path / 'init'}", *tiny]))
        extra = [f"model.init_run={tmp_path / 'init'}"]
    cfg = load_config(path, [f"run.dir={tmp_path}", *tiny, *extra])
    result = train_run(cfg)
    for key in ("samples", "reconstructions", "loss_curves", "metrics"):
        assert Path(result["paths"][key]).stat().st_size > 0
    assert result["metrics"]["test"]["loss"] == result["metrics"]["test"]["loss"]   # not NaN
