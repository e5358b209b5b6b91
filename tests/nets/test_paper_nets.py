"""The EC-VAE authors' nets (paper 001): ``resnet18`` encoder, ``fastgan`` decoder, ``msresnet``
energy. Exact parameter counts and layer shapes against the authors' code, shapes at 32, 64
and 256 px, a few training steps at 32 px, exact resume of the batch-norm state, global-batch
batch norm under two gloo processes, the ``pool`` and ``tau`` options."""
import copy
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from energyvae.errors import ConfigError
from energyvae.models.base import StepState
from energyvae.models.vae import VAE
from energyvae.nets import DECODERS, ENCODERS
from energyvae.nets.ecvae_nets import up_blocks
from energyvae.nets.energy import DATA_ENERGIES
from energyvae.nets.norm import GlobalBatchNorm2d

ROOT = Path(__file__).resolve().parents[2]

# The authors' numbers: their demo code (github.com/Luo-Yihong/EC-VAE, "a demo version for
# roughly reproducing"), instantiated once on CPU outside this suite, with train_demo.py's
# settings (args.num_latent = 128; 3 x 32 x 32 images), counting sum(p.numel() for p in
# m.parameters()):
#   models/fastae.py fast_vae_32(args).encoder  (models/res.py ResNet18Enc(z_dim=128, use_vae=True))
AUTHORS_ENCODER = 44_915_072
#   models/fastae.py fast_vae_32(args).decoder  (Generator_32(nz=128))
AUTHORS_GENERATOR = 32_521_728
#   models/fastae.py fast_vae_32(args)          (the whole VAE)
AUTHORS_VAE = 77_436_800
#   models/ebms.py MSResNet([(128, 2), (256, 2), (256, 2), (256, 2)], tau=1e-5) after utils.apply_sn
#   (train_demo.py): 23,815,169 parameters, 56 spectrally normalised Conv2d / Linear layers
AUTHORS_MSRESNET = 23_815_169
AUTHORS_MSRESNET_SN_LAYERS = 56
#   Generator_32(nz=128).state_dict(): the weight_orig shapes of its 7 (spectral-norm) convolutions
AUTHORS_GENERATOR_CONVS = [(128, 2048, 4, 4), (1024, 1024, 3, 3), (1024, 512, 3, 3), (1024, 512, 3, 3),
                           (1024, 512, 3, 3), (1024, 512, 3, 3), (3, 512, 1, 1)]
# Our 64 / 256 px generators (one more up-block per doubling; our design, no authors' number):
OURS_GENERATOR_64, OURS_GENERATOR_256 = 34_881_280, 35_914_176

