"""Baseline reconstruction objectives of EnVAE's Table 1 (l2, l1, ssim, ffl, student_t, distvae)
and the InfoVAE MMD regulariser."""
import json
import math

import numpy as np
import pytest
import scoringrules as sr
import torch
from scipy import stats

from energyvae.config import build_config
from energyvae.errors import ConfigError
from energyvae.models import CALIBRATORS, RECONSTRUCTIONS, build_model
from energyvae.models.posterior import DiagGaussian
from energyvae.models.reconstruction.baselines import (focal_frequency_loss, focal_weights,
                                                       piecewise_linear_crps)
from energyvae.models.regularizers import mmd_unbiased
from energyvae.runs import prepare
from energyvae.train import Trainer

IMAGE_SHAPES = [(1, 8, 8), (3, 16, 16)]


def build(spec, shape=(1, 8, 8), kind=None, value_range=(0.0, 1.0)):
    kind = kind or ("image" if len(shape) == 3 else "vector")
    return RECONSTRUCTIONS.build(spec, "model.reconstruction", latent_dim=3, data_shape=shape,
                                 data_kind=kind, value_range=value_range)


def grad_of(fn, out):
    out = out.detach().clone().requires_grad_(True)
    fn(out).sum().backward()
    return out.grad


# -- deterministic-decoder losses ------------------------------------------------------------------

POINT_LOSSES = [("l2", True), ("l1", True), ("ssim", False), ("ffl", False)]   # (name, vectors ok)


@pytest.mark.parametrize("shape", IMAGE_SHAPES + [(5,)])
@pytest.mark.parametrize("name,vectors", POINT_LOSSES)
def test_point_losses_zero_at_perfect_reconstruction(name, vectors, shape):
    if len(shape) == 1 and not vectors:
        pytest.skip("image-only objective")
    rec = build({"name": name}, shape)
    assert not rec.likelihood and rec.decoder_shape(shape) == shape
    x = 0.02 + 0.96 * torch.rand(4, *shape)
    perfect = torch.logit(x) if name == "ssim" else x.clone()       # ssim's decoder emits logits
    assert torch.allclose(rec.mean(perfect), x, atol=1e-6)
    at_x = rec.score(x, perfect)
    assert at_x.shape == (4,)
    assert torch.allclose(at_x, torch.zeros(4), atol=1e-5)
    off = perfect + 0.1 * torch.randn_like(x)
    assert (rec.score(x, off) > 1e-4).all()
    for point in (off, perfect + 1e-3, perfect):   # finite gradients, also at the optimum
        g = grad_of(lambda o: rec.score(x, o), point)
        assert torch.isfinite(g).all()
    # the interface: one reparameterised sample, decoded once
    q = DiagGaussian(torch.zeros(4, 3), torch.ones(4, 3))
    dec = torch.nn.Linear(3, math.prod(shape))
    loss, z, logs = rec.loss(x, q, lambda z: dec(z).reshape(z.shape[0], *shape))
    assert loss.shape == (4,) and z.shape == (4, 3) and torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(dec.weight.grad).all() and dec.weight.grad.abs().sum() > 0


def test_l2_l1_are_plain_sums_with_weight():
    x, out = torch.rand(3, 1, 8, 8), torch.rand(3, 1, 8, 8)
    assert torch.allclose(build({"name": "l2", "weight": 2.0}).score(x, out),
                          2 * ((x - out) ** 2).flatten(1).sum(1))
    assert torch.allclose(build({"name": "l1"}).score(x, out), (x - out).abs().flatten(1).sum(1))


def test_ssim_is_unit_range_ssim_of_sigmoid_output():
    from energyvae.imaging.quality import ssim
    x, out = torch.rand(3, 3, 16, 16), torch.randn(3, 3, 16, 16)
    rec = build({"name": "ssim", "weight": 3.0}, (3, 16, 16))
    assert torch.allclose(rec.score(x, out), 3 * (1 - ssim(torch.sigmoid(out), x, 1.0)))
    pm1 = build({"name": "ssim"}, (3, 16, 16), value_range=(-1.0, 1.0))
    assert torch.allclose(pm1.score(2 * x - 1, out), 1 - ssim(torch.sigmoid(out), x, 1.0))
    assert torch.allclose(pm1.mean(out), 2 * torch.sigmoid(out) - 1)
    # the degeneracy the sigmoid removes: raw SSIM barely penalises a negated image
    y = 0.5 + 0.5 * torch.rand(3, 1, 8, 8)
    assert ssim(-y, y, 1.0).min() > 0.9
    assert (rec.score(y.expand(3, 3, 8, 8), torch.full((3, 3, 8, 8), -20.0)) > 0.5).all()


