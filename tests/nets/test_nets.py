"""Encoder / decoder networks: shapes, gradients, weight norm, dense layout, validation."""
import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from energyvae.errors import ConfigError
from energyvae.nets import DECODERS, ENCODERS
from energyvae.nets.conv import ConvParams, spatial_sizes
from energyvae.nets.mlp import DenseBlock, MLPParams

SIZES = [8, 10, 16, 28, 32, 64]
SMALL_CONV = {"name": "conv", "channels": [4, 8, 8, 8]}
SMALL_MLP = {"name": "mlp", "hidden": [8, 8]}


def _linears(module):
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def test_registered():
    assert {"mlp", "conv"} <= set(ENCODERS.names())
    assert {"mlp", "conv"} <= set(DECODERS.names())


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("spec", [SMALL_CONV, SMALL_MLP], ids=["conv", "mlp"])
def test_image_shapes(spec, size, channels):
    torch.manual_seed(0)
    enc = ENCODERS.build(spec, in_shape=(channels, size, size), out_features=6)
    x = torch.rand(2, channels, size, size)
    h = enc(x)
    assert h.shape == (2, 6)
    for c_out in (channels, 2 * channels):
        dec = DECODERS.build(spec, latent_dim=3, out_shape=(c_out, size, size))
        y = dec(h[:, :3])
        assert y.shape == (2, c_out, size, size)
        assert torch.isfinite(y).all()


def test_mlp_vector_shapes():
    enc = ENCODERS.build(SMALL_MLP, in_shape=(5,), out_features=4)
    dec = DECODERS.build(SMALL_MLP, latent_dim=2, out_shape=(5,))
    assert enc(torch.randn(7, 5)).shape == (7, 4)
    assert dec(torch.randn(7, 2)).shape == (7, 5)
    dec = DECODERS.build(SMALL_MLP, latent_dim=2, out_shape=(1, 8, 8))
    assert dec(torch.randn(3, 2)).shape == (3, 1, 8, 8)


def test_mlp_plain_layout():
    enc = ENCODERS.build({"name": "mlp", "hidden": [16, 12], "activation": "tanh"},
                         in_shape=(1, 4, 4), out_features=3)
    lin = _linears(enc)
    assert [(m.in_features, m.out_features) for m in lin] == [(16, 16), (16, 12), (12, 3)]
    assert sum(isinstance(m, nn.Tanh) for m in enc.modules()) == 2
    assert enc.block is None
    enc = ENCODERS.build({"name": "mlp", "hidden": []}, in_shape=(4,), out_features=3)
    assert [(m.in_features, m.out_features) for m in _linears(enc)] == [(4, 3)]


def test_mlp_defaults():
    p = MLPParams()
    assert (p.hidden, p.activation, p.weight_norm, p.dense) == ([256, 256], "elu", False, False)
    p = ConvParams()
    assert (p.channels, p.activation, p.hidden) == ([32, 64, 128, 256], "relu", None)


@pytest.mark.parametrize("spec,in_shape", [
    ({"name": "conv", "channels": [4, 8], "hidden": 5}, (3, 10, 10)),
    ({"name": "mlp", "hidden": [8, 8], "dense": True, "weight_norm": True}, (1, 8, 8)),
    ({"name": "mlp", "hidden": [8], "activation": "leaky_relu"}, (3,)),
])
def test_gradients_flow(spec, in_shape):
    torch.manual_seed(0)
    enc = ENCODERS.build(spec, in_shape=in_shape, out_features=4)
    dec = DECODERS.build(spec, latent_dim=4, out_shape=in_shape)
    x = torch.rand(5, *in_shape, requires_grad=True)
    loss = (dec(enc(x)) - x).pow(2).sum()
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for net in (enc, dec):
        for name, p in net.named_parameters():
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("dense", [False, True])
def test_weight_norm_parametrizes_every_linear(dense):
    spec = {"name": "mlp", "hidden": [8, 8, 8], "weight_norm": True, "dense": dense}
    for net in (ENCODERS.build(spec, in_shape=(2,), out_features=3),
                DECODERS.build(spec, latent_dim=3, out_shape=(2,))):
        lin = _linears(net)
        assert len(lin) == 4
        for m in lin:
            assert parametrize.is_parametrized(m, "weight")
            g = m.parametrizations.weight.original0
            v = m.parametrizations.weight.original1
            expected = g * v / v.norm(dim=1, keepdim=True)
            torch.testing.assert_close(m.weight, expected)
        # scaling g scales the effective weight: the parametrization is live
        m = lin[0]
        with torch.no_grad():
            before = m.weight.clone()
            m.parametrizations.weight.original0.mul_(2.0)
        torch.testing.assert_close(m.weight, 2.0 * before)
    plain = ENCODERS.build({"name": "mlp", "hidden": [8]}, in_shape=(2,), out_features=3)
    assert not any(parametrize.is_parametrized(m) for m in _linears(plain))


