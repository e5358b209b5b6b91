"""DT-VAE: the VAE trained jointly with a latent EBM by the divergence triangle (Han, Nijkamp,
Zhou, Pang, Zhu & Wu, CVPR 2020, "Joint Training of Variational Auto-Encoder and Latent
Energy-Based Model"; paper 000's Table 2 base "DT-VAE"), calibrator ``triangle``.

Source of the objective. The CVPR paper's text is not in ``../shared/papers`` and could not be
retrieved (only its abstract and introduction). What follows is the objective its abstract
defines, "three Kullback-Leibler divergences between three joint distributions on the latent
vector and the image ... of the symmetric and anti-symmetric form of divergence triangle", in the
triangle form of the authors' earlier paper (Han et al., CVPR 2019, arXiv 1812.10907, whose code
``enijkamp/triangle`` we read), with the latent EBM as the third joint density. Every step below
is derived here, not copied; where the CVPR 2020 paper makes a different choice, this module is
an approximation of it. The three joint densities on (x, z):

    Q_phi(x, z)   = q_data(x) q_phi(z|x)                 (the data and the inference model)
    P_theta(x, z) = p(z) p_theta(x|z)                    (the generator)
    Pi_alpha(x, z) = exp(-E_alpha(x, z)) / Z(alpha)      (the latent EBM, an energy on pairs)

and the triangle

    min_{theta, phi} max_alpha  D = KL(Q || P) + KL(P || Pi) - KL(Q || Pi).          (T)

Expanding each KL (constants in every player dropped; H(q) the entropy of q_phi(z|x)):

    KL(Q || P)  = E_x[ -E_q ln p_theta(x|z) + KL(q_phi(z|x) || p(z)) ]   the VAE's negative ELBO
    KL(P || Pi) = E_P[ ln p_theta(x|z) ] + E_P[ E_alpha(x, z) ] + ln Z
    -KL(Q || Pi) = E_x[ H(q_phi(z|x)) ] - E_Q[ E_alpha(x, z) ] - ln Z

so ln Z cancels from (T) and each player sees:

- EBM alpha (update ``triangle``, own Adam, after the VAE update): maximising (T) is minimising
      L_alpha = E_Q[E_alpha(x, z)] - E_P[E_alpha(x, z)]                            (T-alpha)
  (lower energy on data pairs (x, z ~ q(z|x)), higher on generated pairs (x ~ p(x|z), z ~ p(z));
  the gradient is exact, no MCMC: E_P[grad E] takes the place of E_Pi[grad E] of maximum
  likelihood, the "generator as approximate synthesis sampler of the EBM").
- generator theta:  -E_Q ln p_theta(x|z) + E_P[E_alpha(x, z)] (+ E_P ln p_theta(x|z))  (T-theta)
  the VAE's reconstruction plus the critic term: the EBM is the generator's critic.
- inference phi:  -E_Q ln p_theta(x|z) + KL(q || p) + H(q) - E_Q[E_alpha(x, z)]       (T-phi)
  pulled to P by the ELBO and pushed away from Pi (raising the energy of its own pairs, as the
  encoder of ALI / BiGAN fools a joint discriminator); its entropy cancels between the two KLs.

What the VAE update adds to its ELBO loss is therefore, per example (``weight`` w, 1 in (T)):

    w * ( E_alpha(g(z'), z') + H(q(z|x)) - E_alpha(x, z_q) ),     (H(q) only with ``entropy: triangle``)   z' ~ p(z),  z_q ~ q(z|x)

with z' detached (its term trains the decoder) and z_q the VAE update's own posterior samples
(its term trains the encoder). The energies are evaluated with the EBM's parameters detached
(``torch.func.functional_call``): the VAE update gives them no gradient.

Choices the triangle leaves open (ours, each tested or measured):
- The generated x of a pair is the decoder's mean g(z') (``model.generate``, as ``ec`` and
  ``wgan`` use), the sigma -> 0 limit of p_theta(x|z); the term E_P ln p_theta(x|z) of
  (T-theta) is then dropped: it is minus the decoder's entropy, a constant for a fixed scale
  (with a learned or calibrated scale it depends on sigma, so dropping it is an approximation). The same mean serves every
  reconstruction objective, so +EnL / +FEnL (paper 000, Appendix 6.4) only replace
  -E_q ln p_theta(x|z) in KL(Q || P) by the energy score, the one config line
  ``model.reconstruction``.
- ``entropy``: ``triangle`` adds w H(q) as (T-phi) says, so the encoder's entropy cancels against
  the ELBO's when ``weight`` equals ``kl_weight`` (both 1 in (T); with a smaller KL weight the
  net entropy term becomes a penalty); ``elbo`` (default) keeps the ELBO's entropy bonus, what
  the authors' 2019 code does (its inference net trains on the full VAE loss). Why the default
  departs from (T): without the entropy the posteriors collapse toward points (the logged
  ``triangle/entropy`` falls to tens of nats below zero within a few hundred digits steps, and
  KL(q || p) grows with it), prior samples then fall between the points, and FID_gen is worse
  than with ``elbo``, on FID against the *train* split too, so the choice is not tuned on test
  (benchmarks/envae_table2.py, the "DT-VAE, (T) literally" rows of results/envae_table2_digits.md).
- The EBM: E_alpha(x, z) = head([h_x(x), h_z(z)]), h_x any registered encoder net (``x_net``,
  default the MLP) to ``features`` outputs, h_z = Linear(m, features) + LeakyReLU(0.2), head an
  MLP (``hidden``) to one output; identity energy form (the 2019 code's default).
- (T-alpha) is unbounded once the EBM separates the two sets, and it does not see the energy's
  offset. ``energy_l2`` c adds c (mean_data E^2 + mean_gen E^2) to L_alpha (the regulariser of
  Du & Mordatch 2019), whose optimum per pair is E = -1/(2c) on data pairs and +1/(2c) on
  generated ones: the gap E_P - E_Q is bounded by 1/c and the offset pinned. Default c = 0.05
  (gap <= 20). Why not 0 (the 2019 code): on Fashion-MNIST, 1000-step runs with c = 0 can blow
  up: on one seed of three the EBM's gap grew by three orders of magnitude within about 100
  steps, its gradient norm with it, and the critic term wrecked the decoder; the same seed with
  c = 0.05 trained smoothly (the "DT-VAE, energy_l2 = 0" rows of benchmarks/envae_table2.py
  show it per seed). On digits c = 0 lets the data pairs' energy drift down steadily over 4000
  steps without blowing up. The update's gradient norm is also clipped at ``grad_clip`` (the
  2019 code clips at 100), which alone did not prevent the blow-up.
- The EBM must be per-example (no batch norm: data and generated pairs share its batch, and the
  VAE update evaluates it too); an ``x_net`` with a BatchNorm layer is a ConfigError.
- Adam lr 1e-4, betas (0.5, 0.999) for the EBM (the 2019 code's e_lr and beta1).
- Posterior samples with leading sample dimensions ([M, B, m], the energy score's M draws) pair
  with x repeated M times.

Logs: ``triangle/critic`` = E_P[E] (VAE update), ``triangle/inference`` = E_Q[E] at the
encoder's samples, ``triangle/entropy`` = mean H(q) added (0 with ``entropy: elbo``); ``triangle/loss`` = L_alpha,
``triangle/gap`` = E_P[E] - E_Q[E] (> 0: the EBM tells generated pairs from data pairs),
``triangle/e_data``, ``triangle/e_gen`` (EBM update).

Randomness: z' comes from the private stream of ``energy_calibration.private_rng``, so with w = 0
training equals the plain VAE's bit for bit (for a prior whose ``sample`` draws only random
numbers; z' is still drawn, for the EBM update), and resume is exact.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from ..errors import ConfigError
from ..nets import ENCODERS
from ..nets.mlp import check_activation, make_activation
from ..registry import check, keep_parsed, parsed
from .base import CALIBRATORS, Calibrator, UpdateSpec, batch_norm_layers
from .energy_calibration import PrivateSeed

__all__ = ["JointEnergy", "DivergenceTriangle", "TriangleParams"]

_CALL_VAE = 0


class JointEnergy(nn.Module):
    """E_alpha(x, z) -> [B]: head([h_x(x), h_z(z)]) (module docstring)."""

    def __init__(self, data_shape, latent_dim: int, x_net, features: int, hidden: list[int],
                 activation: str = "leaky_relu"):
        super().__init__()
        self.h_x = ENCODERS.build(x_net, "model.calibrators.triangle.x_net", in_shape=tuple(data_shape),
                                  out_features=features)
        self.h_z = nn.Sequential(nn.Linear(latent_dim, features), make_activation(activation))
        widths = [2 * features, *hidden]
        layers: list[nn.Module] = [make_activation(activation)]     # h_x ends linear
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), make_activation(activation)]
        layers.append(nn.Linear(widths[-1], 1))
        self.head = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.h_x(x), self.h_z(z)], -1)).squeeze(-1)


class DivergenceTriangle(PrivateSeed, Calibrator):
    """DT-VAE's latent EBM and its two terms of the VAE loss (module docstring)."""
    name = "triangle"

    def __init__(self, p: "TriangleParams", energy: nn.Module):
        super().__init__()
        bn = batch_norm_layers(energy)
        if bn:
            raise ConfigError(f"triangle: the EBM must not use batch norm (data and generated pairs share "
                              f"its batch; module docstring), found {bn}")
        self.energy = energy
        self.weight, self.entropy_mode, self.energy_l2 = p.weight, p.entropy, p.energy_l2
        self.lr, self.betas, self.grad_clip = p.lr, tuple(p.betas), p.grad_clip
        self.init_private_seed()

    def updates(self) -> list[UpdateSpec]:
        return [UpdateSpec("triangle", list(self.energy.parameters()), lr=self.lr, betas=self.betas,
                           grad_clip=self.grad_clip, order=1)]

    def frozen_energy(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """E_alpha(x, z) with the parameters detached: gradients reach x and z only."""
        params = {k: v.detach() for k, v in self.energy.named_parameters()}
        return torch.func.functional_call(self.energy, (params, dict(self.energy.named_buffers())), (x, z))

    @staticmethod
    def pairs(x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, z) rows; z of shape [M, B, m] pairs with x repeated M times."""
        if z.dim() == 3:
            return x.unsqueeze(0).expand(z.shape[0], *x.shape).reshape(-1, *x.shape[1:]), z.reshape(-1, z.shape[-1])
        return x, z

    def vae_loss_term(self, model, x, state):
        with self.private_rng(state, _CALL_VAE, x.device):
            z_gen = model.prior.sample(x.shape[0]).detach().to(x.dtype)
        train = torch.is_grad_enabled() and self.weight > 0
        with torch.set_grad_enabled(train):
            x_gen = model.generate(x.shape[0], z_gen)
        xq, zq = self.pairs(x, state["z"])
        state["triangle_pairs"] = (xq.detach(), zq.detach(), x_gen.detach(), z_gen)
        q = state["posterior"]
        entropy = q.entropy() if self.entropy_mode == "triangle" and not q.deterministic else x.new_zeros(x.shape[0])
        with torch.set_grad_enabled(train):
            energy = self.frozen_energy if train else self.energy
            e_gen, e_q = energy(x_gen, z_gen).mean(), energy(xq, zq).mean()
            term = self.weight * (e_gen + entropy.mean() - e_q) if self.weight > 0 else x.new_zeros(())
        return term, {"triangle/critic": e_gen.detach(), "triangle/inference": e_q.detach(),
                      "triangle/entropy": entropy.mean().detach()}

    def update_loss(self, name, x, state):
        if "triangle_pairs" not in state:
            raise RuntimeError("the triangle update needs the VAE update of the same step (its pairs)")
        xq, zq, x_gen, z_gen = state["triangle_pairs"]
        n = xq.shape[0]
        e = self.energy(torch.cat([xq, x_gen.to(xq.dtype)]), torch.cat([zq, z_gen.to(zq.dtype)]))
        e_data, e_gen = e[:n].mean(), e[n:].mean()
        loss = e_data - e_gen
        if self.energy_l2:
            loss = loss + self.energy_l2 * (e[:n].pow(2).mean() + e[n:].pow(2).mean())
        return loss, {"loss": loss.detach(), "gap": (e_gen - e_data).detach(), "e_data": e_data.detach(),
                      "e_gen": e_gen.detach()}


@dataclass
class TriangleParams:
    weight: float = 1.0                   # w on KL(P || Pi) - KL(Q || Pi); 1 is the triangle (T)
    entropy: Literal["triangle", "elbo"] = "elbo"   # "triangle": (T) literally (module docstring)
    x_net: dict = field(default_factory=lambda: {"name": "mlp", "hidden": [256]})
    features: int = 128
    hidden: list[int] = field(default_factory=lambda: [256])
    activation: str = "leaky_relu"
    energy_l2: float = 0.05               # c of c (mean_data E^2 + mean_gen E^2) in L_alpha
    lr: float = 1e-4                      # EBM Adam (the 2019 code's e_lr, beta1)
    betas: tuple[float, float] = (0.5, 0.999)
    grad_clip: float | None = 100.0       # the 2019 code's max_normE

    def __post_init__(self):
        check(self.weight >= 0, f"weight: must be >= 0, got {self.weight}")
        check(self.entropy in ("triangle", "elbo"), f"entropy: must be 'triangle' or 'elbo', got {self.entropy!r}")
        if isinstance(self.x_net, str):
            self.x_net = {"name": self.x_net}
        self.x_net = {"name": "mlp", **self.x_net}
        keep_parsed(self, "x_net", ENCODERS, "x_net")
        check(isinstance(self.features, int) and self.features > 0, f"features: must be a positive int, got {self.features}")
        check(all(isinstance(h, int) and h > 0 for h in self.hidden), f"hidden: must be positive ints, got {self.hidden}")
        check_activation(self.activation)
        check(self.energy_l2 >= 0, f"energy_l2: must be >= 0, got {self.energy_l2}")
        check(self.lr > 0, f"lr: must be > 0, got {self.lr}")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
              f"betas: must be two numbers in [0, 1), got {self.betas}")
        check(self.grad_clip is None or self.grad_clip > 0, f"grad_clip: must be > 0, got {self.grad_clip}")


@CALIBRATORS.register("triangle", TriangleParams)
def _triangle(p: TriangleParams, *, data_shape, latent_dim, **_):
    return DivergenceTriangle(p, JointEnergy(data_shape, latent_dim, parsed(p, "x_net"), p.features, list(p.hidden),
                                             p.activation))
