"""The MCMC kernels (energyvae.mcmc.kernels) against known targets: invariance of a Gaussian and
of a small GRBM (exact moments by enumeration), MALA's detailed balance on a 1-D target, HMC's
acceptance, the closed-form energy gradients against autograd, and no host read per step."""
import math

import pytest
import torch

from energyvae.mcmc.kernels import (StepSize, autograd_grad_fn, hmc_step, langevin_step, mala_log_ratio,
                                    mala_step)
from energyvae.models.priors.energies import GRBMEnergy, QuadraticEnergy
from energyvae.models.priors.samplers import MALA, MALAParams
from helpers import SyncCounter, grbm_moments

MEAN = torch.tensor([1.0, -2.0, 0.5])
STD = torch.tensor([0.5, 2.0, 1.0])


def gaussian_fn(z):
    """U(z) = 1/2 sum ((z - m) / s)^2 and its gradient."""
    d = (z - MEAN) / STD
    return 0.5 * (d * d).sum(-1), d / STD


def _moments_ok(z, mean, cov, tol_mean, tol_cov):
    assert torch.allclose(z.mean(0), mean, atol=tol_mean), (z.mean(0), mean)
    assert torch.allclose(torch.cov(z.T), cov, atol=tol_cov), (torch.cov(z.T), cov)


@pytest.mark.parametrize("kernel", ["mala", "hmc"])
def test_exact_kernels_leave_a_gaussian_invariant(kernel):
    """Start at exact samples; after 50 steps the law is still the target. 20000 chains: the
    sample mean's sd is <= 2 / sqrt(20000) = 0.014, so 0.06 is > 4 sd."""
    g = torch.Generator().manual_seed(0)
    n = 20000
    z = MEAN + STD * torch.randn(n, 3, generator=g)
    state = (z, *gaussian_fn(z))
    for _ in range(50):
        if kernel == "mala":
            state, log_alpha = mala_step(state, gaussian_fn, 0.3, STD, generator=g)
        else:
            state, log_alpha = hmc_step(state, gaussian_fn, 0.2, 5, generator=g)
    assert 0.3 < float(log_alpha.exp().mean()) < 1.0          # it moves, and not always
    _moments_ok(state[0], MEAN, torch.diag(STD**2), 0.06, 0.12)


def test_mala_from_a_far_start_reaches_a_small_grbm():
    """A 4 x 3 GRBM: exact mean and covariance by summing over the 8 hidden states."""
    torch.manual_seed(1)
    e = GRBMEnergy(4, 3, 1.0).double()
    with torch.no_grad():
        e.b.copy_(torch.tensor([0.5, -1.0, 0.2]))
        e.mu.copy_(torch.tensor([0.3, 0.0, -0.4, 0.1]))
    mean, cov = grbm_moments(e)
    g = torch.Generator().manual_seed(2)
    z = 3.0 + torch.randn(8000, 4, dtype=torch.float64, generator=g)
    state = (z, *e.energy_and_grad(z))
    for _ in range(300):
        state, _ = mala_step(state, e.energy_and_grad, 0.2, generator=g)
    _moments_ok(state[0], mean, cov, 0.08, 0.15)


def test_mala_acceptance_keeps_detailed_balance_on_a_1d_target():
    """pi(z) q(z'|z) a(z -> z') = pi(z') q(z|z') a(z' -> z) for a 1-D double well, with the
    analytic Gaussian proposal density; and the ratio equals the hand-written formula."""
    def fn(z):
        x = z[:, 0]
        return (x**2 - 1) ** 2, (4 * x * (x**2 - 1))[:, None]
    h = 0.15
    z, z2 = torch.linspace(-2, 2, 41, dtype=torch.float64)[:, None], torch.linspace(2, -1.7, 41, dtype=torch.float64)[:, None]
    (u, g), (u2, g2) = fn(z), fn(z2)

    def log_q(to, frm, grad):                    # ln N(to; frm - h grad, 2h), constants kept
        return -((to - frm + h * grad) ** 2)[:, 0] / (4 * h) - 0.5 * math.log(4 * math.pi * h)
    fwd = mala_log_ratio(z, u, g, z2, u2, g2, h)
    bwd = mala_log_ratio(z2, u2, g2, z, u, g, h)
    hand = (-u2 + log_q(z, z2, g2)) - (-u + log_q(z2, z, g))
    assert torch.allclose(fwd, hand, atol=1e-12) and torch.allclose(bwd, -hand, atol=1e-12)
    lhs = -u + log_q(z2, z, g) + fwd.clamp(max=0)
    rhs = -u2 + log_q(z, z2, g2) + bwd.clamp(max=0)
    assert torch.allclose(lhs, rhs, atol=1e-10)