# -- focal frequency loss -------------------------------------------------------------------------

@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_ffl_weight_is_detached_and_in_unit_interval(shape):
    x = torch.rand(2, *shape)
    out = torch.rand(2, *shape, requires_grad=True)
    w = focal_weights(x, out)
    assert not w.requires_grad and w.shape == (2, *shape)
    assert w.min() >= 0 and torch.allclose(w.amax(dim=(-2, -1)), torch.ones(2, shape[0]))
    # the gradient is that of sum_f w_const |dF|^2, i.e. nothing flows through w
    focal_frequency_loss(x, out).sum().backward()
    out2 = out.detach().clone().requires_grad_(True)
    d = torch.fft.fft2(out2, norm="ortho") - torch.fft.fft2(x, norm="ortho")
    (w * (d.real ** 2 + d.imag ** 2)).flatten(1).mean(1).sum().backward()
    assert torch.allclose(out.grad, out2.grad, atol=1e-6)
    # with w differentiated the gradient would differ (alpha = 1 makes the loss cubic in |dF|)
    assert not torch.allclose(out.grad, 1.5 * out2.grad, atol=1e-6)


@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_ffl_zero_iff_spectra_match(shape):
    x = torch.rand(3, *shape)
    assert torch.equal(focal_frequency_loss(x, x.clone()), torch.zeros(3))
    y = x.clone()
    y[:, 0, 1, 2] += 1e-3                            # one pixel: every frequency changes
    assert (focal_frequency_loss(x, y) > 0).all()
    z = x + 0.5                                      # only the DC term differs
    assert (focal_frequency_loss(x, z) > 0).all()
    # alpha = 0: w = 1 and the orthonormal DFT preserves squares (Parseval)
    mse = ((x - y) ** 2).flatten(1).mean(1)
    assert torch.allclose(focal_frequency_loss(x, y, alpha=0.0), mse, rtol=1e-4)
    assert (focal_frequency_loss(x, y) <= mse * (1 + 1e-5)).all()


def test_ffl_objective_is_base_plus_weighted_ffl():
    x, out = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    rec = build({"name": "ffl", "weight": 4.0, "base": "l1", "reduction": "sum"}, (3, 16, 16))
    want = (x - out).abs().flatten(1).sum(1) + 4.0 * focal_frequency_loss(x, out, 1.0, "sum")
    assert torch.allclose(rec.score(x, out), want)
    none = build({"name": "ffl", "base": "none"}, (3, 16, 16))
    assert torch.allclose(none.score(x, out), focal_frequency_loss(x, out))


# -- Student-t decoder ----------------------------------------------------------------------------

def test_student_t_shapes_and_log_prob_on_hand_values():
    rec = build({"name": "student_t"})
    assert rec.likelihood and rec.support == "real"
    assert rec.decoder_shape((1, 8, 8)) == (3, 8, 8)
    assert rec.decoder_shape((3, 16, 16)) == (9, 16, 16)
    assert rec.decoder_shape((2,)) == (6,)
    x = torch.tensor([[0.5, -1.0]], dtype=torch.float64)
    loc = torch.tensor([[0.0, -2.0]], dtype=torch.float64)
    raw_scale = torch.tensor([[0.0, math.log(0.5)]], dtype=torch.float64)
    raw_dof = torch.tensor([[0.0, 3.0]], dtype=torch.float64)
    out = torch.cat([loc, raw_scale, raw_dof], 1)                     # parameter-major layout
    dof = 2.0 + torch.nn.functional.softplus(raw_dof)
    scale = 1e-3 + raw_scale.exp()
    want = torch.distributions.StudentT(dof, loc, scale).log_prob(x).sum(1)
    assert torch.allclose(rec.log_prob(x, out), want)
    by_hand = sum(stats.t.logpdf(float(x[0, i]), float(dof[0, i]), float(loc[0, i]), float(scale[0, i]))
                  for i in range(2))
    assert rec.log_prob(x, out).item() == pytest.approx(by_hand, rel=1e-10)
    assert torch.equal(rec.mean(out), loc)
    assert (dof > 2).all()


