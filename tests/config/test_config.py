"""Config validation: unknown keys, wrong types and out-of-range values are one clear error."""
import pytest

from energyvae.config import apply_overrides, build_config, load_config
from energyvae.errors import ConfigError

BASE = {"data": {"name": "digits"}, "model": {"latent_dim": 4}, "train": {"steps": 10}}


def build(overrides):
    return build_config(apply_overrides(BASE, overrides))


def test_defaults_and_overrides():
    cfg = build(["train.lr=3e-4", "model.encoder.hidden=[32, 32]", "train.betas=[0.5, 0.9]"])
    assert cfg.train.lr == 3e-4 and cfg.train.betas == (0.5, 0.9)
    assert cfg.model[1].encoder == {"name": "mlp", "hidden": [32, 32]}
    assert cfg.raw["train"]["steps"] == 10


@pytest.mark.parametrize("override, message", [
    ("train.stpes=5", r"train\.stpes: unknown key"),
    ("nonsense.x=1", r"nonsense\.x: unknown key"),
    ("train.lr=-1", r"train: lr must be > 0"),
    ("train.batch_size=abc", r"train\.batch_size: expected int"),
    ("train.ema=1.5", r"ema must be in \[0, 1\)"),
    ("model.latent_dim=0", r"latent_dim must be > 0"),
    ("model.prior.name=nope", r"model\.prior\.name: unknown prior 'nope'"),
    ("model.encoder.hiddn=[3]", r"model\.encoder\.hiddn: unknown key"),
    ("model.reconstruction={name: gaussian, scale: weird}", r"model\.reconstruction\.scale: expected one of"),
    ("train={steps: 5, epochs: 3}", r"one of steps and epochs, not both"),
    ("data.name=nodata", r"data"),
])
def test_bad_values_raise_one_line(override, message):
    with pytest.raises(ConfigError, match=message) as e:
        build([override])
    assert "\n" not in str(e.value)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {steps: [1,\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["train.steps"])


def test_shipped_configs_validate():
    from pathlib import Path
    for path in sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")):
        load_config(path)


def test_overrides_index_lists():
    raw = {"model": {"calibrators": [{"name": "ec", "lr": 1.0}, {"name": "x"}]}}
    out = apply_overrides(raw, ["model.calibrators.0.lr=2.5", "model.calibrators.1.energy.name=mlp"])
    assert out["model"]["calibrators"] == [{"name": "ec", "lr": 2.5}, {"name": "x", "energy": {"name": "mlp"}}]
    assert raw["model"]["calibrators"][0]["lr"] == 1.0                 # the input is not modified
    appended = apply_overrides(raw, ["model.calibrators.2={name: calibrated_posterior}"])["model"]["calibrators"]
    assert appended[2] == {"name": "calibrated_posterior"} and len(raw["model"]["calibrators"]) == 2
    for bad, msg in [("model.calibrators.2.lr=1", "not an index"), ("model.calibrators.3={name: x}", "not an index"),
                     ("model.calibrators.a=1", "not an index"),
                     ("model.calibrators.0.lr.x=1", "'lr' is not a section")]:
        with pytest.raises(ConfigError, match=msg):
            apply_overrides(raw, [bad])


def test_extends_merges_and_sets_dotted_keys(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "run: {dir: runs/base}\nmodel: {latent_dim: 4, calibrators: [{name: ec, lr: 1.0}]}\ntrain: {steps: 7}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text(
        "extends: ../base.yaml\nrun: {dir: runs/child}\nmodel.calibrators.0.lr: 2.0\ntrain: {batch_size: 3}\n")
    from energyvae.config import read_yaml
    raw = read_yaml(tmp_path / "sub" / "child.yaml")
    assert raw == {"run": {"dir": "runs/child"}, "model": {"latent_dim": 4, "calibrators": [{"name": "ec", "lr": 2.0}]},
                   "train": {"steps": 7, "batch_size": 3}}
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        read_yaml(tmp_path / "loop.yaml")
    (tmp_path / "gone.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(ConfigError, match="not found"):
        read_yaml(tmp_path / "gone.yaml")
