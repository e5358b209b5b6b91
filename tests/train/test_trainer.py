"""Trainer: resume equals an uninterrupted run; divergence never overwrites a checkpoint."""
import json

import pytest
import torch

from energyvae.errors import CheckpointError, ConfigError, DivergenceError
from energyvae.runs import prepare
from energyvae.train import LAST, Trainer, load_checkpoint
from helpers import make_cfg, poison_loss, run






def test_resume_matches_uninterrupted_run(tmp_path, kill_training_at):
    ref = run(make_cfg(tmp_path / "ref"))

    cfg = make_cfg(tmp_path / "killed")
    kill_training_at(12, lambda: run(cfg))
    killed = load_checkpoint(tmp_path / "killed" / "checkpoints" / LAST)
    assert killed["step"] == 10 and killed["seconds"] > 0
    data, model = prepare(cfg)
    resumed = Trainer(cfg, model, data, resume=True)
    summary = resumed.fit()
    # the training time keeps counting across the kill: earlier session + this one
    assert summary["seconds"] == pytest.approx(killed["seconds"] + summary["seconds_this_session"], rel=1e-6)
    assert load_checkpoint(tmp_path / "killed" / "checkpoints" / LAST)["seconds"] >= killed["seconds"]

    for (k, a), b in zip(ref.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    for a, b in zip(ref.ema.model.parameters(), resumed.ema.model.parameters()):
        assert torch.equal(a, b)
    lines = lambda d: [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()]
    ref_lines, res_lines = lines(tmp_path / "ref"), lines(tmp_path / "killed")
    strip = lambda recs: [{k: v for k, v in r.items() if k != "sec_per_step"} for r in recs]
    assert strip(ref_lines) == strip(res_lines)


def test_refuses_to_overwrite_and_to_resume_nothing(tmp_path):
    cfg = make_cfg(tmp_path / "r", steps=5)
    run(cfg)
    with pytest.raises(ConfigError, match="--resume"):
        run(cfg)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        run(make_cfg(tmp_path / "empty"), resume=True)


def test_nan_stops_without_overwriting_checkpoint(tmp_path, monkeypatch):
    cfg = make_cfg(tmp_path / "nan")
    data, model = prepare(cfg)
    poison_loss(monkeypatch, model, at_step=7)
    trainer = Trainer(cfg, model, data)
    path = tmp_path / "nan" / "checkpoints" / LAST
    with pytest.raises(DivergenceError, match=r"non-finite loss .* at step 8"):
        trainer.fit()
    assert load_checkpoint(path)["step"] == 5
    assert all(torch.isfinite(v).all() for v in load_checkpoint(path)["model"].values())


def test_several_optimizers_and_schedules(tmp_path):
    """A component with its own update and every=2 gets its own Adam, stepped every 2 steps."""
    from energyvae.models.base import UpdateSpec

    cfg = make_cfg(tmp_path / "multi", steps=6)
    data, model = prepare(cfg)
    extra = torch.nn.Parameter(torch.zeros(3))
    model.register_parameter("extra", extra)
    model.prior.updates = lambda: [UpdateSpec("aux", [extra], lr=0.1, every=2, order=1)]
    model.prior.update_loss = lambda name, x, state: (((extra - state["z_posterior"].mean(0)) ** 2).sum(), {})
    trainer = Trainer(cfg, model, data)
    assert [u.name for u in trainer.updates] == ["vae", "aux"]
    assert all(p is not extra for p in trainer.updates[0].params)
    trainer.fit()
    assert trainer.optimizers["aux"].state[extra]["step"].item() == 3
    assert trainer.optimizers["aux"].param_groups[0]["lr"] == 0.1


def test_ema_warm_up_forgets_the_initial_weights():
    """d_t = min(decay, (1 + t) / (10 + t)): the first update keeps 1/10 of the initial weights,
    and after 1000 steps at decay 0.999 the initial weights weigh < 1e-3 (not 0.999^1000 = 37 %)."""
    from energyvae.train.ema import EMA
    model = torch.nn.Linear(3, 1)
    with torch.no_grad():
        model.weight.zero_()
    ema = EMA(model, 0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model, 0)
    torch.testing.assert_close(ema.model.weight, torch.full((1, 3), 0.9))
    for t in range(1, 1000):
        ema.update(model, t)
    init_weight = 1.0 - ema.model.weight.mean().item()
    assert 0 < init_weight < 1e-3


def test_hflip_augmentation_is_deterministic_and_resume_stays_exact(tmp_path, kill_training_at):
    """data.augment: [hflip] flips some training images; the same step gives the same flips in a
    fresh trainer, and a killed run resumes to the uninterrupted run's weights."""
    from energyvae.config import build_config

    def cfg(d, augment, binarize=True):
        c = make_cfg(d)
        raw = dict(c.raw)
        raw["data"] = {**raw["data"], "augment": augment, "binarize": binarize}
        return build_config(raw)
    # grey levels (no random binarization) so that a flip is visible as an exact mirror image
    plain, flipped = cfg(tmp_path / "plain", [], False), cfg(tmp_path / "flip", ["hflip"], False)
    data, model = prepare(plain)
    t0 = Trainer(plain, model, data)
    data, model = prepare(flipped)
    t1, t2 = Trainer(flipped, model, data), Trainer(flipped, *reversed(prepare(flipped)))
    x0, x1 = t0.batch(3), t1.batch(3)
    same = (x0 == x1).flatten(1).all(1)
    mirrored = (x0.flip(-1) == x1).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 0 < int((~same).sum()) < len(x0)
    assert torch.equal(t1.batch(3), t2.batch(3))
    ref = run(cfg(tmp_path / "ref", ["hflip"]))
    killed = cfg(tmp_path / "killed", ["hflip"])
    kill_training_at(12, lambda: run(killed))
    resumed = run(killed, resume=True)
    for a, b in zip(ref.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