def test_hmc_with_a_tiny_step_accepts_almost_always():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(2000, 3, generator=g)
    _, log_alpha = hmc_step((z, *gaussian_fn(z)), gaussian_fn, 1e-3, 10, generator=g)
    assert float(log_alpha.exp().mean()) > 0.999


def test_langevin_step_follows_its_formula_and_projects():
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    z, grad = torch.randn(5, 6), torch.randn(5, 6)
    mask = (torch.arange(6) % 2).float()
    out = langevin_step(z, grad, 0.1, 0.3, project=lambda t: t * mask, generator=g1)
    xi = torch.randn(5, 6, generator=g2)
    assert torch.equal(out, z - 0.1 * (grad * mask) + 0.3 * (xi * mask))


@pytest.mark.parametrize("cls,args", [(GRBMEnergy, (6, 5, 0.5)), (QuadraticEnergy, (6, 1e-3))])
def test_closed_form_energy_and_grad_equals_autograd(cls, args):
    """In float64, where 1e-6 measures the algebra and not float32 rounding."""
    torch.manual_seed(5)
    e = cls(*args).double()
    with torch.no_grad():
        for p in e.parameters():
            p.add_(0.3 * torch.randn_like(p))
    z = 2 * torch.randn(50, 6, dtype=torch.float64)
    (e1, g1), (e2, g2) = e.energy_and_grad(z), autograd_grad_fn(e)(z)
    assert torch.allclose(e1, e2, atol=1e-6, rtol=1e-6) and torch.allclose(g1, g2, atol=1e-6, rtol=1e-6)
    assert all(p.grad is None for p in e.parameters())


def test_step_size_adapts_on_the_device_towards_its_target():
    s = StepSize(0.1, 0.5)
    for _ in range(10):
        s.update(torch.tensor(0.9))               # accepting too often: the step grows
    assert float(s.h) > 0.1
    s.record()
    s.record()
    s.freeze_mean()
    m = StepSize(1.0, 0.8, rule="multiplicative", lo=0.5, hi=2.0)
    for _ in range(100):
        m.update(torch.tensor(0.1))
    assert math.isclose(float(m.h), 0.5, rel_tol=1e-6)


def test_a_mala_step_reads_nothing_back_from_the_device(monkeypatch):
    e = GRBMEnergy(8, 4, 0.3)
    sampler = MALA(8, MALAParams(steps=30, warmup=20, min_chains=16))
    sampler.sample(e, 16)                           # warm the code paths
    z = torch.randn(16, 8)
    state, scale, step = (z, *e.energy_and_grad(z)), torch.ones(8), StepSize(0.05, 0.574)
    counter = SyncCounter(monkeypatch)
    for _ in range(3):                              # the sampler's loop body: step, adapt
        state, log_alpha = mala_step(state, e.energy_and_grad, step.h, scale)
        step.update(log_alpha.exp().mean())
        step.record()
    monkeypatch.undo()
    assert counter.calls == []


@pytest.mark.slow
def test_a_compiled_mala_chain_samples_the_same_law_as_the_eager_one():
    """compile: true draws the same random numbers in the same order: same chain up to float
    rounding of the fused kernels."""
    e = GRBMEnergy(8, 4, 0.3)
    out = {}
    for compile_ in (False, True):
        torch.manual_seed(0)
        z, tr = MALA(8, MALAParams(steps=60, warmup=20, min_chains=64, compile=compile_)).sample(e, 64, trace=True)
        out[compile_] = (z, tr.acceptance)
    assert torch.allclose(out[False][0], out[True][0], atol=1e-3)
    assert abs(out[False][1] - out[True][1]) < 1e-3


def test_gibbs_kernels_reach_a_small_grbm():
    """Block Gibbs and Metropolis Gibbs-Langevin from a far start: exact GRBM moments."""
    from energyvae.mcmc.kernels import gibbs_langevin_step, gibbs_step
    torch.manual_seed(6)
    e = GRBMEnergy(4, 3, 1.0).double()
    with torch.no_grad():
        e.b.copy_(torch.tensor([0.5, -1.0, 0.2]))
    mean, cov = grbm_moments(e)
    z = 3.0 + torch.randn(8000, 4, dtype=torch.float64)
    for _ in range(200):
        z = gibbs_step(z, e)
    _moments_ok(z, mean, cov, 0.08, 0.15)
    r, k = 0.3, 5
    decay = (1 - r) ** k
    std = e.sigma * (2 * (1 - decay**2) / (2 - r)) ** 0.5
    z = 3.0 + torch.randn(8000, 4, dtype=torch.float64)
    h = e.sample_hidden(z)
    with torch.no_grad():
        for _ in range(300):
            z, h, log_alpha = gibbs_langevin_step(z, h, e, decay, std)
    _moments_ok(z, mean, cov, 0.08, 0.15)
    assert 0.2 < float(log_alpha.clamp(max=0).exp().mean()) <= 1.0
