"""EnVAE / FEnVAE energy-score objectives (paper 000) against independent oracles.

Oracles: ``scoringrules.es_ensemble(estimator="fair")`` (loop-based numba code), a plain numpy
double loop, closed forms (beta = 2; the Gaussian CRPS for beta = 1 in 1-D), and Monte Carlo
with seeds different from the estimator's. Every Monte-Carlo comparison states its tolerance
in standard errors of the compared means.
"""
import math

import numpy as np
import pytest
import scoringrules as sr
import torch

from energyvae.config import build_config
from energyvae.errors import ConfigError
from energyvae.models import RECONSTRUCTIONS, build_model
from energyvae.models.posterior import DiagGaussian
from energyvae.models.reconstruction.energy_score import (
    DECODE_LATENTS, EnergyScore, FastEnergyScore, auto_chunk, auto_decode_chunk, energy_score,
    energy_score_terms, fast_energy_score_terms, pairwise_mean)
from energyvae.models.vae import VAEParams
from energyvae.commands.train import train_run
from energyvae.runs import prepare
from energyvae.train import Trainer

F64 = torch.float64


def numpy_energy_score(samples, x, beta):
    """Brute-force unbiased energy score, one example at a time (samples [M, B, D], x [B, D])."""
    s, x = np.asarray(samples, dtype=np.float64), np.asarray(x, dtype=np.float64)
    m, b, _ = s.shape
    out = np.zeros(b)
    for k in range(b):
        fit = sum(np.linalg.norm(s[i, k] - x[k]) ** beta for i in range(m)) / m
        pair = sum(np.linalg.norm(s[i, k] - s[j, k]) ** beta
                   for i in range(m) for j in range(m) if i != j)
        out[k] = fit - pair / (2 * m * (m - 1))
    return out


def gaussian_crps(mu, s, x):
    """CRPS of N(mu, s^2) at x, closed form (Gneiting & Raftery 2007, Eq. 21) = ES with beta=1, 1-D."""
    z = (x - mu) / s
    pdf = math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + math.erf(z / math.sqrt(2)))
    return s * (z * (2 * cdf - 1) + 2 * pdf - 1 / math.sqrt(math.pi))