def test_weight_norm_net_copies_and_reloads():
    spec = {"name": "mlp", "hidden": [8, 8], "weight_norm": True, "dense": True}
    a = ENCODERS.build(spec, in_shape=(2,), out_features=3)
    b = copy.deepcopy(a)
    x = torch.randn(4, 2)
    torch.testing.assert_close(a(x), b(x))
    c = ENCODERS.build(spec, in_shape=(2,), out_features=3)
    c.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(x), c(x))


def test_dense_layout_paper_toy_net():
    """hidden=[16]*4, dense: one block of depth 4, growth 16, then a linear head."""
    spec = {"name": "mlp", "hidden": [16, 16, 16, 16], "dense": True, "weight_norm": True}
    enc = ENCODERS.build(spec, in_shape=(2,), out_features=4)
    assert isinstance(enc.block, DenseBlock)
    widths = [m.in_features for m in enc.block.layers]
    assert widths == [2, 18, 34, 50] == enc.block.in_widths
    assert all(m.out_features == 16 for m in enc.block.layers)
    head = _linears(enc)[-1]
    assert (head.in_features, head.out_features) == (66, 4)
    dec = DECODERS.build(spec, latent_dim=4, out_shape=(2,))
    assert [m.in_features for m in dec.block.layers] == [4, 20, 36, 52]
    assert (_linears(dec)[-1].in_features, _linears(dec)[-1].out_features) == (68, 2)

    # each layer's input is [block input, outputs of all previous layers]
    inputs, outputs = {}, {}

    def record(i):
        def hook(module, inp, out):
            inputs[i], outputs[i] = inp[0], out
        return hook

    for i, layer in enumerate(enc.block.layers):
        layer.register_forward_hook(record(i))
    x = torch.randn(3, 2)
    enc(x)
    act = nn.ELU()
    for i in range(4):
        expected = torch.cat([x] + [act(outputs[j]) for j in range(i)], dim=1)
        torch.testing.assert_close(inputs[i], expected)


def test_dense_uneven_growth():
    enc = ENCODERS.build({"name": "mlp", "hidden": [3, 5, 7], "dense": True},
                         in_shape=(1, 2, 2), out_features=2)
    assert enc.block.in_widths == [4, 7, 12]
    assert _linears(enc)[-1].in_features == 19
    assert enc(torch.randn(2, 1, 2, 2)).shape == (2, 2)


@pytest.mark.parametrize("size,expected", [
    (8, [8, 4, 2]), (10, [10, 5, 2]), (16, [16, 8, 4, 2]), (28, [28, 14, 7, 3]),
    (32, [32, 16, 8, 4, 2]), (64, [64, 32, 16, 8, 4]),
])
def test_conv_stage_plan(size, expected):
    assert spatial_sizes(size, 4) == expected
    enc = ENCODERS.build({"name": "conv", "channels": [2, 2, 2, 2]},
                         in_shape=(1, size, size), out_features=3)
    dec = DECODERS.build({"name": "conv", "channels": [2, 2, 2, 2]},
                         latent_dim=3, out_shape=(1, size, size))
    assert enc.sizes == dec.sizes == expected
    # feature maps after every encoder conv have the recorded sizes
    seen = []
    for m in enc.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(lambda m, i, o: seen.append(o.shape[-1]))
    enc(torch.rand(1, 1, size, size))
    assert seen == expected[1:]
    assert spatial_sizes(64, 10) == [64, 32, 16, 8, 4, 2]
    assert spatial_sizes(32, 1) == [32, 16]


