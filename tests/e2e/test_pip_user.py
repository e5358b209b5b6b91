"""What a pip user gets (issue 16): shipped configs by name from any folder, portable runs
(sample without the training data), a plugin registered by entry point, the Python API
(``model(x)``, composition from modules), the CLI's listing / dry-run / version, learning-rate
schedules and AdamW, merged evaluations."""
import copy
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from helpers import ROOT, TINY, cli

SMALL = [*TINY, "train.steps=4", "eval.iw_samples=0", "eval.n_samples=4", "eval.n_reconstructions=4"]


def _npz(path, n=200):
    import numpy as np
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 256, (n, 1, 8, 8), dtype=np.uint8))
    return path


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """energyvae built as a wheel and installed (without dependencies: they are this venv's)
    into a target folder, beside a plugin package registering a prior ``tiny_normal``."""
    root = tmp_path_factory.mktemp("pip")
    wheels, target = root / "wheels", root / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    source = root / "source"           # a copy: the build leaves nothing in the repository
    shutil.copytree(ROOT / "energyvae", source / "energyvae", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, source],
                   check=True, capture_output=True, timeout=300)
    plugin = root / "plugin"
    (plugin / "tiny_plugin").mkdir(parents=True)
    (plugin / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "tiny-plugin"
        version = "0.0.1"
        [project.entry-points."energyvae.plugins"]
        tiny = "tiny_plugin"
        """))
    (plugin / "tiny_plugin" / "__init__.py").write_text(textwrap.dedent('''
        """A prior registered by another package: N(0, s^2 I) with a fixed scale."""
        import dataclasses, math, torch
        from energyvae.models.base import PRIORS
        from energyvae.models.priors import Prior

        @dataclasses.dataclass
        class TinyParams:
            scale: float = 1.0

        class TinyNormal(Prior):
            def __init__(self, latent_dim, scale):
                super().__init__(latent_dim)
                self.scale = scale
                self.register_buffer("anchor", torch.zeros(()))
            def log_prob(self, z):
                s = self.scale
                return (-0.5 * (z / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)).sum(-1)
            def sample(self, n):
                return torch.randn(n, self.latent_dim, device=self.anchor.device) * self.scale

        @PRIORS.register("tiny_normal", TinyParams)
        def _tiny(p, *, latent_dim, **_):
            return TinyNormal(latent_dim, p.scale)
        '''))
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, plugin],
                   check=True, capture_output=True, timeout=300)
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", target,
                    *sorted(wheels.glob("*.whl"))], check=True, capture_output=True, timeout=300)
    return target


def _outside(installed, cwd, *args, timeout=240):
    """``energyvae ARGS`` from ``cwd`` (outside the repository), importing the installed wheel."""
    env = {**os.environ, "PYTHONPATH": str(installed), "OMP_NUM_THREADS": "1", "PYTHONSAFEPATH": "1"}
    code = "import sys, energyvae.cli; sys.exit(energyvae.cli.main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_wheel_trains_a_shipped_config_by_name_and_samples_without_the_data(installed, tmp_path):
    where = _outside(installed, tmp_path, "configs")
    assert where.returncode == 0 and "digits_vae" in where.stdout, where.stderr
    assert str(installed) in where.stdout                      # the wheel's copy, not the repo's
    data = _npz(tmp_path / "x.npz")
    res = _outside(installed, tmp_path, "train", "--config", "digits_vae", *SMALL, "data.name=array",
                   f"data.path={data}", "run.dir=run")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "training run from step 0" in res.stdout and "parameters" in res.stdout
    data.unlink()                                              # the run moves to a machine without it
    res = _outside(installed, tmp_path, "sample", "run", "--n", 4, "--out", "s.png")
    assert res.returncode == 0, res.stderr[-2000:]
    # sampling reads only the run's data.json: the data is never loaded, so nothing to warn about
    assert (tmp_path / "s.png").stat().st_size > 0 and "Traceback" not in res.stderr
    res = _outside(installed, tmp_path, "reconstruct", "run")        # needs the data: one line
    assert res.returncode == 2 and "x.npz" in res.stderr.splitlines()[-1]
    res = _outside(installed, tmp_path, "evaluate", "run", "--metrics", "mse")
    assert res.returncode == 2 and "needs the run's data" in res.stderr


def test_a_plugin_prior_trains_from_the_cli(installed, tmp_path):
    res = _outside(installed, tmp_path, "list", "priors")
    assert res.returncode == 0 and "tiny_normal" in res.stdout, res.stdout + res.stderr
    res = _outside(installed, tmp_path, "train", "--config", "digits_vae", *SMALL,
                   "model.prior.name=tiny_normal", "model.prior.scale=0.5", "run.dir=run")
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]["loss"] > 0


def test_composing_from_modules_gives_the_configs_loss():
    from energyvae import VAE, load_config
    from energyvae.runs import prepare
    cfg = load_config("digits_vae", [*TINY])
    data, from_config = prepare(cfg)
    torch.manual_seed(cfg.train.seed)
    by_names = VAE.from_parts(data.shape, 3, encoder={"name": "mlp", "hidden": [16]},
                              decoder={"name": "mlp", "hidden": [16]}, reconstruction="bernoulli",
                              value_range=data.preprocess.value_range)
    by_modules = VAE.from_parts(data.shape, 3, encoder=copy.deepcopy(from_config.encoder),
                                decoder=copy.deepcopy(from_config.decoder),
                                prior=copy.deepcopy(from_config.prior), reconstruction="bernoulli")
    assert by_names.state_dict().keys() == from_config.state_dict().keys()
    for k, v in from_config.state_dict().items():
        assert torch.equal(v, by_names.state_dict()[k]), k
    x = data.preprocess(data.test.x[:32])
    losses = []
    for model in (from_config, by_names, by_modules):
        torch.manual_seed(5)
        out = model(x)
        assert set(out) >= {"loss", "recon", "kl", "z", "posterior"} and out.loss is out["loss"]
        losses.append(out.loss)
    assert torch.equal(losses[0], losses[1]) and torch.equal(losses[0], losses[2])
    out.loss.backward()                       # a training loss: gradients reach the parts
    assert all(q.grad is not None for q in by_modules.encoder.parameters())


def test_public_names_are_exported():
    import energyvae
    for name in ("VAE", "Trainer", "load_run", "train_run", "energy_score", "PRIORS", "load_config",
                 "EBMPrior", "EnergyScore", "ModelOutput"):
        assert name in energyvae.__all__ and getattr(energyvae, name) is not None
    assert (ROOT / "energyvae" / "py.typed").is_file()
    with pytest.raises(AttributeError):
        energyvae.not_a_name


def test_cli_version_configs_list_print_config_and_dry_run(tmp_path):
    import energyvae
    res = cli("--version")
    assert res.returncode == 0 and energyvae.__version__ in res.stdout
    res = cli("list")
    assert res.returncode == 0 and "energy_score" in res.stdout and "datasets:" in res.stdout
    res = cli("train", "--config", "fashion_vae", "train.steps=7", "--print-config")
    assert res.returncode == 0 and "steps: 7" in res.stdout and "epochs: null" in res.stdout
    res = cli("train", "--config", "digits_vae", *TINY, f"run.dir={tmp_path / 'r'}", "--dry-run")
    assert res.returncode == 0 and "parameters" in res.stdout and "(1, 8, 8)" in res.stdout
    assert not (tmp_path / "r").exists()
    res = cli("train", "--config", "no_such_config")
    assert res.returncode == 2 and "energyvae configs" in res.stderr
    res = cli("sample", "--help")
    assert "(default: 64)" in res.stdout


def test_a_local_copy_of_a_config_wins_over_the_shipped_one(tmp_path, monkeypatch):
    from energyvae.config import SHIPPED_DIR, resolve_config_path
    monkeypatch.chdir(tmp_path)
    assert resolve_config_path("digits_vae") == SHIPPED_DIR / "digits_vae.yaml"
    (tmp_path / "digits_vae.yaml").write_text((SHIPPED_DIR / "digits_vae.yaml").read_text())
    assert resolve_config_path("digits_vae").resolve() == (tmp_path / "digits_vae.yaml").resolve()
    from energyvae.errors import ConfigError
    with pytest.raises(ConfigError, match="not found"):
        resolve_config_path(tmp_path / "elsewhere" / "configs" / "fashion_vae.yaml")   # absolute: no fallback


def test_steps_override_replaces_epochs_and_the_later_value_wins(tmp_path):
    from energyvae.config import load_config
    assert (load_config("fashion_vae", ["train.steps=5"]).train.steps, ) == (5, )
    c = load_config("fashion_vae", ["train.steps=5", "train.epochs=2"])
    assert c.train.epochs == 2 and c.train.steps is None
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {ROOT / 'configs' / 'fashion_vae.yaml'}\ntrain: {{steps: 9}}\n")
    assert load_config(child).train.steps == 9


def test_lr_factor_closed_forms():
    from energyvae.train.schedules import lr_factor
    assert [lr_factor(t, 100, "constant", 4) for t in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert lr_factor(10, 110, "cosine", 10) == 1.0
    assert math.isclose(lr_factor(60, 110, "cosine", 10), 0.5, abs_tol=1e-12)     # half-way: (1 + cos pi/2) / 2
    assert math.isclose(lr_factor(60, 110, "cosine", 10, 0.2), 0.6, abs_tol=1e-12)
    assert math.isclose(lr_factor(35, 110, "linear", 10), 0.75, abs_tol=1e-12)


def test_cosine_adamw_run_follows_the_schedule_and_resumes_exactly(tmp_path, kill_training_at):
    from energyvae.train import LAST, load_checkpoint
    from helpers import make_cfg, run
    kw = dict(optimizer="adamw", lr_schedule="cosine", warmup_steps=4, weight_decay=0.01)
    ref = run(make_cfg(tmp_path / "ref", **kw))
    assert isinstance(ref.optimizers["vae"], torch.optim.AdamW)
    from energyvae.train.schedules import lr_factor
    assert math.isclose(ref.optimizers["vae"].param_groups[0]["lr"], 1e-3 * lr_factor(19, 20, "cosine", 4))
    cfg = make_cfg(tmp_path / "killed", **kw)
    kill_training_at(12, lambda: run(cfg))
    resumed = run(cfg, resume=True)
    a = load_checkpoint(tmp_path / "ref" / "checkpoints" / LAST)["model"]
    b = load_checkpoint(tmp_path / "killed" / "checkpoints" / LAST)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a) and resumed.step == 20


def test_checkpoints_are_group_readable_with_named_keys(tmp_path):
    from safetensors import safe_open

    from energyvae.train import LAST
    from helpers import make_cfg, run
    old = os.umask(0o022)
    try:
        run(make_cfg(tmp_path / "r", steps=5))
    finally:
        os.umask(old)
    path = tmp_path / "r" / "checkpoints" / LAST
    assert path.stat().st_mode & 0o777 == 0o644
    keys = set(safe_open(str(path), "pt").keys())
    from energyvae.runs import prepare
    names = {f"s.model.{k}" for k in prepare(make_cfg(tmp_path / "x"))[1].state_dict()}
    assert names <= keys, sorted(keys)[:5]


def test_evaluate_one_metric_keeps_the_others(tmp_path):
    run_dir = tmp_path / "run"
    assert cli("train", "--config", "configs/digits_vae.yaml", *SMALL, f"run.dir={run_dir}").returncode == 0
    res = cli("evaluate", run_dir, "--metrics", "mse,nll", "--iw-samples", 4, "--nll-examples", 20)
    assert res.returncode == 0, res.stderr[-2000:]
    first = json.loads((run_dir / "evaluation" / "metrics.json").read_text())["metrics"]
    res = cli("evaluate", run_dir, "--metrics", "latent")
    assert res.returncode == 0, res.stderr[-2000:]
    merged = json.loads((run_dir / "evaluation" / "metrics.json").read_text())["metrics"]
    assert merged["mse"] == first["mse"] and merged["nll"] == first["nll"] and "posterior_variance" in merged
    assert (run_dir / "evaluation" / "per_image_nll.json").is_file()
    assert "mse" in (run_dir / "evaluation" / "metrics.md").read_text()


def test_examples_compile_and_name_their_run_time():
    import py_compile
    scripts = sorted((ROOT / "examples").glob("*.py"))
    assert len(scripts) >= 6
    for path in scripts:
        py_compile.compile(str(path), doraise=True)
        assert "under a minute" in path.read_text(), path.name