# -- the pure estimator -------------------------------------------------------------------------
@pytest.mark.parametrize("m,b,d", [(2, 3, 1), (7, 5, 4), (20, 4, 30)])
def test_matches_scoringrules_fair_estimator(m, b, d):
    g = torch.Generator().manual_seed(1)
    samples = torch.randn(m, b, d, generator=g, dtype=F64)
    x = torch.randn(b, d, generator=g, dtype=F64)
    # scoringrules: obs [B, D], fct [B, M, D] (m_axis=-2 ensemble, v_axis=-1 variables);
    # "fair" divides the pairwise sum by M(M-1) as we do, "nrg" by M^2
    ref = sr.es_ensemble(x.numpy(), samples.transpose(0, 1).numpy(), m_axis=-2, v_axis=-1,
                         estimator="fair")
    ours = energy_score(samples, x, beta=1.0)
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-12, atol=1e-12)
    # the biased estimator differs by exactly the 1/M share of the pairwise term
    fit, spread = energy_score_terms(samples, x, 1.0)
    nrg = sr.es_ensemble(x.numpy(), samples.transpose(0, 1).numpy(), estimator="nrg")
    np.testing.assert_allclose((fit - spread * (m - 1) / m).numpy(), nrg, rtol=1e-12, atol=1e-12)
    # float32 agrees to float32 tolerance
    np.testing.assert_allclose(energy_score(samples.float(), x.float()).numpy(), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("beta", [0.3, 1.0, 1.5, 2.0])
def test_matches_brute_force_for_any_beta(beta):
    g = torch.Generator().manual_seed(2)
    samples, x = torch.randn(6, 3, 5, generator=g, dtype=F64), torch.randn(3, 5, generator=g, dtype=F64)
    np.testing.assert_allclose(energy_score(samples, x, beta).numpy(),
                               numpy_energy_score(samples, x, beta), rtol=1e-12)


def test_beta2_closed_form():
    """beta = 2: with xbar the sample mean and C the unbiased sample covariance,
    sum_{i != j} ||x_i - x_j||^2 = 2M sum_i ||x_i - xbar||^2 = 2M(M-1) tr C and
    1/M sum_i ||x_i - x||^2 = ||xbar - x||^2 + (M-1)/M tr C, so the unbiased estimator is
    ||xbar - x||^2 - tr(C)/M (expectation ||E X - x||^2), and the biased (M^2) one is exactly
    ||xbar - x||^2."""
    g = torch.Generator().manual_seed(3)
    m = 9
    samples, x = torch.randn(m, 4, 6, generator=g, dtype=F64) * 2 + 1, torch.randn(4, 6, generator=g, dtype=F64)
    xbar = samples.mean(0)
    tr_c = (samples - xbar).pow(2).sum((0, 2)) / (m - 1)
    closed = (xbar - x).pow(2).sum(-1) - tr_c / m
    torch.testing.assert_close(energy_score(samples, x, beta=2.0), closed, rtol=1e-12, atol=1e-12)
    fit, spread = energy_score_terms(samples, x, 2.0)
    torch.testing.assert_close(fit - spread * (m - 1) / m, (xbar - x).pow(2).sum(-1), rtol=1e-12, atol=1e-12)


def test_chunked_equals_unchunked_values_and_gradients():
    g = torch.Generator().manual_seed(4)
    base = torch.randn(11, 3, 8, generator=g, dtype=F64)
    x = torch.randn(3, 8, generator=g, dtype=F64)
    results = []
    for chunk in (None, 1, 3, 11, 50):
        s = base.clone().requires_grad_()
        val = energy_score(s, x, beta=0.7, chunk=chunk)
        val.sum().backward()
        results.append((val.detach(), s.grad))
    for val, grad in results[1:]:
        torch.testing.assert_close(val, results[0][0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad, results[0][1], rtol=1e-12, atol=1e-12)
    assert auto_chunk(128, 50, 784) == 50 and auto_chunk(128, 1000, 784) == 38
    assert auto_chunk(10**6, 50, 10**4) == 1


# -- the Gram-form pairwise term against direct differences -----------------------------------
def direct_pairwise_mean(samples, beta):
    """The direct-difference form in float64: 1/(M(M-1)) sum_{i != j} ||x_i - x_j||^beta from
    the [B, M, M, D] differences, the power masked where a distance is 0 (samples [B, M, D])."""
    s = samples.double()
    m = s.shape[1]
    r = (s[:, :, None] - s[:, None, :]).pow(2).sum(-1)
    pos = r > 0
    safe = torch.where(pos, r, torch.ones_like(r))
    return torch.where(pos, safe.pow(beta / 2), torch.zeros_like(r)).sum((1, 2)) / (m * (m - 1))


def _pairwise_cases():
    """[B, M, D] sample sets: spread, offset, near-identical clouds, exact duplicates, isolated
    near pairs, all identical (a point-mass posterior)."""
    g = torch.Generator().manual_seed(40)
    b, m, d = 3, 12, 64

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=F64)
    base = rnd(b, 1, d)
    dups = rnd(b, m, d)
    dups[:, 1] = dups[:, 0]
    dups[:, 5] = dups[:, 0]
    dups[:, 3] = dups[:, 2]
    near_dups = base + 1e-4 * rnd(b, m, d)
    near_dups[:, 7] = near_dups[:, 6]
    pair = rnd(b, m, d)
    pair[:, 4] = pair[:, 9] + 1e-6 * rnd(b, d)
    return {"spread": rnd(b, m, d), "offset": 100 + rnd(b, m, d),
            "near 1e-4": base + 1e-4 * rnd(b, m, d), "near 1e-6": torch.sigmoid(base) + 1e-6 * rnd(b, m, d),
            "duplicates": dups, "near+duplicates": near_dups, "isolated near pair": pair,
            "identical": base.expand(b, m, d).clone()}


def _rel(a, ref):
    return ((a.double() - ref).norm() / ref.norm()).item() if ref.norm() > 0 else a.abs().max().item()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("beta", [1.0, 0.5, 1.5])
def test_gram_pairwise_equals_direct_differences(beta, dtype):
    """Value and gradient w.r.t. the samples within 1e-6 relative (norm of the difference) of the
    direct-difference form, evaluated in float64 on the same (float32 or float64) values; the
    output and gradient keep the input dtype. Where every distance is 0 both are exactly 0.
    With chunk 5 the first row chunk holds 4 duplicate pairs but recomputes only
    ceil(NEAR_PAIRS * 5) = 3 of them: the fourth falls under the Gram floor (taken as 0)."""
    for name, s in _pairwise_cases().items():
        ref_in = s.to(dtype).double().requires_grad_()
        ref = direct_pairwise_mean(ref_in, beta)
        ref.sum().backward()
        for chunk in (None, 5):
            t = s.to(dtype).requires_grad_()
            val = pairwise_mean(t, beta, chunk=chunk)
            val.sum().backward()
            assert val.dtype == dtype and t.grad.dtype == dtype
            assert torch.isfinite(val).all() and torch.isfinite(t.grad).all(), name
            # 1e-6 everywhere; unchunked, float64: all near/duplicate pairs recomputed, ~exact
            tol = 1e-12 if chunk is None and dtype == torch.float64 else 1e-6
            assert _rel(val.detach(), ref.detach()) < tol, (name, chunk, _rel(val.detach(), ref.detach()))
            assert _rel(t.grad, ref_in.grad) < tol, (name, chunk, _rel(t.grad, ref_in.grad))
            if name == "identical":
                assert (val == 0).all() and (t.grad == 0).all()
        if name == "duplicates":         # no recomputation at all: the floor alone zeroes them
            t = s.to(dtype).requires_grad_()
            val = pairwise_mean(t, beta, near=0)
            val.sum().backward()
            tol = 1e-12 if dtype == torch.float64 else 1e-6
            assert _rel(val.detach(), ref.detach()) < tol and _rel(t.grad, ref_in.grad) < tol


def test_gram_pairwise_beats_float32_direct_differences():
    """On float32 near-identical samples the float64 Gram form is closer to the exact value than
    float32 direct differences (``torch.cdist``, the previous implementation) are."""
    g = torch.Generator().manual_seed(41)
    s = (torch.sigmoid(torch.randn(4, 1, 784, generator=g)) + 1e-5 * torch.randn(4, 16, 784, generator=g))
    exact = direct_pairwise_mean(s, 1.0)
    m = s.shape[1]
    cd = torch.cdist(s, s, compute_mode="donot_use_mm_for_euclid_dist").sum((1, 2)) / (m * (m - 1))
    assert _rel(pairwise_mean(s, 1.0), exact) < 1e-7 < _rel(cd, exact)


def test_gram_pairwise_nan_propagates():
    """A NaN sample gives a NaN term (not a silently masked 0); the other examples stay finite."""
    s = torch.randn(2, 4, 3, dtype=F64)
    s[0, 1, 0] = float("nan")
    val = pairwise_mean(s, 1.0)
    assert torch.isnan(val[0]) and torch.isfinite(val[1])


def test_envae_loss_reads_no_tensor_on_the_host(monkeypatch):
    """No ``item``/``bool``/``float``/``int``/``tolist`` of a tensor in EnVAE's loss and its
    backward (each would be a host synchronisation on CUDA): the near-pair recomputation is a
    fixed-size top-k, the chunk sizes are Python ints."""
    calls = []
    for name in ("item", "__bool__", "__float__", "__int__", "tolist"):
        orig = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name,
                            lambda self, *a, _o=orig, _n=name, **k: (calls.append(_n), _o(self, *a, **k))[1])
    net = torch.nn.Linear(3, 20, dtype=F64)
    q = DiagGaussian(torch.randn(4, 3, dtype=F64), torch.rand(4, 3, dtype=F64) + 0.1)
    loss, _, _ = EnergyScore(samples=6, beta=0.5, chunk=4, decode_chunk=2).loss(
        torch.rand(4, 20, dtype=F64), q, net)
    loss.sum().backward()
    monkeypatch.undo()
    assert calls == []