@pytest.mark.parametrize("shape", IMAGE_SHAPES + [(5,)])
def test_student_t_minimised_at_location_x(shape):
    rec = build({"name": "student_t"}, shape)
    x = torch.rand(4, *shape, dtype=torch.float64)
    raw = torch.randn(4, 2 * shape[0], *shape[1:], dtype=torch.float64)

    def nll(loc):
        return -rec.log_prob(x, torch.cat([loc, raw], 1))
    g = grad_of(nll, x)
    assert torch.isfinite(g).all() and g.abs().max() < 1e-9           # stationary at loc = x
    for delta in (1e-2, -1e-2, 0.3):
        assert (nll(x + delta) > nll(x)).all()
    out = torch.cat([x, raw], 1)
    g_all = grad_of(lambda o: -rec.log_prob(x, o), out)
    assert torch.isfinite(g_all).all()
    assert rec.mean(out).shape == x.shape


# -- DistVAE --------------------------------------------------------------------------------------

@pytest.mark.parametrize("spline", ["monotone", "convex"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 16, 16), (4,)])
def test_distvae_crps_matches_scoringrules(spline, shape):
    rec = build({"name": "distvae", "segments": 7, "spline": spline}, shape)
    assert not rec.likelihood and rec.decoder_shape(shape) == (8 * shape[0], *shape[1:])
    torch.manual_seed(1)
    out = torch.randn(2, 8 * shape[0], *shape[1:], dtype=torch.float64)
    x = torch.randn(2, *shape, dtype=torch.float64)
    crps = rec.crps(x, out)
    assert crps.shape == x.shape
    # independent check: the CDF of a fine quantile grid, scored by scoringrules
    n = 4000
    alpha = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    ens = rec.quantile(out, alpha).movedim(1, -1)                     # [B, *data, n]
    for estimator in ("int", "qd"):
        ref = sr.crps_ensemble(x.numpy(), ens.numpy(), estimator=estimator, backend="numpy")
        np.testing.assert_allclose(crps.numpy(), ref, rtol=1e-4, atol=1e-5)
    assert torch.allclose(rec.score(x, out), crps.flatten(1).sum(1))


def test_distvae_crps_against_monte_carlo_energy_form():
    rec = build({"name": "distvae", "segments": 4}, (3,))
    out = torch.randn(1, 15, dtype=torch.float64)
    x = torch.tensor([[0.3, -5.0, 5.0]], dtype=torch.float64)         # inside, below, above
    g = torch.Generator().manual_seed(0)
    u = torch.rand(200_000, generator=g, dtype=torch.float64)
    s = rec.quantile(out, u)[0]                                       # [N, 3]
    mc = (s - x).abs().mean(0) - 0.5 * (s[::2] - s[1::2]).abs().mean(0)
    assert torch.allclose(rec.crps(x, out)[0], mc, atol=3e-3)


@pytest.mark.parametrize("spline", ["monotone", "convex"])
def test_distvae_quantiles_monotone_mean_and_point_mass(spline):
    rec = build({"name": "distvae", "segments": 6, "spline": spline}, (1, 8, 8))
    out = 5 * torch.randn(3, 7, 8, 8, dtype=torch.float64)
    q = rec.knot_values(out)
    assert q.shape == (3, 7, 1, 8, 8) and (q.diff(dim=1) >= 0).all()
    dense = rec.quantile(out, torch.linspace(0, 1, 601, dtype=torch.float64))
    assert (dense.diff(dim=1) >= -1e-12).all()
    assert torch.allclose(dense[:, 0], q[:, 0]) and torch.allclose(dense[:, -1], q[:, -1])
    mid = rec.quantile(out, (torch.arange(6000, dtype=torch.float64) + 0.5) / 6000).mean(1)
    assert torch.allclose(rec.mean(out), mid, atol=1e-6) and rec.mean(out).shape == (3, 1, 8, 8)
    # "perfect reconstruction": a point mass at x (base = x, increments ~ 0) has CRPS ~ 0
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    point = torch.cat([x, torch.full((3, 6, 8, 8), -40.0, dtype=torch.float64)], 1)
    assert rec.score(x, point).abs().max() < 1e-12
    # a point mass at c scores |x - c|
    shifted = torch.cat([x + 0.25, point[:, 1:]], 1)
    assert torch.allclose(rec.crps(x, shifted), torch.full_like(x, 0.25))


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 16, 16), (4,)])
def test_distvae_gradients_are_exact_and_finite(shape):
    rec = build({"name": "distvae", "segments": 3}, shape)
    torch.manual_seed(2)
    out = torch.randn(2, 4 * shape[0], *shape[1:], dtype=torch.float64)
    x = torch.randn(2, *shape, dtype=torch.float64)
    g = grad_of(lambda o: rec.score(x, o), out)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    if shape == (4,):   # the detached crossing fraction leaves the gradient exact
        assert torch.autograd.gradcheck(lambda o: rec.score(x, o),
                                        out.clone().requires_grad_(True))
        assert torch.autograd.gradcheck(lambda xx: rec.score(xx, out),
                                        x.clone().requires_grad_(True))
    flat = torch.cat([x, torch.full((2, 3 * shape[0], *shape[1:]), -40.0, dtype=torch.float64)], 1)
    assert torch.isfinite(grad_of(lambda o: rec.score(x, o), flat)).all()   # flat segments: no 0/0


