"""The fast training loop: no host synchronisation per step, a tensor batch stream equal to
DistributedSampler's, the foreach EMA, the thread rule, and the options for large runs
(precision, channels_last, compile) keeping exact resume and the NaN guard."""
import math

import pytest
import torch
from torch.utils.data import DistributedSampler

from energyvae.config import build_config
from energyvae.errors import ConfigError, DivergenceError
from energyvae.runs import prepare
from energyvae.train import LAST, Trainer, load_checkpoint
from energyvae.train import threads as th
from energyvae.train.distributed import DistInfo
from energyvae.train.ema import EMA
from energyvae.train.trainer import BatchStream
from helpers import SyncCounter, poison_loss

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

MLP = {"latent_dim": 3, "encoder": {"name": "mlp", "hidden": [16]}, "decoder": {"name": "mlp", "hidden": [16]},
       "reconstruction": {"name": "bernoulli"}}
CONV = {"latent_dim": 3, "encoder": {"name": "conv", "channels": [4, 8]},
        "decoder": {"name": "conv", "channels": [4, 8]}, "reconstruction": {"name": "bernoulli"}}
ECVAE = {**MLP, "reconstruction": {"name": "gaussian", "scale": "calibrated"},
         "calibrators": [{"name": "ec", "steps": 3, "energy": {"name": "mlp", "hidden": [16]}}]}


def make_cfg(run_dir, model=MLP, **train):
    t = {"steps": 12, "batch_size": 32, "eval_every": 4, "checkpoint_every": 4, "log_every": 4,
         "progress": False, "ema": 0.9, **train}
    return build_config({"run": {"dir": str(run_dir)}, "data": {"name": "digits", "binarize": True},
                         "model": model, "train": t})


def fit(cfg, resume=False):
    data, model = prepare(cfg)
    trainer = Trainer(cfg, model, data, resume=resume)
    trainer.fit()
    return trainer


@pytest.mark.parametrize("model", [MLP, CONV, ECVAE], ids=["mlp", "conv", "ecvae"])
def test_a_training_step_reads_nothing_back_from_the_device(tmp_path, monkeypatch, model):
    cfg = make_cfg(tmp_path / "r", model)
    data, m = prepare(cfg)
    trainer = Trainer(cfg, m, data)
    x = trainer.batch(0)
    trainer.train_step(x)                           # first step: lazy initialisation is allowed
    trainer.step = 1
    x = trainer.batch(1)
    counter = SyncCounter(monkeypatch)
    trainer.train_step(x)
    trainer.batch(2)
    monkeypatch.undo()
    assert counter.calls == []
    logs = trainer.read_logs()                      # the window: the mean of the two steps
    assert {"loss", "kl"} <= set(logs) and all(math.isfinite(v) for v in logs.values())


@pytest.mark.parametrize("config", ["ebm_digits", "ecflow_digits", "ecvae_flow_prior_digits", "flow_digits",
                                    "toy2d_vae", "vae_wgan_digits"])
def test_shipped_configs_step_without_reading_back(tmp_path, monkeypatch, config):
    from energyvae.config import load_config
    cfg = load_config(f"configs/{config}.yaml", [f"run.dir={tmp_path}", "train.batch_size=8",
                                                 "train.progress=false"])
    data, m = prepare(cfg)
    trainer = Trainer(cfg, m, data)
    for i in range(3):
        trainer.train_step(trainer.batch(i))
        trainer.step += 1
    counter = SyncCounter(monkeypatch)
    trainer.train_step(trainer.batch(trainer.step))
    monkeypatch.undo()
    assert counter.calls == []


def test_log_records_are_window_means(tmp_path):
    cfg = make_cfg(tmp_path / "r")
    data, model = prepare(cfg)
    trainer = Trainer(cfg, model, data)
    values = []
    for i in range(3):
        logs = trainer.train_step(trainer.batch(i))
        values.append(float(logs["loss"]))
        trainer.step += 1
    assert trainer.read_logs()["loss"] == pytest.approx(sum(values) / 3, rel=1e-6)
    assert trainer.read_logs() == {}