# -- chunked decoding ---------------------------------------------------------------------------
def test_auto_decode_chunk_rule():
    assert DECODE_LATENTS == 320
    assert auto_decode_chunk(64, 50) == 5 and auto_decode_chunk(128, 50) == 2
    assert auto_decode_chunk(1024, 50) == 1 and auto_decode_chunk(3, 5) == 5
    assert auto_decode_chunk(64, 50, "cuda") == 50        # off CPU: one call


@pytest.mark.parametrize("decode_chunk,batch", [(None, 5), (None, 100), (1, 5), (3, 5), (7, 5), (50, 5)])
def test_chunked_decoding_equals_one_call(decode_chunk, batch):
    """Same draws of z, same loss, gradients and logs (up to float rounding) as one decoder call
    on all M x B latents; ``decode_chunk`` samples per call (the last call takes the rest)."""
    torch.manual_seed(6)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 20))
    mu, sd = torch.randn(batch, 3), torch.rand(batch, 3) + 0.1
    x = torch.rand(batch, 20)
    results = {}
    for chunk in (decode_chunk, "one call"):
        calls = []

        def decode(z):
            calls.append(z.shape[0])
            return net(z)
        obj = EnergyScore(samples=7, beta=1.5, output="sigmoid", value_range=(0.0, 1.0),
                          decode_chunk=7 if chunk == "one call" else chunk)
        net.zero_grad()
        torch.manual_seed(7)
        loss, z, logs = obj.loss(x, DiagGaussian(mu, sd), decode)
        loss.sum().backward()
        results[chunk] = (loss.detach(), z.detach(), logs, [p.grad.clone() for p in net.parameters()], calls)
    (loss, z, logs, grads, calls), (loss1, z1, logs1, grads1, calls1) = results[decode_chunk], results["one call"]
    assert calls1 == [7]
    c = decode_chunk or auto_decode_chunk(batch, 7)          # auto: 7 at B = 5, 3 at B = 100
    assert calls == [min(c, 7 - i) for i in range(0, 7, c)]
    assert torch.equal(z, z1)
    torch.testing.assert_close(loss, loss1, rtol=1e-6, atol=1e-7)
    for a, b in zip(grads, grads1):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for k in logs:
        torch.testing.assert_close(logs[k], logs1[k], rtol=1e-6, atol=1e-7)