def test_piecewise_linear_crps_of_uniform():
    # U(0, 1): Q(alpha) = alpha; CRPS(U, x) = x^2 - x + 1/3 on [0, 1]
    x = torch.tensor([[0.0], [0.3], [1.0]], dtype=torch.float64)
    knots = torch.tensor([0.0, 1.0], dtype=torch.float64)
    q = knots.view(1, 2, 1).expand(3, 2, 1)
    assert torch.allclose(piecewise_linear_crps(x, q, knots), x ** 2 - x + 1 / 3)


# -- MMD (InfoVAE) --------------------------------------------------------------------------------

class _Model:
    def __init__(self, m, shift=0.0):
        self.prior = type("P", (), {"sample": lambda self_, n: torch.randn(n, m) + shift})()


@pytest.mark.parametrize("kernel", ["imq", "rbf"])
def test_mmd_unbiased_zero_for_same_distribution_positive_for_shifted(kernel):
    cal = CALIBRATORS.build({"name": "mmd", "kernel": kernel}, "model.calibrators.0", latent_dim=4,
                            data_shape=(1, 8, 8), data_kind="image", value_range=(0.0, 1.0))
    reps, n = 200, 64
    mmd = torch.vmap(lambda z, p: mmd_unbiased(z, p, kernel, cal.bandwidths))   # all repeats at once
    prior = torch.randn(reps, n, 4)
    same, shifted = mmd(torch.randn(reps, n, 4), prior), mmd(torch.randn(reps, n, 4) + 1.0, prior)
    se = same.std() / math.sqrt(reps)
    assert same.mean().abs() < 3 * se                                  # unbiased: E = 0
    assert (same < 0).any()                                            # a U-statistic, not a V
    assert shifted.mean() > 10 * max(se, shifted.std() / math.sqrt(reps))
    assert (shifted > same.max()).float().mean() > 0.9
    # the calibrator is weight * this estimate, with prior samples from model.prior
    z = torch.randn(n, 4)
    torch.manual_seed(3)
    term, logs = cal.vae_loss_term(_Model(4), None, {"z": z})
    torch.manual_seed(3)
    assert torch.allclose(term, mmd_unbiased(z, torch.randn(n, 4), kernel, cal.bandwidths))
    assert torch.equal(logs["mmd"], term.detach())


def test_mmd_gradient_flows_to_z_and_weight_scales():
    z = torch.randn(32, 3, requires_grad=True)
    cal = CALIBRATORS.build({"name": "mmd", "weight": 5.0}, "c", latent_dim=3)
    torch.manual_seed(0)
    term, logs = cal.vae_loss_term(_Model(3, shift=1.0), None, {"z": z})
    term.backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert term.item() == pytest.approx(5.0 * logs["mmd"].item())
    # leading sample dims are flattened; the prior draws as many samples
    zz = torch.randn(2, 16, 3)
    torch.manual_seed(0)
    a = cal.vae_loss_term(_Model(3), None, {"z": zz})[0]
    torch.manual_seed(0)
    b = cal.vae_loss_term(_Model(3), None, {"z": zz.reshape(32, 3)})[0]
    assert torch.allclose(a, b)
    with pytest.raises(ValueError):
        mmd_unbiased(torch.randn(1, 3), torch.randn(5, 3))


def test_infovae_model_passes_mmd_gradient_to_encoder():
    cfg = {"latent_dim": 2, "kl_weight": 0.0, "encoder": {"name": "mlp", "hidden": [8]},
           "decoder": {"name": "mlp", "hidden": [8]}, "reconstruction": {"name": "l2"},
           "calibrators": [{"name": "mmd", "weight": 100.0}]}
    from energyvae.models.vae import VAEParams
    from energyvae.registry import parse_params
    model = build_model(("vae", parse_params(VAEParams, cfg, "model")), (1, 8, 8), "image", (0.0, 1.0))
    state = {}
    loss, logs = model("vae", torch.rand(16, 1, 8, 8), state)
    assert "mmd" in logs and torch.isfinite(loss)
    enc = next(model.encoder.parameters())
    term, _ = model.calibrators[0].vae_loss_term(model, None, state)   # the MMD term alone
    g_mmd = torch.autograd.grad(term, enc, retain_graph=True)[0]
    assert torch.isfinite(g_mmd).all() and g_mmd.abs().sum() > 0
    assert torch.isfinite(torch.autograd.grad(loss, enc)[0]).all()