SMALL_ENC = {"name": "resnet18", "width": 8}
SMALL_DEC = {"name": "fastgan", "width": 8}
SMALL_E = {"name": "msresnet", "channels": [8, 8, 8, 8], "head": 16}


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _sn_layers(m: nn.Module) -> int:
    return sum(1 for x in m.modules() if isinstance(x, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
               and nn.utils.parametrize.is_parametrized(x, "weight"))


def test_registered():
    assert "resnet18" in ENCODERS.names() and "fastgan" in DECODERS.names()
    assert "msresnet" in DATA_ENERGIES.names()


def test_parameter_counts_equal_the_authors(one_thread):
    enc = ENCODERS.build({"name": "resnet18"}, in_shape=(3, 32, 32), out_features=2 * 128)
    dec = DECODERS.build({"name": "fastgan"}, latent_dim=128, out_shape=(3, 32, 32))
    assert _count(enc) == AUTHORS_ENCODER
    assert _count(dec) == AUTHORS_GENERATOR
    assert _count(enc) + _count(dec) == AUTHORS_VAE
    convs = [tuple(m.parametrizations.weight.original.shape) for m in dec.modules()
             if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert convs == AUTHORS_GENERATOR_CONVS
    assert _sn_layers(dec) == 7 and _sn_layers(enc) == 0
    # their ResNet18Enc: stem + 16 block convolutions + 3 shortcuts, each with a batch norm
    assert sum(isinstance(m, nn.Conv2d) for m in enc.modules()) == 20
    assert sum(isinstance(m, nn.BatchNorm2d) for m in enc.modules()) == 20
    assert enc.head.in_features == 1024
    # the encoder and the energy do not depend on the resolution
    for size in (32, 64, 256):
        e = DATA_ENERGIES.build({"name": "msresnet"}, data_shape=(3, size, size))
        assert _count(e) == AUTHORS_MSRESNET and _sn_layers(e) == AUTHORS_MSRESNET_SN_LAYERS
    assert _count(ENCODERS.build({"name": "resnet18"}, in_shape=(3, 256, 256), out_features=256)) == AUTHORS_ENCODER
    assert _count(DECODERS.build({"name": "fastgan"}, latent_dim=128, out_shape=(3, 64, 64))) == OURS_GENERATOR_64
    assert _count(DECODERS.build({"name": "fastgan"}, latent_dim=128, out_shape=(3, 256, 256))) == OURS_GENERATOR_256


def test_generator_grows_one_up_block_per_doubling():
    for size, k in ((8, 1), (32, 3), (64, 4), (256, 6)):
        assert up_blocks(size) == k
        dec = DECODERS.build(SMALL_DEC, latent_dim=4, out_shape=(3, size, size))
        convs = [sum(isinstance(m, nn.Conv2d) for m in b.modules()) for b in dec.blocks]
        assert convs == [2 if j % 2 == 1 else 1 for j in range(1, k + 1)]   # Comp at 8, 32, 128 px
    for bad in (28, 48, 4):
        with pytest.raises(ConfigError, match="4 \\* 2\\^k"):
            DECODERS.build(SMALL_DEC, latent_dim=4, out_shape=(3, bad, bad))
    with pytest.raises(ConfigError, match="entries"):
        DECODERS.build({"name": "fastgan", "channels": [8, 8]}, latent_dim=4, out_shape=(3, 16, 16))


@pytest.mark.parametrize("size", [32, 64, 256])
def test_shapes(size, one_thread):
    enc = ENCODERS.build(SMALL_ENC, in_shape=(3, size, size), out_features=2 * 16)
    dec = DECODERS.build(SMALL_DEC, latent_dim=16, out_shape=(3, size, size))
    e = DATA_ENERGIES.build(SMALL_E, data_shape=(3, size, size))
    x = torch.rand(2, 3, size, size) * 2 - 1
    h = enc(x)
    assert h.shape == (2, 32) and h[:, :16].abs().max() <= 1        # tanh on the mean half
    y = dec(h[:, :16])
    assert y.shape == (2, 3, size, size) and y.abs().max() <= 1      # tanh output
    out = e(x)
    assert out.shape == (2,) and torch.isfinite(out).all()


def test_full_width_forward_at_256_px(one_thread):
    torch.manual_seed(0)
    enc = ENCODERS.build({"name": "resnet18"}, in_shape=(3, 256, 256), out_features=256).eval()
    dec = DECODERS.build({"name": "fastgan"}, latent_dim=128, out_shape=(3, 256, 256)).eval()
    e = DATA_ENERGIES.build({"name": "msresnet"}, data_shape=(3, 256, 256)).eval()
    with torch.no_grad():
        x = dec(enc(torch.rand(1, 3, 256, 256) * 2 - 1)[:, :128])
        assert x.shape == (1, 3, 256, 256)
        assert torch.isfinite(e(x)).all()


def test_encoder_tanh_and_output_options():
    x = torch.randn(3, 1, 8, 8) * 10
    enc = ENCODERS.build({**SMALL_ENC, "tanh": "all"}, in_shape=(1, 8, 8), out_features=5)
    nn.init.normal_(enc.head.weight, 0, 10.0)
    assert enc(x).abs().max() <= 1
    enc = ENCODERS.build({**SMALL_ENC, "tanh": "none"}, in_shape=(1, 8, 8), out_features=5)
    nn.init.normal_(enc.head.weight, 0, 10.0)
    assert enc(x).abs().max() > 1
    with pytest.raises(ConfigError, match="even"):
        ENCODERS.build(SMALL_ENC, in_shape=(1, 8, 8), out_features=5)
    with pytest.raises(ConfigError, match="one of"):
        DECODERS.build({**SMALL_DEC, "output": "relu"}, latent_dim=4, out_shape=(1, 8, 8))
    y = DECODERS.build({**SMALL_DEC, "output": "sigmoid"}, latent_dim=4, out_shape=(1, 8, 8))(torch.randn(3, 4))
    assert y.min() >= 0 and y.max() <= 1


def _ec_vae(seed=0):
    torch.manual_seed(seed)
    return VAE.from_parts((3, 32, 32), 16, encoder={"name": "resnet18", "width": 16},
                          decoder={"name": "fastgan", "width": 16, "output": "sigmoid"},
                          reconstruction="gaussian",
                          calibrators=[{"name": "ec", "energy": SMALL_E, "steps": 2}])


def _step(model, opts, x, step):
    state = StepState(step=step)
    for u in sorted(model.updates(), key=lambda u: u.order):
        opts[u.name].zero_grad()
        loss, _ = model(u.name, x, state)
        assert loss.dim() == 0 and torch.isfinite(loss)
        loss.backward()
        opts[u.name].step()
        model.after_update(u.name, state)
    return loss


def test_training_steps_at_32_px_and_exact_resume(one_thread):
    """Three steps of the EC-VAE (resnet18 + fastgan + msresnet energy) at 32 px; a copy restored
    from the state dicts after step 2 (batch-norm running statistics, spectral-norm vectors,
    the dual variable, Adam) takes the identical third step."""
    model = _ec_vae()
    x = torch.rand(4, 3, 32, 32)
    opts = {u.name: torch.optim.Adam(u.params, lr=1e-3) for u in model.updates()}
    assert set(opts) == {"vae", "ec"}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for step in range(2):
        _step(model, opts, x, step)
    after = model.state_dict()
    bn = [k for k in after if k.endswith("running_mean")]
    assert bn and all(not torch.equal(after[k], before[k]) for k in bn)   # running stats move
    saved = {k: v.clone() for k, v in after.items()}
    saved_opts = copy.deepcopy({k: o.state_dict() for k, o in opts.items()})
    rng = torch.get_rng_state()
    _step(model, opts, x, 2)

    restored = _ec_vae(seed=1)
    restored.load_state_dict(saved)
    restored_opts = {u.name: torch.optim.Adam(u.params, lr=1e-3) for u in restored.updates()}
    for k, o in restored_opts.items():
        o.load_state_dict(saved_opts[k])
    torch.set_rng_state(rng)
    _step(restored, restored_opts, x, 2)
    for k, v in model.state_dict().items():
        assert torch.equal(v, restored.state_dict()[k]), k
    model.eval()
    with torch.no_grad():
        assert model.sample(2).shape == (2, 3, 32, 32)


def test_msresnet_pool_and_tau():
    x = torch.rand(2, 3, 16, 16)
    nets = {}
    for kw in ({}, {"pool": "sum"}, {"tau": 0.25}):
        torch.manual_seed(0)
        nets[tuple(kw)] = DATA_ENERGIES.build({**SMALL_E, **kw}, data_shape=(3, 16, 16)).eval()
    mean, total, tau = nets[()], nets[("pool",)], nets[("tau",)]
    with torch.no_grad():
        for s, b_mean, b_sum in zip((1, 2, 4), mean.branches, total.branches):
            xs = nn.functional.avg_pool2d(x, s) if s > 1 else x
            area = {1: 4, 2: 1, 4: 1}[s]            # final maps: 16 -> 2 x 2, 8 -> 1 x 1, 4 -> 1 x 1
            torch.testing.assert_close(b_sum(xs), b_mean(xs) * area)
        torch.testing.assert_close(tau(x), 4 * mean(x))
    assert DATA_ENERGIES.parse({"name": "resnet", "pool": "sum"}, "energy").params.pool == "sum"
    with pytest.raises(ConfigError):
        DATA_ENERGIES.build({**SMALL_E, "tau": 0.0}, data_shape=(3, 16, 16))
    with pytest.raises(ConfigError, match=">= 4"):
        DATA_ENERGIES.build(SMALL_E, data_shape=(3, 2, 2))


_RANK_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    import torch.distributed as dist
    from energyvae.nets.norm import GlobalBatchNorm2d
    rank, world, init, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="file://" + init, rank=rank, world_size=world)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), GlobalBatchNorm2d(4))
    x = torch.randn(8, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    w = torch.randn(8, 4, 4, 4, generator=torch.Generator().manual_seed(2))
    xs, ws = x.chunk(world)[rank], w.chunk(world)[rank]
    for _ in range(2):
        y = net(xs)
        (y * ws).sum().div(len(x)).backward()
    for p in net.parameters():                  # what DDP does (it averages local-mean losses)
        dist.all_reduce(p.grad)
    torch.save({"y": y.detach(), "grads": [p.grad for p in net.parameters()],
                "buffers": [b.clone() for b in net.buffers()]}, out)
    dist.destroy_process_group()
""")


def test_global_batch_norm_under_two_gloo_processes_equals_one_process(tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(_RANK_SCRIPT)
    init = tmp_path / "init"
    procs = [subprocess.Popen([sys.executable, str(script), str(r), "2", str(init), str(tmp_path / f"{r}.pt")],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
    got = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(2)]

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    x = torch.randn(8, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    w = torch.randn(8, 4, 4, 4, generator=torch.Generator().manual_seed(2))
    for _ in range(2):
        y = net(x)
        (y * w).sum().div(len(x)).backward()
    torch.testing.assert_close(torch.cat([g["y"] for g in got]), y.detach())
    for g in got:
        for a, b in zip(g["grads"], [p.grad for p in net.parameters()]):
            torch.testing.assert_close(a, b)
        for a, b in zip(g["buffers"], list(net.buffers())):
            torch.testing.assert_close(a, b)


def test_global_batch_norm_is_batch_norm_in_one_process():
    torch.manual_seed(0)
    a, b = GlobalBatchNorm2d(5), nn.BatchNorm2d(5)
    x = torch.randn(4, 5, 3, 3)
    torch.testing.assert_close(a(x), b(x))
    assert a.state_dict().keys() == b.state_dict().keys()
    torch.testing.assert_close(a.running_var, b.running_var)