def test_gradients_finite_at_zero_distances():
    """Identical samples (a point-mass posterior) and a sample equal to x: finite gradients."""
    x = torch.zeros(2, 3, dtype=F64)
    for beta in (0.5, 1.0, 2.0):
        s = torch.zeros(4, 2, 3, dtype=F64, requires_grad=True)
        energy_score(s, x, beta).sum().backward()
        assert torch.isfinite(s.grad).all() and (s.grad == 0).all()
        s = torch.randn(4, 2, 3, dtype=F64)
        s[1] = s[0]
        s[2, 0] = x[0]
        s.requires_grad_()
        energy_score(s, x, beta).sum().backward()
        assert torch.isfinite(s.grad).all()


# -- unbiasedness -----------------------------------------------------------------------------
def test_unbiased_against_gaussian_crps_closed_form():
    """1-D, beta = 1: mean over N draws of the M = 3 estimator equals the Gaussian CRPS within
    4 standard errors; the biased (M^2) estimator is off by E|X - X'|/(2M) = s/(sqrt(pi) M)."""
    mu, s, x0, m, n = 0.3, 1.5, 1.1, 3, 200_000
    g = torch.Generator().manual_seed(10)
    samples = mu + s * torch.randn(m, n, 1, generator=g, dtype=F64)
    x = torch.full((n, 1), x0, dtype=F64)
    fit, spread = energy_score_terms(samples, x, 1.0)
    est = fit - spread
    exact = gaussian_crps(mu, s, x0)
    assert exact == pytest.approx(float(sr.crps_normal(x0, mu, s)), rel=1e-10)   # the oracle itself
    se = est.std().item() / math.sqrt(n)
    assert abs(est.mean().item() - exact) < 4 * se, (est.mean().item(), exact, se)
    biased = (fit - spread * (m - 1) / m).mean().item()
    assert biased - exact == pytest.approx(s / (math.sqrt(math.pi) * m), abs=5 * se)
    assert biased - exact > 10 * se                    # the test can tell the two apart


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_unbiased_multivariate(beta):
    """X ~ N(m, diag s^2) in 3-D: mean of the M = 4 estimator over N draws vs the exact score,
    by closed form ||m - x||^2 for beta = 2, else by a 4M-sample Monte Carlo with another seed
    (tolerance: 4 combined standard errors)."""
    mean = torch.tensor([0.5, -1.0, 0.0], dtype=F64)
    sd = torch.tensor([1.0, 0.5, 2.0], dtype=F64)
    x = torch.tensor([1.0, 0.0, -1.0], dtype=F64)
    n, m = 100_000, 4
    g = torch.Generator().manual_seed(11)
    est = energy_score(mean + sd * torch.randn(m, n, 3, generator=g, dtype=F64), x.expand(n, 3), beta)
    se = est.std().item() / math.sqrt(n)
    if beta == 2.0:
        exact, se_exact = (mean - x).pow(2).sum().item(), 0.0
    else:
        h = torch.Generator().manual_seed(12)
        big = 4_000_000
        a = mean + sd * torch.randn(big, 3, generator=h, dtype=F64)
        b = mean + sd * torch.randn(big, 3, generator=h, dtype=F64)
        terms = (a - x).norm(dim=-1).pow(beta) - 0.5 * (a - b).norm(dim=-1).pow(beta)
        exact, se_exact = terms.mean().item(), terms.std().item() / math.sqrt(big)
    assert abs(est.mean().item() - exact) < 4 * math.hypot(se, se_exact), (est.mean().item(), exact, se)