# -- config validation ----------------------------------------------------------------------------

@pytest.mark.parametrize("spec", [
    {"name": "l2", "weight": -1.0}, {"name": "l1", "weight": -0.5}, {"name": "ssim", "weight": -1.0},
    {"name": "ffl", "weight": -1.0}, {"name": "ffl", "alpha": -1.0}, {"name": "ffl", "base": "l3"},
    {"name": "ffl", "weight": 0.0, "base": "none"}, {"name": "student_t", "min_dof": 0.0},
    {"name": "student_t", "min_scale": -1.0}, {"name": "distvae", "segments": 0},
    {"name": "distvae", "spline": "cubic"}, {"name": "l2", "sigma": 1.0}, {"name": "ssim", "window": 7},
    {"name": "distvae", "knots": 3}, {"name": "student_t", "dof": 3.0}, {"name": "ssim", "data_range": 1.0},
])
def test_bad_reconstruction_configs_raise(spec):
    with pytest.raises(ConfigError):
        RECONSTRUCTIONS.parse(spec, "model.reconstruction")


@pytest.mark.parametrize("spec", [
    {"name": "mmd", "weight": -1.0}, {"name": "mmd", "kernel": "laplace"}, {"name": "mmd", "scales": []},
    {"name": "mmd", "scales": [1.0, -2.0]}, {"name": "mmd", "prior_var": 0.0}, {"name": "mmd", "lambda": 1.0},
])
def test_bad_mmd_configs_raise(spec):
    with pytest.raises(ConfigError):
        CALIBRATORS.parse(spec, "model.calibrators.0")


@pytest.mark.parametrize("name", ["ssim", "ffl"])
def test_image_only_objectives_reject_toy_vectors(tmp_path, name):
    cfg = build_config({"run": {"dir": str(tmp_path)}, "data": {"name": "8gaussians"},
                        "model": {"latent_dim": 2, "reconstruction": {"name": name}},
                        "train": {"steps": 1, "progress": False}})
    with pytest.raises(ConfigError, match=name):
        prepare(cfg)


def test_ssim_needs_bounded_images():
    with pytest.raises(ConfigError, match="bounded"):
        build({"name": "ssim"}, (1, 8, 8), value_range=None)
    with pytest.raises(ConfigError):
        build({"name": "ssim"}, (1, 2, 8))


# -- training smoke runs --------------------------------------------------------------------------

SMOKE = {
    "l2": {"reconstruction": {"name": "l2"}},
    "l1": {"reconstruction": {"name": "l1"}},
    "ssim": {"reconstruction": {"name": "ssim", "weight": 64.0}},
    "ffl": {"reconstruction": {"name": "ffl"}},
    "student_t": {"reconstruction": {"name": "student_t"}},
    "distvae": {"reconstruction": {"name": "distvae", "segments": 4}},
    "infovae": {"reconstruction": {"name": "l2"}, "kl_weight": 0.0,
                "calibrators": [{"name": "mmd", "weight": 100.0}]},
}


@pytest.mark.parametrize("name", list(SMOKE))
def test_training_smoke_on_digits(tmp_path, name):
    cfg = build_config({
        "run": {"dir": str(tmp_path / name)},
        "data": {"name": "digits"},
        "model": {"latent_dim": 2, "encoder": {"name": "mlp", "hidden": [16]},
                  "decoder": {"name": "mlp", "hidden": [16]}, **SMOKE[name]},
        "train": {"steps": 4, "batch_size": 32, "eval_every": 4, "checkpoint_every": 4,
                  "log_every": 1, "progress": False, "eval_batches": 2},
    })
    data, model = prepare(cfg)
    Trainer(cfg, model, data).fit()
    recs = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in recs if "loss" in r]
    assert len(losses) >= 4 and all(math.isfinite(v) for v in losses)
    x = data.preprocess(data.train.x[:5])
    assert model.reconstruct(x).shape == x.shape and model.sample(3).shape == (3, *x.shape[1:])
    if name == "infovae":
        assert any("mmd" in r for r in recs)
