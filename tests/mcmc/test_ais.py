"""Annealed importance sampling (energyvae.mcmc.ais) against exactly known ln Z."""
import math

import pytest
import torch

from energyvae.mcmc.ais import AISResult, ais_log_partition, annealing_schedule
from energyvae.mcmc.grbm import grbm_energy, grbm_exact_log_partition

# Settings per transition: cheap but accurate (about 1 s per run on one CPU core).
CFG = {"hmc": dict(n_temps=500, n_leapfrog=5), "mala": dict(n_temps=1000)}


def _gaussian(d: int, seed: int = 0):
    """E(z) = 1/2 (z - m)^T P (z - m), |m| = 4, eigenvalues of P log-spaced in [0.5, 4]."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    P = Q @ torch.diag(torch.logspace(math.log10(0.5), math.log10(4.0), d, dtype=torch.float64)) @ Q.T
    m = torch.randn(d, generator=g, dtype=torch.float64)
    m = 4.0 * m / m.norm()
    log_z = 0.5 * d * math.log(2 * math.pi) - 0.5 * torch.logdet(P).item()
    Pf, mf = P.float(), m.float()

    def energy(z):
        dz = z - mf
        return 0.5 * ((dz @ Pf) * dz).sum(1)

    return energy, log_z


def _grbm(D: int, H: int, seed: int = 1, w_scale: float = 0.5):
    g = torch.Generator().manual_seed(seed)
    W = w_scale * torch.randn(D, H, generator=g)
    b = 0.5 * torch.randn(H, generator=g)
    mu = torch.randn(D, generator=g)
    sigma = 0.6 + 0.6 * torch.rand(D, generator=g)  # != 1, per visible unit
    return W, b, mu, sigma


@pytest.mark.parametrize("transition", ["hmc", "mala"])
@pytest.mark.parametrize("d", [2, 10])
def test_gaussian_log_partition(d, transition):
    energy, truth = _gaussian(d)
    r = ais_log_partition(energy, d, n_chains=256, transition=transition, seed=0, **CFG[transition])
    assert isinstance(r, AISResult)
    assert r.n_chains == 256 and r.log_weights.shape == (256,)
    assert 0 < r.stderr < 0.05
    assert abs(r.log_z - truth) < 3 * r.stderr, (r.log_z, truth, r.stderr)
    assert 0.3 < r.acceptance < 1.0
    assert 50 < r.ess <= 256
    assert r.group_log_z.shape == (8,) and math.isfinite(r.stderr_groups)


@pytest.mark.parametrize("transition", ["hmc", "mala"])
def test_grbm_ais_matches_exact(transition):
    W, b, mu, sigma = _grbm(5, 8)
    exact = grbm_exact_log_partition(W, b, mu, sigma).item()
    r = ais_log_partition(lambda z: grbm_energy(z, W, b, mu, sigma), 5, n_chains=256, init_std=1.5,
                          transition=transition, seed=0, **CFG[transition])
    assert r.stderr < 0.05
    assert abs(r.log_z - exact) < 3 * r.stderr + 0.02, (r.log_z, exact, r.stderr)


def test_grbm_exact_matches_2d_quadrature():
    W, b, mu, sigma = _grbm(2, 6, seed=3, w_scale=0.7)
    W64, b64, mu64, s64 = (t.double() for t in (W, b, mu, sigma))
    # All mixture centres mu + W h lie inside [mu - sum|W|, mu + sum|W|]; pad by 10 sigma.
    lo = mu64 - W64.abs().sum(1) - 10 * s64
    hi = mu64 + W64.abs().sum(1) + 10 * s64
    n = 1201
    u, v = torch.linspace(float(lo[0]), float(hi[0]), n, dtype=torch.float64), \
        torch.linspace(float(lo[1]), float(hi[1]), n, dtype=torch.float64)
    zz = torch.stack(torch.meshgrid(u, v, indexing="ij"), -1).reshape(-1, 2)
    neg_e = -grbm_energy(zz, W64, b64, mu64, s64)
    shift = neg_e.max()
    dens = (neg_e - shift).exp().reshape(n, n)
    integral = torch.trapezoid(torch.trapezoid(dens, v, dim=1), u)
    quad = (integral.log() + shift).item()
    exact = grbm_exact_log_partition(W, b, mu, sigma).item()
    assert exact == pytest.approx(quad, abs=1e-7)


def test_grbm_energy_is_hidden_marginal():
    """exp(-E(z)) = sum_h exp(-1/2 ||(z - mu)/sigma||^2 + h^T (W^T z / sigma^2 + b)), by brute force."""
    W, b, mu, sigma = (t.double() for t in _grbm(3, 4))
    z = torch.randn(7, 3, dtype=torch.float64)
    hs = torch.tensor([[(k >> j) & 1 for j in range(4)] for k in range(16)], dtype=torch.float64)
    quad = 0.5 * (((z - mu) / sigma) ** 2).sum(1, keepdim=True)  # [7, 1]
    lin = (z / sigma**2) @ W @ hs.T + hs @ b  # [7, 16]
    brute = torch.logsumexp(-quad + lin, 1)
    torch.testing.assert_close(-grbm_energy(z, W, b, mu, sigma), brute)


def test_grbm_exact_chunking_and_scalar_sigma():
    W, b, mu, _ = _grbm(4, 10)
    a = grbm_exact_log_partition(W, b, mu, 0.8)
    c = grbm_exact_log_partition(W, b, mu, torch.full((4,), 0.8), chunk_size=37)
    assert a.dtype == torch.float64 and a.dim() == 0
    torch.testing.assert_close(a, c)
    # W = 0: Z = 2^H prod(1 + e^b) / 2^H ... i.e. sum_h e^{b.h} times the Gaussian normaliser.
    z0 = grbm_exact_log_partition(torch.zeros(4, 10), b, mu, 0.8)
    ref = 2 * math.log(2 * math.pi) + 4 * math.log(0.8) + torch.nn.functional.softplus(b.double()).sum()
    torch.testing.assert_close(z0, ref)
    with pytest.raises(ValueError):
        grbm_exact_log_partition(torch.zeros(2, 21), torch.zeros(21), 0.0, 1.0)


def test_exact_weights_when_base_equals_target():
    """Target = base up to normalisation: every log-weight is ln Z exactly, zero variance."""
    s, d = 1.7, 3
    r = ais_log_partition(lambda z: 0.5 * (z * z).sum(1) / s**2, d, n_chains=64, n_temps=20,
                          init_std=s, seed=0, dtype=torch.float64)
    truth = 0.5 * d * math.log(2 * math.pi * s**2)
    torch.testing.assert_close(r.log_weights, torch.full((64,), truth, dtype=torch.float64))
    assert r.stderr == pytest.approx(0.0, abs=1e-6) and r.ess == pytest.approx(64.0)


def test_stderr_is_calibrated_across_independent_runs():
    """The spread of independent estimates matches the reported standard error (within 2x)."""
    energy, truth = _gaussian(2, seed=5)
    runs = [ais_log_partition(energy, 2, n_chains=128, n_temps=60, n_leapfrog=2, step_size=0.5, seed=s)
            for s in range(16)]
    est = torch.tensor([r.log_z for r in runs])
    mean_se = sum(r.stderr for r in runs) / len(runs)
    assert 0.5 < float(est.std()) / mean_se < 2.0
    assert abs(float(est.mean()) - truth) < 4 * mean_se / math.sqrt(len(runs))


def test_too_few_temperatures_is_noisier():
    energy, truth = _gaussian(10)
    short = ais_log_partition(energy, 10, n_chains=256, n_temps=10, n_leapfrog=5, seed=0)
    long = ais_log_partition(energy, 10, n_chains=256, n_temps=500, n_leapfrog=5, seed=0)
    assert short.ess < long.ess / 2 and short.stderr > 2 * long.stderr


def test_seed_reproducible_and_fixed_step():
    energy, truth = _gaussian(2)
    a = ais_log_partition(energy, 2, n_chains=32, n_temps=30, seed=7)
    b = ais_log_partition(energy, 2, n_chains=32, n_temps=30, seed=7)
    torch.testing.assert_close(a.log_weights, b.log_weights)
    r = ais_log_partition(energy, 2, n_chains=32, n_temps=30, seed=7, adapt=False, step_size=0.3,
                          transition="mala")
    assert torch.all(r.step_sizes == 0.3) and r.step_sizes.shape == (29,)
    assert a.step_sizes.shape == (29,) and not torch.all(a.step_sizes == a.step_sizes[0])


def test_module_energy_and_no_grad_context():
    class Quad(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(2.0))

        def forward(self, z):
            return 0.5 * self.scale * (z * z).sum(1)

    e = Quad()
    with torch.no_grad():
        r = ais_log_partition(e, 3, n_chains=64, n_temps=50, seed=0)
    assert e.scale.grad is None
    assert r.log_z == pytest.approx(1.5 * math.log(2 * math.pi / 2.0), abs=4 * r.stderr + 1e-3)


def test_schedules():
    for name in ("sigmoid", "linear", "geometric"):
        b = annealing_schedule(100, name)
        assert b.shape == (101,) and b[0] == 0 and b[-1] == 1 and bool((b[1:] > b[:-1]).all())
    energy, _ = _gaussian(2)
    r = ais_log_partition(energy, 2, n_chains=16, schedule=torch.linspace(0, 1, 11), seed=0)
    assert r.n_temps == 10
    with pytest.raises(ValueError):
        ais_log_partition(energy, 2, schedule=[0.0, 0.5], seed=0)
    with pytest.raises(ValueError):
        ais_log_partition(energy, 2, transition="ula", seed=0)
    with pytest.raises(ValueError):
        ais_log_partition(lambda z: z, 2, n_temps=3, seed=0)  # wrong output shape