# -- FEnVAE -----------------------------------------------------------------------------------
def linear_decoder(a, c):
    return lambda z: z @ a.T + c


@pytest.mark.parametrize("beta", [1.0, 2.0])
@pytest.mark.parametrize("variant", ["single", "double", "antithetic"])
def test_fenvae_dispersion_matches_pairwise_for_linear_decoder(beta, variant):
    """g(z) = A z + c: E 1/2||g(mu + sqrt2 sigma eps) - g(mu)||^beta = 1/2 E||X - X'||^beta with
    X, X' iid from g_# q, the EnVAE pairwise term (4 combined standard errors); for beta = 2 both
    equal tr(A diag(sigma^2) A^T) exactly. The fit terms agree as well."""
    g = torch.Generator().manual_seed(20)
    a, c = torch.randn(5, 3, generator=g, dtype=F64), torch.randn(5, generator=g, dtype=F64)
    mu0, sd0 = torch.tensor([0.2, -0.4, 1.0], dtype=F64), torch.tensor([0.5, 1.5, 0.8], dtype=F64)
    n = 200_000
    q = DiagGaussian(mu0.expand(n, 3), sd0.expand(n, 3))
    x = torch.randn(5, generator=g, dtype=F64).expand(n, 5)
    decode = linear_decoder(a, c)
    torch.manual_seed(21)
    fit_f, spread_f, z = fast_energy_score_terms(x, q, decode, beta, variant)
    assert z.shape == (n, 3)
    torch.manual_seed(22)
    samples = decode(q.rsample(2))                     # [2, N, 5]: M = 2 keeps draws independent
    fit_e, spread_e = energy_score_terms(samples, x, beta)
    se = math.hypot(spread_f.std().item(), spread_e.std().item()) / math.sqrt(n)
    assert abs(spread_f.mean().item() - spread_e.mean().item()) < 4 * se
    se_fit = math.hypot(fit_f.std().item(), fit_e.std().item()) / math.sqrt(n)
    assert abs(fit_f.mean().item() - fit_e.mean().item()) < 4 * se_fit
    if beta == 2.0:
        exact = (a * sd0).pow(2).sum().item()        # 1/2 E||X - X'||^2 = tr(A S A^T)
        assert abs(spread_f.mean().item() - exact) < 4 * spread_f.std().item() / math.sqrt(n)
        assert abs(spread_e.mean().item() - exact) < 4 * spread_e.std().item() / math.sqrt(n)


