"""Energies E(z) of EBM priors (``model.prior.energy``), each an ``nn.Module`` [..., m] -> [...].

- ``grbm``: Gaussian-Bernoulli RBM with the hidden units summed out (paper 002, Eq. 12); also
  offers its exact block-Gibbs conditionals and, for small ``hidden``, its exact ln Z;
- ``mlp``: a scalar MLP f(z) (Pang et al. 2020 / EVaLP: z -> 200 -> 200 -> 1, LeakyReLU). Nothing
  makes exp(-f) integrable; prefer ``tilted`` unless the training scheme needs no sampling;
- ``tilted``: the exponentially tilted normal of Pang et al. (2020), E(z) = f(z) + ||z||^2 / 2,
  i.e. p(z) ∝ exp(-f(z)) N(z; 0, I);
- ``quadratic``: E(z) = 1/2 (z - c)^T P (z - c), P = L L^T + jitter I with L lower triangular
  (a full-covariance Gaussian, N(c, P^-1)).

``expected_energy(mean, std, z)`` (GRBM, tilted, quadratic): E_q[E(z)] for q = N(mean,
diag std^2), per example [B], with the energy's quadratic part in closed form and only the rest
(the GRBM's softplus sum, the tilted MLP's f) evaluated at the reparameterised samples z
[..., B, m] (averaged over leading dims). The VAE's KL term of an EBM prior is then
-H(q) + expected_energy (models/vae.py) instead of the one-sample ln q(z|x) + E(z): the same
expectation and gradient in expectation, without the sample noise of the quadratic part,
whose gradient with respect to the posterior mean is std * eps per latent (about 1 for each
unused latent). Measured (benchmarks/results/ebm_prior_kl_term.md: binarised Fashion-MNIST,
paper 002's nets, 3000 steps, 3 seeds, paired over 1000 test images): a fixed N(0, I) energy
trained through the one-sample term ends 0.55 nats (sd over seeds 0.23; +0.32, +0.57, +0.77,
each > 4 paired stderrs) worse than through this one, and GRBM-SSM 0.61 (sd 0.33) worse; with
it, GRBM-SSM and N(0, I) are equal (+0.05, sd 0.22). The one-sample term handicapped every EBM
prior against the N(0, I) VAE's closed-form KL (benchmarks/results/ebm_prior_fashion-mnist.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ...mcmc.grbm import grbm_energy, grbm_exact_log_partition
from ...nets.mlp import Activation, check_activation, make_activation
from ...registry import check
from .ebm import ENERGIES, LatentEnergy


# ----------------------------------------------------------------------------------- GRBM
@dataclass
class GRBMParams:
    """``init_std``: the std of the initial W (mu = 0, sigma = 1, b = 0); None (the default) is
    1 / sqrt(m + h), the initialisation of Liao et al. (2022)'s GRBM code (github.com/DSL-Lab/GRBM,
    ``grbm.py``: ``nn.init.normal_(W, std=init_var / sqrt(visible + hidden))`` with ``init_var``
    = 1, which also sets the initial variance sigma^2 = 1): 0.088 for m = h = 64.

    Why not a near-zero W (the old default 0.01, still available as ``init_std: 0.01``): the
    aggregate posterior of a VAE is whitened by construction, and with W ~ N(0, 0.01^2), b = 0
    the GRBM is N(0, I) up to O(|W|^2) and sits on a saddle: the gradient towards non-Gaussian
    structure is O(|W|^3) ~ 1e-5 against batch noise ~ 0.1, so at a prior lr of 2e-4 W only
    random-walks (tests/models/priors/test_ml_scheme.py is the regression test)."""
    hidden: int = 64                  # number of binary hidden units
    init_std: float | None = None     # None: 1 / sqrt(latent_dim + hidden) (Liao et al.)

    def __post_init__(self):
        check(self.hidden >= 1, f"hidden: must be >= 1, got {self.hidden}")
        check(self.init_std is None or self.init_std >= 0,
              f"init_std: must be >= 0 or null, got {self.init_std}")


class GRBMEnergy(LatentEnergy):
    """E(z) = 1/2 ||(z - mu) / sigma||^2 - sum_j softplus(W^T (z / sigma^2) + b)_j   (Eq. 12).

    Parameters: ``mu`` [m], ``log_sigma`` [m] (sigma = exp), ``W`` [m, h], ``b`` [h]. Eq. 12 is
    the marginal of the joint energy over h in {0, 1}^h

        E(z, h) = 1/2 ||(z - mu) / sigma||^2 - (z / sigma^2)^T W h - b^T h,

    whose conditionals are exact (the block-Gibbs steps):

        p(h_j = 1 | z) = sigmoid((W^T (z / sigma^2))_j + b_j)   independently over j;
        p(z | h) = N(mu + W h, diag(sigma^2))                   (complete the square in z).
    """

    def __init__(self, latent_dim: int, hidden: int, init_std: float | None = None):
        super().__init__()
        if init_std is None:                            # Liao et al. (GRBMParams)
            init_std = 1.0 / math.sqrt(latent_dim + hidden)
        self.mu = nn.Parameter(torch.zeros(latent_dim))
        self.log_sigma = nn.Parameter(torch.zeros(latent_dim))
        self.W = nn.Parameter(init_std * torch.randn(latent_dim, hidden))
        self.b = nn.Parameter(torch.zeros(hidden))

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return grbm_energy(z, self.W, self.b, self.mu, self.sigma)

    def hidden_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Logits of p(h = 1 | z), [..., h]."""
        return (z / self.sigma**2) @ self.W + self.b

    def sample_hidden(self, z: torch.Tensor) -> torch.Tensor:
        """h ~ p(h | z) = Bernoulli(sigmoid(W^T (z / sigma^2) + b)), [..., h]."""
        return torch.bernoulli(torch.sigmoid(self.hidden_logits(z)))

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        """E[z | h] = mu + W h, [..., m]."""
        return self.mu + h @ self.W.T

    def sample_visible(self, h: torch.Tensor) -> torch.Tensor:
        """z ~ p(z | h) = N(mu + W h, diag(sigma^2)), [..., m]."""
        mean = self.visible_mean(h)
        return mean + self.sigma * torch.randn_like(mean)

    @torch.no_grad()
    def energy_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Closed form, two matmuls: with a = W^T (z / sigma^2) + b,
        E = 1/2 ||(z - mu) / sigma||^2 - sum softplus(a) and
        grad E = (z - mu) / sigma^2 - (W sigmoid(a)) / sigma^2."""
        inv = (-2 * self.log_sigma).exp()                   # 1 / sigma^2
        zs = z * inv
        a = zs @ self.W + self.b
        d = z - self.mu
        e = 0.5 * torch.linalg.vecdot(d * inv, d) - torch.nn.functional.softplus(a).sum(-1)
        return e, (d - torch.sigmoid(a) @ self.W.T) * inv

    def joint_energy(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """E(z, h) of the docstring, [...]."""
        quad = 0.5 * (((z - self.mu) / self.sigma) ** 2).sum(-1)
        return quad - ((z / self.sigma**2) @ self.W * h).sum(-1) - h @ self.b

    def expected_energy(self, mean: torch.Tensor, std: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """E_q[E] (module docstring): 1/2 sum ((mean - mu)^2 + std^2) / sigma^2 in closed form,
        minus the softplus sum at the samples z."""
        quad = 0.5 * (((mean - self.mu) ** 2 + std**2) / self.sigma**2).sum(-1)
        soft = torch.nn.functional.softplus(self.hidden_logits(z)).sum(-1)
        return quad - soft.reshape(-1, *quad.shape).mean(0)

    def exact_log_partition(self) -> torch.Tensor:
        """Exact ln Z (float64 0-d, no gradient) by enumerating the 2^h hidden states (h <= 20)."""
        return grbm_exact_log_partition(self.W.detach(), self.b.detach(), self.mu.detach(),
                                        self.sigma.detach())


@ENERGIES.register("grbm", GRBMParams)
def _grbm(p: GRBMParams, *, latent_dim: int, **_):
    return GRBMEnergy(latent_dim, p.hidden, p.init_std)


# ---------------------------------------------------------------------------- MLP energies
@dataclass
class MLPEnergyParams:
    hidden: list[int] = field(default_factory=lambda: [200, 200])
    activation: Activation = "leaky_relu"      # leaky_relu has slope 0.2 (nets/mlp.py)

    def __post_init__(self):
        check(all(h >= 1 for h in self.hidden), f"hidden: every width must be >= 1, got {self.hidden}")
        check_activation(self.activation)


class MLPEnergy(LatentEnergy):
    """E(z) = f(z) (+ ||z||^2 / 2 when ``tilted``), f = Linear -> act -> ... -> Linear(., 1)."""

    def __init__(self, latent_dim: int, hidden: list[int], activation: str, tilted: bool):
        super().__init__()
        layers, width = [], latent_dim
        for h in hidden:
            layers += [nn.Linear(width, h), make_activation(activation)]
            width = h
        self.f = nn.Sequential(*layers, nn.Linear(width, 1))
        self.tilted = tilted

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        e = self.f(z).squeeze(-1)
        return e + 0.5 * z.pow(2).sum(-1) if self.tilted else e

    def expected_energy(self, mean: torch.Tensor, std: torch.Tensor, z: torch.Tensor) -> torch.Tensor | None:
        """Tilted: 1/2 sum (mean^2 + std^2) + f at the samples (module docstring); plain: None."""
        if not self.tilted:
            return None
        quad = 0.5 * (mean**2 + std**2).sum(-1)
        return quad + self.f(z).squeeze(-1).reshape(-1, *quad.shape).mean(0)


@ENERGIES.register("mlp", MLPEnergyParams)
def _mlp(p: MLPEnergyParams, *, latent_dim: int, **_):
    return MLPEnergy(latent_dim, p.hidden, p.activation, tilted=False)


@ENERGIES.register("tilted", MLPEnergyParams)
def _tilted(p: MLPEnergyParams, *, latent_dim: int, **_):
    return MLPEnergy(latent_dim, p.hidden, p.activation, tilted=True)


# ------------------------------------------------------------------------------ quadratic
@dataclass
class QuadraticParams:
    jitter: float = 1e-4      # P = L L^T + jitter I stays positive definite

    def __post_init__(self):
        check(self.jitter > 0, f"jitter: must be > 0, got {self.jitter}")


class QuadraticEnergy(LatentEnergy):
    """E(z) = 1/2 (z - c)^T P (z - c), P = L L^T + jitter I (init: c = 0, L = I).

    ln Z = m/2 ln(2 pi) - 1/2 ln det P.
    """

    def __init__(self, latent_dim: int, jitter: float):
        super().__init__()
        self.center = nn.Parameter(torch.zeros(latent_dim))
        self.L = nn.Parameter(torch.eye(latent_dim))
        self.jitter = jitter

    def precision(self) -> torch.Tensor:
        L = self.L.tril()
        return L @ L.T + self.jitter * torch.eye(L.shape[0], dtype=L.dtype, device=L.device)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        d = z - self.center
        return 0.5 * ((d @ self.precision()) * d).sum(-1)

    @torch.no_grad()
    def energy_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Closed form: E = 1/2 d^T P d, grad E = P d (d = z - c, P symmetric)."""
        d = z - self.center
        pd = d @ self.precision()
        return 0.5 * (pd * d).sum(-1), pd

    def expected_energy(self, mean: torch.Tensor, std: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """1/2 ((mean - c)^T P (mean - c) + sum_i P_ii std_i^2), exactly (z unused)."""
        P, d = self.precision(), mean - self.center
        return 0.5 * (((d @ P) * d).sum(-1) + (std**2 * P.diagonal()).sum(-1))

    def exact_log_partition(self) -> torch.Tensor:
        P = self.precision().detach().double()
        return 0.5 * P.shape[0] * math.log(2 * math.pi) - 0.5 * torch.logdet(P)


@ENERGIES.register("quadratic", QuadraticParams)
def _quadratic(p: QuadraticParams, *, latent_dim: int, **_):
    return QuadraticEnergy(latent_dim, p.jitter)
