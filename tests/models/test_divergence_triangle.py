"""DT-VAE's divergence triangle (energyvae/models/divergence_triangle.py).

Oracle: a linear-Gaussian case solved in closed form. Data x ~ N(mu_d, S_d) in R^2, a linear
encoder with an x-independent posterior scale (so Q(x, z) is a joint Gaussian), a linear decoder
with a fixed Gaussian scale sigma (P(x, z) is a joint Gaussian) and a quadratic energy
E(x, z) = 1/2 (v - c)^T A (v - c), v = [x, z] (Pi is the Gaussian N(c, A^-1)). The three KLs
between Gaussians are exact, so the triangle D = KL(Q||P) + KL(P||Pi) - KL(Q||Pi) is known, and
the module's losses must reproduce it up to the constant the docstring derives.
"""
import math

import pytest
import torch
from torch import nn

from energyvae.config import build_config
from energyvae.errors import ConfigError
from energyvae.models.divergence_triangle import DivergenceTriangle, TriangleParams
from energyvae.models.vae import VAE
from energyvae.train import LAST, load_checkpoint
from helpers import run

D, M = 2, 2
LOG_2PI = math.log(2 * math.pi)


class Quadratic(nn.Module):
    """E(x, z) = 1/2 (v - c)^T A (v - c), A = L L^T + eps I."""

    def __init__(self, gen):
        super().__init__()
        self.l = nn.Parameter(0.5 * torch.randn(D + M, D + M, generator=gen, dtype=torch.float64))
        self.c = nn.Parameter(0.3 * torch.randn(D + M, generator=gen, dtype=torch.float64))

    @property
    def a(self):
        return self.l @ self.l.T + 0.5 * torch.eye(D + M, dtype=torch.float64)

    def forward(self, x, z):
        v = torch.cat([x, z], -1) - self.c
        return 0.5 * torch.einsum("bi,ij,bj->b", v, self.a, v)


def gauss_kl(m0, s0, m1, s1):
    """KL(N(m0, s0) || N(m1, s1)) in closed form."""
    k = m0.numel()
    s1_inv = torch.linalg.inv(s1)
    d = m1 - m0
    return 0.5 * (torch.trace(s1_inv @ s0) + d @ s1_inv @ d - k + torch.logdet(s1) - torch.logdet(s0))


def gauss_entropy(s):
    return 0.5 * (s.shape[0] * (1 + LOG_2PI) + torch.logdet(s))