@pytest.mark.parametrize("beta", [0.3, 1.0, 1.5, 2.0])
def test_antithetic_variant_is_bounded_below_for_any_decoder(beta):
    """L_a >= 0 for every decoder (the triangle-inequality bound of the module docstring), here
    for steep random nonlinear decoders and data far from them, where Eq. 14 goes negative."""
    g = torch.Generator().manual_seed(30)
    worst_a, worst_14 = float("inf"), float("inf")
    for _ in range(20):
        w1, w2 = 5 * torch.randn(3, 16, generator=g, dtype=F64), 5 * torch.randn(16, 8, generator=g, dtype=F64)

        def decode(z):
            return torch.sinh(torch.tanh(z @ w1) @ w2)
        q = DiagGaussian(torch.randn(256, 3, generator=g, dtype=F64), torch.rand(256, 3, generator=g, dtype=F64) * 3)
        x = 3 * torch.randn(256, 8, generator=g, dtype=F64)
        fit, spread, _ = fast_energy_score_terms(x, q, decode, beta, "antithetic")
        worst_a = min(worst_a, (fit - spread).min().item())
        fit, spread, _ = fast_energy_score_terms(x, q, decode, beta, "single")
        worst_14 = min(worst_14, (fit - spread).min().item())
    assert worst_a >= -1e-9
    assert worst_14 < 0          # the bound is not vacuous: Eq. 14 does go below 0 on these cases


def test_fenvae_single_uses_sqrt2_times_the_same_eps():
    """The three latents of one decoder call: z*, mu and mu + sqrt2 (z* - mu)."""
    mu, sd = torch.randn(4, 2), torch.rand(4, 2) + 0.1
    calls = []

    def decode(z):
        calls.append(z.clone())
        return z * 2.0
    _, _, z = fast_energy_score_terms(torch.zeros(4, 2), DiagGaussian(mu, sd), decode, 1.0, "single")
    assert len(calls) == 1 and calls[0].shape == (3, 4, 2)
    zs, zm, zw = calls[0]
    torch.testing.assert_close(zs, z)
    torch.testing.assert_close(zm, mu)
    torch.testing.assert_close(zw, mu + math.sqrt(2) * (z - mu))


def test_fenvae_rejects_point_mass_posterior():
    q = DiagGaussian(torch.zeros(2, 3), None)
    with pytest.raises(ValueError, match="stochastic posterior"):
        FastEnergyScore().loss(torch.zeros(2, 4), q, lambda z: z.sum(-1, keepdim=True).expand(*z.shape[:-1], 4))
    with pytest.raises(ConfigError):
        FastEnergyScore().loss(torch.zeros(2, 4), q, lambda z: z)


# -- the Reconstruction interface -------------------------------------------------------------
def test_envae_loss_interface_one_decoder_call():
    mu, sd = torch.randn(3, 2), torch.rand(3, 2) + 0.1
    x = torch.rand(3, 1, 4, 4)
    calls = []

    def decode(z):
        calls.append(z.shape)
        return torch.tanh(z @ torch.ones(2, 16)).reshape(*z.shape[:-1], 1, 4, 4)
    obj = RECONSTRUCTIONS.build({"name": "energy_score", "samples": 5, "beta": 1.5}, "r")
    assert isinstance(obj, EnergyScore) and obj.likelihood is False
    torch.manual_seed(5)
    loss, z, logs = obj.loss(x, DiagGaussian(mu, sd), decode)
    assert calls == [torch.Size([5, 3, 2])]
    assert loss.shape == (3,) and z.shape == (3, 2) and set(logs) == {"es_fit", "es_spread"}
    torch.manual_seed(5)
    zs = DiagGaussian(mu, sd).rsample(5)
    torch.testing.assert_close(z, zs[0])
    ref = energy_score(decode(zs).flatten(2), x.flatten(1), 1.5)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(logs["es_fit"] - logs["es_spread"], loss.mean())
    assert obj.mean(x) is x and obj.decoder_shape((1, 4, 4)) == (1, 4, 4)