def test_conv_matches_paper_cifar_net():
    enc = ENCODERS.build("conv", in_shape=(3, 32, 32), out_features=1024)
    dec = DECODERS.build("conv", latent_dim=512, out_shape=(3, 32, 32))
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    assert [(m.in_channels, m.out_channels) for m in convs] == [
        (3, 32), (32, 64), (64, 128), (128, 256)]
    assert all(m.kernel_size == (4, 4) and m.stride == (2, 2) and m.padding == (1, 1)
               for m in convs)
    assert sum(isinstance(m, nn.ReLU) for m in enc.modules()) == 4
    assert [(m.in_features, m.out_features) for m in _linears(enc)] == [(256 * 2 * 2, 1024)]
    tconvs = [m for m in dec.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [m.out_channels for m in tconvs] == [128, 64, 32, 3]
    assert all(m.kernel_size == (4, 4) and m.stride == (2, 2) and m.padding == (1, 1)
               for m in tconvs)
    assert [(m.in_features, m.out_features) for m in _linears(dec)] == [(512, 256 * 2 * 2)]
    # no activation after the last transposed conv: raw outputs
    assert isinstance(dec.net[-1], nn.ConvTranspose2d)


def test_conv_hidden_layer():
    enc = ENCODERS.build({"name": "conv", "channels": [4], "hidden": 7},
                         in_shape=(1, 8, 8), out_features=3)
    assert [(m.in_features, m.out_features) for m in _linears(enc)] == [(4 * 16, 7), (7, 3)]
    dec = DECODERS.build({"name": "conv", "channels": [4], "hidden": 7},
                         latent_dim=3, out_shape=(1, 8, 8))
    assert [(m.in_features, m.out_features) for m in _linears(dec)] == [(3, 7), (7, 4 * 16)]
    assert dec(torch.randn(2, 3)).shape == (2, 1, 8, 8)


@pytest.mark.parametrize("spec", [
    {"name": "mlp", "hidden": [0]},
    {"name": "mlp", "hidden": [8, -1]},
    {"name": "mlp", "hidden": "8"},
    {"name": "mlp", "hidden": [8.5]},
    {"name": "mlp", "activation": "gelu"},
    {"name": "mlp", "dense": True, "hidden": []},
    {"name": "mlp", "weight_norm": "yes"},
    {"name": "mlp", "depth": 3},
    {"name": "conv", "channels": []},
    {"name": "conv", "channels": [4, 0]},
    {"name": "conv", "hidden": 0},
    {"name": "conv", "activation": "sigmoid"},
])
def test_invalid_params(spec):
    with pytest.raises(ConfigError) as e:
        ENCODERS.build(spec, in_shape=(1, 8, 8), out_features=2)
    assert "\n" not in str(e.value)


def test_invalid_params_direct_construction():
    with pytest.raises(ConfigError):
        MLPParams(hidden=[0])
    with pytest.raises(ConfigError):
        MLPParams(activation="swish")
    with pytest.raises(ConfigError):
        ConvParams(channels=[])
    with pytest.raises(ConfigError):
        ConvParams(hidden=-3)


@pytest.mark.parametrize("shape", [(1, 28, 27), (3, 7, 7), (3, 65, 65), (1, 128, 128), (784,),
                                   (28, 28)])
def test_conv_rejects_bad_shapes(shape):
    with pytest.raises(ConfigError) as e:
        ENCODERS.build("conv", in_shape=shape, out_features=2)
    msg = str(e.value)
    assert "\n" not in msg and "8..64" in msg and str(tuple(shape)) in msg
    with pytest.raises(ConfigError):
        DECODERS.build("conv", latent_dim=2, out_shape=shape)


def test_mlp_rejects_bad_shapes():
    with pytest.raises(ConfigError):
        ENCODERS.build("mlp", in_shape=(28, 28), out_features=2)
    with pytest.raises(ConfigError):
        DECODERS.build("mlp", latent_dim=0, out_shape=(4,))


def test_blur_pool_is_the_binomial_low_pass_then_every_second_pixel():
    """BlurPool against numpy: reflect-pad, [1, 2, 1] x [1, 2, 1] / 16 per channel, stride 2. It keeps a
    constant image and removes the Nyquist pattern (-1)^(i + j) entirely."""
    import numpy as np

    from energyvae.nets.energy import BlurPool

    x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    got = BlurPool(3).double()(x)
    k = np.outer([1, 2, 1], [1, 2, 1]) / 16
    pad = np.pad(x.numpy(), ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    want = np.zeros((2, 3, 4, 3))
    for i in range(4):
        for j in range(3):
            want[:, :, i, j] = (pad[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3] * k).sum((-2, -1))
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12)
    torch.testing.assert_close(BlurPool(1)(torch.full((1, 1, 8, 8), 0.3)), torch.full((1, 1, 4, 4), 0.3))
    i = torch.arange(8)
    nyquist = ((-1.0) ** (i[:, None] + i[None, :])).view(1, 1, 8, 8)
    assert BlurPool(1)(nyquist).abs().max() < 1e-6


@pytest.mark.parametrize("downsample", ["avg", "blur", "stride"])
def test_resnet_energy_downsampling_options(downsample):
    from energyvae.nets.energy import DATA_ENERGIES

    torch.manual_seed(0)
    energy = DATA_ENERGIES.build({"name": "resnet", "channels": [4, 8, 8], "blocks": 1, "head": 8,
                                  "downsample": downsample}, "energy", data_shape=(1, 28, 28))
    x = torch.rand(3, 1, 28, 28, requires_grad=True)
    e = energy(x)
    assert e.shape == (3,) and torch.isfinite(e).all()
    g, = torch.autograd.grad(e.sum(), x)
    assert g.shape == x.shape and g.abs().sum() > 0
    with pytest.raises(ConfigError, match="downsample"):
        DATA_ENERGIES.build({"name": "resnet", "downsample": "max"}, "energy", data_shape=(1, 28, 28))