def build(seed, sigma=0.7, entropy="triangle", energy_l2=0.0):
    """The linear-Gaussian DT-VAE; energy_l2 0: the triangle (T) alone."""
    torch.manual_seed(seed)                        # the calibrator's private seed
    gen = torch.Generator().manual_seed(seed)
    enc = nn.Linear(D, 2 * M).double()
    dec = nn.Linear(M, D).double()
    with torch.no_grad():
        for p in (*enc.parameters(), *dec.parameters()):
            p.copy_(0.6 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
        enc.weight[M:] = 0.0                       # logvar = bias only: q(z|x) = N(Cx + c, diag s^2)
    energy = Quadratic(gen)
    tri = DivergenceTriangle(TriangleParams(entropy=entropy, energy_l2=energy_l2), energy)
    model = VAE.from_parts((D,), M, encoder=enc, decoder=dec,
                           reconstruction={"name": "gaussian", "scale": "fixed", "init_scale": sigma},
                           calibrators=[tri], data_kind="vector").double()
    return model, enc, dec, energy


def joint_gaussians(enc, dec, sigma, mu_d, s_d):
    """(mean, cov) of Q(x, z) and P(x, z), v = [x, z]."""
    w_e, b_e = enc.weight.detach(), enc.bias.detach()
    c_mat, c_vec, s2 = w_e[:M], b_e[:M], b_e[M:].exp()
    mq = torch.cat([mu_d, c_mat @ mu_d + c_vec])
    sq = torch.zeros(D + M, D + M, dtype=torch.float64)
    sq[:D, :D], sq[:D, D:] = s_d, s_d @ c_mat.T
    sq[D:, :D], sq[D:, D:] = c_mat @ s_d, c_mat @ s_d @ c_mat.T + torch.diag(s2)
    w, b = dec.weight.detach(), dec.bias.detach()
    mp = torch.cat([b, torch.zeros(M, dtype=torch.float64)])
    sp = torch.zeros(D + M, D + M, dtype=torch.float64)
    sp[:D, :D], sp[:D, D:] = w @ w.T + sigma ** 2 * torch.eye(D, dtype=torch.float64), w
    sp[D:, :D], sp[D:, D:] = w.T, torch.eye(M, dtype=torch.float64)
    return (mq, sq), (mp, sp)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_module_losses_equal_the_closed_form_triangle(seed):
    sigma = 0.7
    model, enc, dec, energy = build(seed, sigma)
    gen = torch.Generator().manual_seed(100 + seed)
    mu_d = torch.randn(D, generator=gen, dtype=torch.float64)
    l_d = 0.5 * torch.randn(D, D, generator=gen, dtype=torch.float64)
    s_d = l_d @ l_d.T + 0.3 * torch.eye(D, dtype=torch.float64)
    (mq, sq), (mp, sp) = joint_gaussians(enc, dec, sigma, mu_d, s_d)
    a = energy.a.detach()
    s_pi, m_pi = torch.linalg.inv(a), energy.c.detach()
    triangle = gauss_kl(mq, sq, mp, sp) + gauss_kl(mp, sp, m_pi, s_pi) - gauss_kl(mq, sq, m_pi, s_pi)

    n = 400_000
    torch.manual_seed(seed)
    x = mu_d + torch.randn(n, D, dtype=torch.float64) @ torch.linalg.cholesky(s_d).T
    state = {"step": 0}
    with torch.no_grad():
        loss, logs = model("vae", x, state)
        critic_loss, _ = model("triangle", x, state)
    # KL(Q||P) = ELBO loss - H(q_data) and -KL(Q||Pi) brings + H(q_data) back; the module uses P's
    # mean g(z), so E_P[E] misses the decoder noise's 1/2 sigma^2 tr(A_xx), and it drops
    # E_P ln P(x, z) = -H(P) (constant in theta's weights and in phi)
    h_p = gauss_entropy(torch.eye(M, dtype=torch.float64)) + 0.5 * D * (1 + LOG_2PI + 2 * math.log(sigma))
    expected = triangle - 0.5 * sigma ** 2 * torch.trace(a[:D, :D]) + h_p
    assert float(loss) == pytest.approx(float(expected), abs=0.03)
    # the EBM's loss is minus the alpha-dependent part of D: E_Q[E] - E_P[E]
    e_q = 0.5 * (torch.trace(a @ sq) + (mq - m_pi) @ a @ (mq - m_pi))
    sp0 = sp.clone()
    sp0[:D, :D] -= sigma ** 2 * torch.eye(D, dtype=torch.float64)         # x = g(z): no decoder noise
    e_p0 = 0.5 * (torch.trace(a @ sp0) + (mp - m_pi) @ a @ (mp - m_pi))
    assert float(critic_loss) == pytest.approx(float(e_q - e_p0), abs=0.03)
    assert float(logs["triangle/entropy"]) == pytest.approx(float(0.5 * (M * (1 + LOG_2PI) + enc.bias[M:].detach().sum())),
                                                          abs=1e-9)


def test_gradient_signs_ebm_lowers_data_pairs_generator_lowers_its_own_encoder_raises_its_own():
    model, enc, dec, energy = build(3)
    torch.manual_seed(0)
    x = torch.randn(4096, D, dtype=torch.float64)
    state = {"step": 0}
    model("vae", x, state)
    xq, zq, xg, zg = state["triangle_pairs"]
    before_q, before_g = energy(xq, zq).mean().item(), energy(xg, zg).mean().item()
    loss, _ = model("triangle", x, state)
    grads = torch.autograd.grad(loss, list(energy.parameters()))
    with torch.no_grad():
        for p, g in zip(energy.parameters(), grads):
            p -= 1e-3 * g
    assert energy(xq, zq).mean().item() < before_q          # data pairs: energy down
    assert energy(xg, zg).mean().item() > before_g          # generated pairs: energy up

    # the VAE update's triangle term: the decoder's gradient lowers E at its generated pairs, the
    # encoder's raises E at its posterior pairs; the EBM gets no gradient from it
    tri = model.calibrators[0]
    state = {"step": 1}
    model.zero_grad()
    q = model.encode(x)
    state["z"], state["posterior"] = q.rsample(), q
    term, _ = tri.vae_loss_term(model, x, state)
    term.backward()
    assert all(p.grad is None for p in energy.parameters())
    _, _, _, zg = state["triangle_pairs"]
    e_gen = lambda: energy(model.generate(len(zg), zg), zg).mean().item()  # noqa: E731
    e_inf = lambda: energy(x, model.encode(x).mean).mean().item()           # noqa: E731
    g0, i0 = e_gen(), e_inf()
    with torch.no_grad():
        for p in dec.parameters():
            p -= 1e-3 * p.grad
        enc.weight[:M] -= 1e-3 * enc.weight.grad[:M]
        enc.bias[:M] -= 1e-3 * enc.bias.grad[:M]
    assert e_gen() < g0
    assert e_inf() > i0


def test_entropy_elbo_mode_drops_the_entropy_term():
    m1, *_ = build(4, entropy="triangle")
    m2, *_ = build(4, entropy="elbo")
    x = torch.randn(64, D, dtype=torch.float64)
    s1, s2 = {"step": 0}, {"step": 0}
    torch.manual_seed(1)
    l1, logs1 = m1("vae", x, s1)
    torch.manual_seed(1)
    l2, logs2 = m2("vae", x, s2)
    assert float((l1 - l2).detach()) == pytest.approx(float(logs1["triangle/entropy"]), abs=1e-9)
    assert float(logs2["triangle/entropy"]) == 0.0


def _cfg(d, reconstruction, weight=1.0, calibrators=True):
    """A tiny digits DT-VAE (train and resume with each objective: tests/models/test_table2_bases.py)."""
    model = {"latent_dim": 3, "encoder": {"name": "mlp", "hidden": [16]},
             "decoder": {"name": "mlp", "hidden": [16]}, "reconstruction": reconstruction}
    if calibrators:
        model["calibrators"] = [{"name": "triangle", "weight": weight, "x_net": {"name": "mlp", "hidden": [16]},
                                 "features": 8, "hidden": [16]}]
    return build_config({"run": {"dir": str(d)}, "data": {"name": "digits", "scale": "01"}, "model": model,
                         "train": {"steps": 12, "batch_size": 32, "eval_every": 4, "checkpoint_every": 4,
                                   "log_every": 4, "progress": False, "ema": 0.9}})


def test_weight_zero_trains_the_plain_vae_bit_for_bit(tmp_path):
    recon = {"name": "gaussian", "scale": "calibrated"}
    run(_cfg(tmp_path / "dt", recon, weight=0.0))
    run(_cfg(tmp_path / "vae", recon, calibrators=False))
    a = load_checkpoint(tmp_path / "dt" / "checkpoints" / LAST)["model"]
    b = load_checkpoint(tmp_path / "vae" / "checkpoints" / LAST)["model"]
    assert {k for k in a if not k.startswith("calibrators.")} == set(b)
    assert all(torch.equal(a[k], b[k]) for k in b)


@pytest.mark.parametrize("bad, msg", [({"weight": -1}, "weight"), ({"entropy": "none"}, "entropy"),
                                      ({"features": 0}, "features"), ({"energy_l2": -0.1}, "energy_l2"),
                                      ({"x_net": {"name": "nope"}}, "nope")])
def test_bad_parameters_are_config_errors(bad, msg):
    with pytest.raises(ConfigError, match=msg):
        TriangleParams(**bad)


def test_term_is_linear_in_the_weight_and_equal_on_the_gradient_path():
    """The VAE update's term with gradients on (the frozen-parameter path) equals the no-grad value,
    and scales with ``weight``."""
    values = {}
    for w in (1.0, 0.5):
        model, *_ = build(5)
        tri = model.calibrators[0]
        tri.weight = w
        x = torch.randn(256, D, dtype=torch.float64)
        for grad in (True, False):
            torch.manual_seed(7)
            q = model.encode(x)
            state = {"step": 3, "z": q.rsample(), "posterior": q}
            with torch.set_grad_enabled(grad):
                term, _ = tri.vae_loss_term(model, x, state)
            values[w, grad] = float(term.detach())
    assert values[1.0, True] == pytest.approx(values[1.0, False], rel=1e-12)
    assert values[0.5, True] == pytest.approx(0.5 * values[1.0, True], rel=1e-12)


def test_multi_sample_posteriors_pair_each_draw_with_its_own_image():
    x = torch.arange(6, dtype=torch.float64).reshape(3, 2)
    z = torch.randn(4, 3, M, dtype=torch.float64)               # [M draws, B, m]
    xs, zs = DivergenceTriangle.pairs(x, z)
    assert xs.shape == (12, D) and zs.shape == (12, M)
    for j in range(4):
        for b in range(3):
            assert torch.equal(xs[3 * j + b], x[b]) and torch.equal(zs[3 * j + b], z[j, b])


def test_energy_regulariser_is_c_times_the_two_mean_squares():
    model, _, _, energy = build(6)
    tri = model.calibrators[0]
    x = torch.randn(128, D, dtype=torch.float64)
    state = {"step": 0}
    model("vae", x, state)
    xq, zq, xg, zg = state["triangle_pairs"]
    e_d, e_g = energy(xq, zq), energy(xg, zg)
    for c in (0.0, 0.3):
        tri.energy_l2 = c
        loss, logs = tri.update_loss("triangle", x, state)
        expected = e_d.mean() - e_g.mean() + c * (e_d.pow(2).mean() + e_g.pow(2).mean())
        assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-10)
        assert float(logs["gap"]) == pytest.approx(float(e_g.mean() - e_d.mean()), rel=1e-10)


def test_an_energy_with_batch_norm_is_refused():
    class WithBN(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm1d(D + M)

        def forward(self, x, z):
            return self.bn(torch.cat([x, z], -1)).sum(-1)
    with pytest.raises(ConfigError, match="batch norm"):
        DivergenceTriangle(TriangleParams(), WithBN())