# -- gradients reach sigma through the dispersion term ----------------------------------------
def _sigma_grad(objective, data_spread, beta=1.0, n=1024, seed=0):
    """d mean-loss / d sigma for q = N(mu0, sigma^2 I) shared by n examples, g(z) = A z + c,
    data x = g(mu0 + data_spread * eps) (a point at g(mu0) when data_spread = 0)."""
    g = torch.Generator().manual_seed(seed)
    a, c = torch.randn(6, 3, generator=g, dtype=F64), torch.randn(6, generator=g, dtype=F64)
    mu0 = torch.randn(3, generator=g, dtype=F64)
    decode = linear_decoder(a, c)
    x = decode(mu0 + data_spread * torch.randn(n, 3, generator=g, dtype=F64))
    sigma = torch.tensor(0.5, dtype=F64, requires_grad=True)
    q = DiagGaussian(mu0.expand(n, 3), sigma.expand(n, 3))
    torch.manual_seed(seed + 1)
    loss, _, _ = objective.loss(x, q, decode)
    grad, = torch.autograd.grad(loss.mean(), sigma)
    return grad.item()


@pytest.mark.parametrize("objective", [EnergyScore(samples=8), FastEnergyScore(variant="single"), FastEnergyScore(variant="double"),
                                       FastEnergyScore(variant="antithetic")],
                         ids=["envae", "fenvae", "fenvae-double", "fenvae-antithetic"])
def test_gradient_on_sigma_has_the_right_sign(objective):
    """Spread data (drawn with sd 2 > sigma = 0.5 around the decoder's mean): the step increases
    sigma (d loss / d sigma < 0); point data at the decoder's mean: it decreases sigma (> 0)."""
    for seed in range(3):
        assert _sigma_grad(objective, data_spread=2.0, seed=seed) < 0
        assert _sigma_grad(objective, data_spread=0.0, seed=seed) > 0


@pytest.mark.parametrize("objective", [EnergyScore(samples=8), FastEnergyScore(variant="single")], ids=["envae", "fenvae"])
def test_dispersion_term_pushes_sigma_up(objective):
    """The dispersion term alone: d(-spread)/d sigma < 0, with the gradient reaching sigma."""
    g = torch.Generator().manual_seed(7)
    a = torch.randn(6, 3, generator=g, dtype=F64)
    sigma = torch.tensor(0.5, dtype=F64, requires_grad=True)
    n = 64
    q = DiagGaussian(torch.zeros(n, 3, dtype=F64), sigma.expand(n, 3))
    decode = linear_decoder(a, torch.zeros(6, dtype=F64))
    x = torch.zeros(n, 6, dtype=F64)
    if isinstance(objective, EnergyScore):
        samples = decode(q.rsample(objective.samples))
        _, spread = energy_score_terms(samples, x, objective.beta)
    else:
        _, spread, _ = fast_energy_score_terms(x, q, decode, objective.beta)
    grad, = torch.autograd.grad(-spread.mean(), sigma)
    assert grad.item() < 0


