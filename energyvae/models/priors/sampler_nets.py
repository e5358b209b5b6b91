"""Sampler networks S (noise -> z) of the EVaLP scheme (paper 003, schemes/evalp.py).

EVaLP bounds the EBM's partition function with ln Z >= E_{z~S}[-E(z)] + H(S) (the abstract's
"variational form ... approximated with a sampler network"), so S needs reparameterised
samples *and* a differentiable estimate of its own entropy H(S). One interface:
``rsample_and_entropy(n) -> (z [n, m] with graph, H estimate: 0-d tensor with graph)`` and
``sample(n)`` (no graph).

- :class:`FlowSampler` (``flow``): an affine IAF from :func:`~..flow.make_flow` (identity at
  initialisation, i.e. S = N(0, I)). Its samples come with their exact log-density in one pass,
  so H(S) = -mean ln S(z) over its own reparameterised samples is unbiased (variance only).
  The authors' code uses a RealNVP flow with 4 coupling blocks; an IAF of 4 layers plays the
  same role (one-pass sampling, exact density of its samples) and reuses the repository's flow.
- :class:`ImplicitSampler` (``implicit``): an MLP G: e -> z, e ~ N(0, I_{noise_dim}), whose
  density is intractable. Its entropy is estimated by the Kozachenko-Leonenko k-nearest-
  neighbour estimator (Kraskov et al. 2004, Eq. 20) on the n samples of the batch,

      H ~ psi(n) - psi(k) + ln V_m + m/n sum_i ln eps_i,

  eps_i the Euclidean distance from z_i to its k-th nearest neighbour among the others, V_m the
  volume of the unit m-ball. Why: it needs no density, no auxiliary network and no inner loop
  (a noise-perturbed generator with a variational entropy bound needs a second, inference
  network trained alongside, and its bound is only as tight as that network), and it is
  differentiable through the distances: its gradient is a repulsion of each sample from its
  k-th neighbour, exactly the force that keeps S from collapsing onto the energy's modes.
  Bias: consistent as n -> inf; at finite n it is biased by boundary/tail effects that grow
  with m (N(0, I), n = 1000, k = 3: about -0.01 nats at m = 2, -0.08 at m = 5, +0.1 at m = 10;
  tests/models/priors/test_evalp.py checks m = 1, 2, 5), and it is exactly equivariant to scaling
  (z -> s z adds m ln s) and rotation, but it uses isotropic balls, so strongly anisotropic
  laws are overestimated (N(0, diag s^2), m = 5, s log-spaced over 1..30: +0.5 nats) and
  near-degenerate ones badly so. A degenerate S (noise_dim < m, true entropy -inf) still gets a finite
  estimate, hence noise_dim >= m is required. Cost: O(n^2 m) time and O(n^2) memory for the
  pairwise distances (n = the scheme's negatives per step).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ...nets.mlp import MLPNet, MLPParams
from .flow import make_flow


class SamplerNet(nn.Module):
    """S: noise -> z in R^m with a differentiable entropy estimate (see the module docstring)."""

    def rsample_and_entropy(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def sample(self, n: int) -> torch.Tensor:
        raise NotImplementedError


class FlowSampler(SamplerNet):
    def __init__(self, dim: int, transforms: int, hidden: list[int]):
        super().__init__()
        self.flow = make_flow(dim, transforms, hidden, kind="iaf")

    def rsample_and_entropy(self, n):
        z, log_q = self.flow().rsample_and_log_prob((n,))
        return z, -log_q.mean()

    @torch.no_grad()
    def sample(self, n):
        return self.flow().sample((n,))


def knn_entropy(z: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Kozachenko-Leonenko estimate of the entropy (nats) of the law of the rows of ``z``
    [n, m] (n > k), differentiable in ``z``. Distances are taken without the matrix-product
    shortcut of ``cdist``, whose cancellation would give exact zeros for close points."""
    n, m = z.shape
    d = torch.cdist(z, z, compute_mode="donot_use_mm_for_euclid_dist")
    d = d.masked_fill(torch.eye(n, dtype=torch.bool, device=z.device), math.inf)
    eps = d.topk(k, dim=1, largest=False).values[:, -1]
    log_unit_ball = 0.5 * m * math.log(math.pi) - math.lgamma(0.5 * m + 1)
    const = torch.special.digamma(torch.tensor(float(n))) - torch.special.digamma(torch.tensor(float(k)))
    return const.item() + log_unit_ball + m * eps.log().mean()


class ImplicitSampler(SamplerNet):
    def __init__(self, dim: int, noise_dim: int, hidden: list[int], activation: str, k: int):
        super().__init__()
        self.noise_dim, self.k = noise_dim, k
        self.net = MLPNet(MLPParams(hidden=list(hidden), activation=activation), (noise_dim,), (dim,))

    def _noise(self, n: int) -> torch.Tensor:
        p = next(self.parameters())
        return torch.randn(n, self.noise_dim, device=p.device, dtype=p.dtype)

    def rsample_and_entropy(self, n):
        z = self.net(self._noise(n))
        return z, knn_entropy(z, self.k)

    @torch.no_grad()
    def sample(self, n):
        return self.net(self._noise(n))