def test_divergence_is_found_at_the_next_log_step_and_names_its_step(tmp_path, monkeypatch):
    cfg = make_cfg(tmp_path / "nan", log_every=3)
    data, model = prepare(cfg)
    poison_loss(monkeypatch, model, at_step=4)
    trainer = Trainer(cfg, model, data)
    with pytest.raises(DivergenceError, match=r"at step 5; stopped at step 6 .*step 4\)"):
        trainer.fit()
    assert load_checkpoint(tmp_path / "nan" / "checkpoints" / LAST)["step"] == 4


def test_divergence_before_any_checkpoint_says_none_was_written(tmp_path, monkeypatch):
    cfg = make_cfg(tmp_path / "nan", log_every=2)
    data, model = prepare(cfg)
    poison_loss(monkeypatch, model)
    with pytest.raises(DivergenceError, match="at step 1;.*none was written yet"):
        Trainer(cfg, model, data).fit()
    assert not (tmp_path / "nan" / "checkpoints" / LAST).exists()


@pytest.mark.parametrize("n,batch,world", [(1000, 32, 1), (1001, 32, 2), (997, 30, 3), (64, 16, 4)])
def test_batch_stream_equals_distributed_sampler(n, batch, world):
    for rank in range(world):
        stream = BatchStream(n, batch, seed=7, info=DistInfo(rank=rank, world=world))
        sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=7,
                                     drop_last=True)
        local = batch // world
        assert stream.steps_per_epoch == len(sampler) // local
        for epoch in (0, 3):
            sampler.set_epoch(epoch)
            expected = list(iter(sampler))
            for i in (0, stream.steps_per_epoch - 1):
                got = stream.indices(epoch * stream.steps_per_epoch + i).tolist()
                assert got == expected[i * local:(i + 1) * local]


def test_foreach_ema_equals_the_per_tensor_formula():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = EMA(net, 0.99)
    ref = [p.detach().clone() for p in net.parameters()]
    for step in range(5):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
            net[1].running_mean.add_(1.0)
        ema.update(net, step)
        d = min(0.99, (1 + step) / (10 + step))
        ref = [d * r + (1 - d) * p.detach() for r, p in zip(ref, net.parameters())]
    for r, e in zip(ref, ema.model.parameters()):
        torch.testing.assert_close(e, r, rtol=1e-6, atol=1e-6)
    assert torch.equal(ema.model[1].running_mean, net[1].running_mean)


def test_ema_every_k_steps_folds_the_skipped_decays():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 4)
    ema = EMA(net, 0.99, every=4)
    ref = [p.detach().clone() for p in net.parameters()]
    folded = 1.0
    for step in range(10):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        ema.update(net, step, sync=step == 5)                   # steps 3, 5 (sync) and 7 apply
        folded *= min(0.99, (1 + step) / (10 + step))
        if step in (3, 5, 7):
            ref = [folded * r + (1 - folded) * p.detach() for r, p in zip(ref, net.parameters())]
            folded = 1.0
        for r, e in zip(ref, ema.model.parameters()):
            torch.testing.assert_close(e, r, rtol=1e-6, atol=1e-6)


def test_adam_is_fused_and_takes_integer_betas(tmp_path):
    cfg = make_cfg(tmp_path / "r", betas=[0, 0.9])
    data, model = prepare(cfg)
    trainer = Trainer(cfg, model, data)
    group = trainer.optimizers["vae"].param_groups[0]
    assert group["fused"] and group["betas"] == (0.0, 0.9)


def test_thread_rule(monkeypatch):
    monkeypatch.setattr(th, "available_cores", lambda: 8)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert th.resolve_threads("auto", step_flops=1e6) == 1          # small nets: one thread
    assert th.resolve_threads("auto", step_flops=1e10) == 8
    assert th.resolve_threads("auto") == 8                         # FLOPs unknown: by cores
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")                    # torchrun: share the cores
    assert th.resolve_threads("auto", step_flops=1e10) == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")                   # more processes than cores
    assert th.resolve_threads("auto", step_flops=1e10) == 1
    assert th.resolve_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")                     # the user's setting wins
    assert th.resolve_threads("auto", step_flops=1e6) == 2
    with pytest.raises(ConfigError):
        th.resolve_threads(0)