def test_spread_gradient_reaches_the_encoder_of_a_vae():
    model = build_model(("vae", VAEParams(latent_dim=2, encoder={"name": "mlp", "hidden": [8]},
                                          decoder={"name": "mlp", "hidden": [8]},
                                          reconstruction={"name": "energy_score", "samples": 4})), (5,), "vector")
    x = torch.randn(16, 5)
    q = model.encode(x)
    _, spread = energy_score_terms(model.decode(q.rsample(4)).flatten(2), x, 1.0)
    spread.mean().backward()
    grads = [p.grad for p in model.encoder.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    assert sum(gr.abs().sum() for gr in grads) > 0


# -- configs and training ---------------------------------------------------------------------
def _cfg(run_dir, reconstruction, posterior=None, steps=4):
    model = {"latent_dim": 3, "encoder": {"name": "mlp", "hidden": [16]},
             "decoder": {"name": "mlp", "hidden": [16]}, "reconstruction": reconstruction}
    if posterior:
        model["posterior"] = posterior
    return build_config({
        "run": {"dir": str(run_dir)},
        "data": {"name": "digits", "scale": "01"},
        "model": model,
        "train": {"steps": steps, "batch_size": 32, "eval_every": steps, "checkpoint_every": steps,
                  "log_every": 1, "eval_batches": 1, "progress": False},
        "eval": {"iw_samples": 10, "iw_max_examples": 20},
    })


@pytest.mark.parametrize("recon", [{"name": "energy_score", "samples": 4},
                                   {"name": "energy_score", "samples": 3, "beta": 0.5, "chunk": 1,
                                    "decode_chunk": 2},
                                   {"name": "fast_energy_score"},
                                   {"name": "fast_energy_score", "variant": "double", "beta": 2},
                                   {"name": "fast_energy_score", "variant": "antithetic", "beta": 0.5}],
                         ids=["envae", "envae-chunked", "fenvae", "fenvae-double", "fenvae-antithetic"])
def test_training_smoke(tmp_path, recon):
    cfg = _cfg(tmp_path / "run", recon)
    data, model = prepare(cfg)
    trainer = Trainer(cfg, model, data)
    before = [p.detach().clone() for p in model.parameters()]
    for i in range(4):
        x = trainer.batch(i)
        logs = trainer.train_step(x)
        trainer.step += 1
        assert all(math.isfinite(v) for v in logs.values()), logs
        assert {"es_fit", "es_spread", "loss", "recon", "kl"} <= set(logs)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    ev = model.evaluate(data.preprocess(data.val.x[:16]))
    assert "elbo" not in ev and torch.isfinite(ev["loss"]).all()


def test_train_run_end_to_end(tmp_path):
    """The full run (fit + finalize): no likelihood, so no IW NLL, but finite test metrics."""
    res = train_run(_cfg(tmp_path / "run", {"name": "energy_score", "samples": 4}, steps=3))
    assert math.isfinite(res["metrics"]["test"]["loss"]) and "iw" not in res["metrics"]


@pytest.mark.parametrize("recon,match", [
    ({"name": "energy_score", "beta": 2.5}, r"beta must be in \(0, 2\]"),
    ({"name": "energy_score", "beta": 0}, r"beta must be in \(0, 2\]"),
    ({"name": "fast_energy_score", "beta": 2.5}, r"beta must be in \(0, 2\]"),
    ({"name": "energy_score", "samples": 1}, "samples must be >= 2"),
    ({"name": "energy_score", "chunk": 0}, "chunk must be > 0"),
    ({"name": "energy_score", "decode_chunk": 0}, "decode_chunk must be > 0"),
    ({"name": "fast_energy_score", "variant": "triple"}, "variant"),
])
def test_config_errors(tmp_path, recon, match):
    with pytest.raises(ConfigError, match=match) as e:
        _cfg(tmp_path, recon)
    assert "model.reconstruction" in str(e.value)


def test_fenvae_with_delta_posterior_fails_clearly(tmp_path):
    cfg = _cfg(tmp_path / "run", {"name": "fast_energy_score"}, posterior={"name": "delta"})
    data, model = prepare(cfg)
    with pytest.raises(ValueError, match="stochastic posterior"):
        model("vae", data.preprocess(data.train.x[:8]), {})
    # EnVAE with a point mass degenerates to an autoencoder with loss ||g(mu) - x||^beta
    cfg = _cfg(tmp_path / "run2", {"name": "energy_score", "samples": 3}, posterior={"name": "delta"})
    data, model = prepare(cfg)
    x = data.preprocess(data.train.x[:8])
    loss, logs = model("vae", x, {})
    loss.backward()
    assert logs["es_spread"] == 0 and all(torch.isfinite(p.grad).all() for p in model.parameters()
                                          if p.grad is not None)


def test_sigmoid_output_maps_onto_the_data_range():
    from energyvae.runs import prepare
    for name in ("energy_score", "fast_energy_score"):
        cfg = build_config({"data": {"name": "digits", "scale": "pm1"},
                            "model": {"latent_dim": 2, "encoder": {"hidden": [8]}, "decoder": {"hidden": [8]},
                                      "reconstruction": {"name": name, "output": "sigmoid"}}})
        _, model = prepare(cfg)
        out = torch.tensor([-50.0, 0.0, 50.0])
        assert torch.allclose(model.reconstruction.mean(out), torch.tensor([-1.0, 0.0, 1.0]))
        with pytest.raises(ConfigError, match="bounded value range"):
            prepare(build_config({"data": {"name": "8gaussians"},
                                  "model": {"reconstruction": {"name": name, "output": "sigmoid"}}}))