def test_step_flops_put_the_main_job_on_one_thread(tmp_path):
    """The README's main job (configs/digits_vae.yaml's net) is below the small-net bound;
    the MLP 784-512-512-16 of the speed benchmark (measured 1.36x faster on 2 threads) above."""
    from energyvae.config import load_config
    cfg = load_config("configs/digits_vae.yaml", [f"run.dir={tmp_path}"])
    data, model = prepare(cfg)
    x = data.preprocess(data.train.x[:cfg.train.batch_size])
    flops = th.step_flops(model, x)
    assert 1e7 < flops < th.SMALL_STEP_FLOPS
    from energyvae.models import build_model
    big_cfg = build_config({"run": {"dir": str(tmp_path / "b")},
                            "model": {"latent_dim": 16, "encoder": {"name": "mlp", "hidden": [512, 512]},
                                      "decoder": {"name": "mlp", "hidden": [512, 512]},
                                      "reconstruction": {"name": "bernoulli"}}})
    big = build_model(big_cfg.model, (1, 28, 28), "image", (0.0, 1.0))
    assert th.step_flops(big, torch.rand(128, 1, 28, 28).bernoulli()) > th.SMALL_STEP_FLOPS


@pytest.mark.parametrize("train", [{"precision": "bf16"}, {"precision": "fp16"},
                                   {"channels_last": True}],
                         ids=["bf16", "fp16", "channels_last"])
def test_options_keep_exact_resume(tmp_path, kill_training_at, train):
    model = CONV if train.get("channels_last") else MLP
    ref = fit(make_cfg(tmp_path / "ref", model, **train))
    cfg = make_cfg(tmp_path / "killed", model, **train)
    kill_training_at(6, lambda: fit(cfg))
    resumed = fit(cfg, resume=True)
    for (k, a), b in zip(ref.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    if train.get("precision") == "fp16":
        assert set(load_checkpoint(tmp_path / "killed" / "checkpoints" / LAST)["scalers"]) == {"vae"}


@pytest.mark.slow
def test_compile_trains_and_resumes_exactly(tmp_path, kill_training_at):
    pytest.importorskip("torch._inductor")
    ref = fit(make_cfg(tmp_path / "ref", compile=True, steps=8))
    cfg = make_cfg(tmp_path / "killed", compile=True, steps=8)
    kill_training_at(5, lambda: fit(cfg))
    resumed = fit(cfg, resume=True)
    for a, b in zip(ref.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


@cuda
@pytest.mark.parametrize("train", [{}, {"precision": "bf16"}, {"precision": "fp16"}, {"compile": True}],
                         ids=["fp32", "bf16", "fp16", "compile"])
def test_cuda_step_never_synchronises(tmp_path, train):
    for model in (MLP, CONV, ECVAE):
        cfg = make_cfg(tmp_path / f"r{len(model)}", model, device="cuda", **train)
        data, m = prepare(cfg)
        trainer = Trainer(cfg, m, data)
        for i in range(3):                           # warm-up (compile, lazy state)
            trainer.train_step(trainer.batch(i))
            trainer.step += 1
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            trainer.train_step(trainer.batch(trainer.step))
        finally:
            torch.cuda.set_sync_debug_mode("default")
        trainer.check_finite()


@cuda
def test_cuda_training_resumes_exactly_with_data_on_device(tmp_path, kill_training_at):
    ref = fit(make_cfg(tmp_path / "ref", device="cuda", data_on_device="yes"))
    assert ref.train_x.is_cuda
    cfg = make_cfg(tmp_path / "killed", device="cuda", data_on_device="yes")
    kill_training_at(6, lambda: fit(cfg))
    resumed = fit(cfg, resume=True)
    for a, b in zip(ref.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
