"""VAE + WGAN-GP critic: the adversarial ablation of EC-VAE (paper 001, Table 10, "VAE + WGAN"),
calibrator ``wgan``.

Paper 001 (Sec. 5.4, "Energy-based Calibration vs. Adversarial-based Calibration") replaces the
conditional EBM of ``ec`` by a WGAN critic [Arjovsky et al. 2017] and trains the VAE "by both
ELBO and WGAN training objectives" (CIFAR-10 FID 33.78 vs EC-VAE's 5.20). It gives no further
detail; we use the gradient-penalty critic of Gulrajani et al. 2017 (WGAN-GP, Eq. 3 and Alg. 1).
A critic D = ``critic`` (a ``DATA_ENERGIES`` net, ``nets/energy.py``, mapping [B, ...] -> [B];
default the ResNet *without* spectral norm) scores data high and generated samples low.

Each training step, with g(z) = ``model.generate(B)`` (the decoder's mean at z ~ p(z), z
detached, so any generator model with ``generate`` works, as for ``ec``):

1. VAE update (order 0): the VAE loss gets the generator term
       w_t * L_G,   L_G = -mean_b D(g(z_b))
   whose gradient reaches the decoder only: the critic's parameters get no gradient (the term's
   gradient is formed from grad_x D(x) at x = sg(g(z)), by a surrogate whose value is L_G, so
   neither a requires_grad toggle nor a stale critic .grad is involved). The samples g(z),
   detached, are the fakes of step 2 (``state["wgan_fakes"]``, as ``ec`` passes its negatives).
2. Critic update ``wgan`` (order 1, after the VAE update, own Adam), on the same real batch x
   (Gulrajani et al. 2017, Eq. 3):
       L_D = mean D(x_fake) - mean D(x_real) + gp_weight * mean_b (||grad D(x^_b)||_2 - 1)^2,
       x^_b = e_b x_real,b + (1 - e_b) x_fake,b,  e_b ~ U[0, 1],
   the norm taken over all data dimensions of one example. Real and fake go through D as one
   batch, the interpolates as another (the critic must be per-example: no batch norm, which
   WGAN-GP rules out; the shipped nets have none, and a critic with a BatchNorm layer is a
   ConfigError).

Choices (the paper gives none for this ablation):
- ``gp_weight`` 10, Adam lr 1e-4, betas (0, 0.9): Gulrajani et al.'s defaults (the same Adam as
  the EC-VAE demo's EBM). Gulrajani et al. give critic and generator the same lr: with a faster
  VAE (``configs/vae_wgan_digits.yaml``: lr 1e-3) a 1e-4 critic lags the decoder (its W1
  estimate goes negative), so that config sets the critic's lr to the VAE's.
- ``n_critic`` (default 5, Gulrajani et al.'s). The trainer runs each update at most once per
  step, so WGAN-GP's n_critic critic iterations per generator iteration are had by updating the
  critic every step (each on a fresh batch and fresh fakes) and adding the generator term only
  at steps t with t % n_critic == 0 (the ELBO trains every step). ``n_critic: 1`` is ``ec``'s
  schedule (a calibration term every step); on digits it left the critic behind the decoder
  (W1 estimate about 0 or negative), while 5 kept it positive (``configs/vae_wgan_digits.yaml``).
- ``weight`` w (default 10), fixed, with an optional linear warm-up  w_t = w min(1, t / warmup)
  (t the 0-based trainer step; default no warm-up). Scale: the GP keeps ||grad_x D|| near 1,
  so w is about the norm of the data-space gradient the term gives each generated sample.
  EC-VAE's term lambda ||g(z) - x~||^2 gives 2 lambda ||g(z) - x~||, which at the demo's
  lambda_init 30 and the constraint boundary ||g(z) - x~||^2 = eps1 = 0.05 is 13.4: w = 10 is
  of the same order, so the two calibrations push the decoder about as hard.
- Fakes are the VAE update's samples, i.e. from the decoder before that update's step
  (Gulrajani et al. draw new ones; reusing them, as ``ec`` reuses its negatives, saves a decoder pass).
- With a Bernoulli decoder, g(z) are probabilities while binarized data are {0, 1}: the critic
  can tell them apart by that alone; use a Gaussian (or other real-valued) decoder.

Logs: ``wgan/weight`` (w_t at this step; 0 at steps without the generator term), ``wgan/g_loss``
= L_G (VAE update); ``wgan/wasserstein`` = mean D(x_real) - mean D(x_fake) (the critic's W1
estimate), ``wgan/gp`` (the penalty without its weight), ``wgan/d_real``, ``wgan/d_fake``,
``wgan/loss`` = L_D (critic update).

Randomness: z (VAE update) and e (critic update) come from the private stream of
``energy_calibration.private_rng`` (seed buffer drawn at build, trainer step, call, rank), so the
global RNG is as without the calibrator: with w = 0 training equals the plain VAE's bit for
bit, and resume is exact.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ConfigError
from ..nets.energy import DATA_ENERGIES
from ..registry import check, keep_parsed, parsed
from .base import CALIBRATORS, Calibrator, UpdateSpec, batch_norm_layers
from .energy_calibration import PrivateSeed

__all__ = ["WGANCritic", "WGANParams"]

_CALL_VAE, _CALL_CRITIC = 0, 1           # private-stream call ids of the two updates


def _reject_batch_norm(critic: nn.Module) -> None:
    bn = batch_norm_layers(critic)
    if bn:
        raise ConfigError(f"wgan: the critic must not use batch norm (the gradient penalty is per "
                          f"example; Gulrajani et al. 2017, Sec. 4), found {bn}")


class WGANCritic(PrivateSeed, Calibrator):
    """The VAE + WGAN-GP ablation of paper 001 (module docstring)."""
    name = "wgan"

    def __init__(self, p: "WGANParams", critic: nn.Module):
        super().__init__()
        _reject_batch_norm(critic)
        self.critic = critic
        self.weight, self.warmup, self.n_critic, self.gp_weight = p.weight, p.warmup, p.n_critic, p.gp_weight
        self.lr, self.betas = p.lr, tuple(p.betas)
        self.init_private_seed()

    def weight_at(self, step: int) -> float:
        """w_t: 0 at steps without the generator term (t % n_critic != 0), else the warmed-up w."""
        if step % self.n_critic:
            return 0.0
        return self.weight * (min(1.0, step / self.warmup) if self.warmup else 1.0)

    def updates(self) -> list[UpdateSpec]:
        return [UpdateSpec("wgan", list(self.critic.parameters()), lr=self.lr, betas=self.betas, order=1)]

    def generator_loss(self, x_gen: torch.Tensor) -> torch.Tensor:
        """L_G = -mean_b D(x_gen_b): value and gradient in x_gen exact, no gradient to D's parameters."""
        x_in = x_gen.detach().requires_grad_(True)
        with torch.enable_grad():
            d = self.critic(x_in)
            (g,) = torch.autograd.grad(d.sum(), x_in)
        surrogate = (g * x_gen).flatten(1).sum(1).mean()        # grad in x_gen_b: g_b / B
        return -(d.detach().mean() + surrogate - surrogate.detach())

    def vae_loss_term(self, model, x, state):
        w = self.weight_at(state.get("step", 0))
        grad = w > 0 and torch.is_grad_enabled()          # w = 0: no generator graph at all
        with self.private_rng(state, _CALL_VAE, x.device), torch.set_grad_enabled(grad):
            x_gen = model.generate(x.shape[0])
        state["wgan_fakes"] = x_gen.detach()
        if w > 0:
            g_loss = self.generator_loss(x_gen)
            term = w * g_loss
        else:
            with torch.no_grad():
                g_loss = -self.critic(x_gen).mean()
            term = x.new_zeros(())
        return term, {"wgan/weight": w, "wgan/g_loss": g_loss.detach()}

    def update_loss(self, name, x, state):
        if "wgan_fakes" not in state:
            raise RuntimeError("the wgan update needs the VAE update of the same step "
                               "(its generated samples)")
        fake = state["wgan_fakes"].to(x.dtype)
        b = x.shape[0]
        with self.private_rng(state, _CALL_CRITIC, x.device):
            e = torch.rand(b, *[1] * (x.dim() - 1), device=x.device, dtype=x.dtype)
        x_hat = (e * x + (1 - e) * fake).detach().requires_grad_(True)
        d = self.critic(torch.cat([x, fake]))                        # one batch: per-example critic
        d_real, d_fake = d[:b].mean(), d[b:].mean()
        # the interpolates apart: the double-backward graph then spans B examples, not 3B
        (g,) = torch.autograd.grad(self.critic(x_hat).sum(), x_hat, create_graph=True)
        gp = (g.flatten(1).norm(dim=1) - 1).pow(2).mean()
        loss = d_fake - d_real + self.gp_weight * gp
        return loss, {"loss": loss.detach(), "wasserstein": (d_real - d_fake).detach(), "gp": gp.detach(),
                      "d_real": d_real.detach(), "d_fake": d_fake.detach()}


@dataclass
class WGANParams:
    critic: dict = field(default_factory=lambda: {"name": "resnet"})   # spectral_norm defaults to false
    weight: float = 10.0                  # w (fixed; module docstring)
    warmup: int = 0                       # steps of the linear ramp of w from 0; 0: none
    n_critic: int = 5                     # critic updates per generator-term step
    gp_weight: float = 10.0               # lambda of Gulrajani et al. Eq. 3
    lr: float = 1e-4                      # critic Adam
    betas: tuple[float, float] = (0.0, 0.9)

    def __post_init__(self):
        self.critic = {"name": "resnet", **self.critic}
        entry = DATA_ENERGIES.entry(self.critic["name"], "critic")
        if "spectral_norm" in {f.name for f in dataclasses.fields(entry.params)}:
            self.critic.setdefault("spectral_norm", False)              # WGAN-GP: the penalty, not SN
        keep_parsed(self, "critic", DATA_ENERGIES, "critic")
        check(self.weight >= 0, f"weight: must be >= 0, got {self.weight}")
        check(self.warmup >= 0, f"warmup: must be >= 0, got {self.warmup}")
        check(self.n_critic >= 1, f"n_critic: must be >= 1, got {self.n_critic}")
        check(self.gp_weight >= 0, f"gp_weight: must be >= 0, got {self.gp_weight}")
        check(self.lr > 0, f"lr: must be > 0, got {self.lr}")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
              f"betas: must be two numbers in [0, 1), got {self.betas}")


@CALIBRATORS.register("wgan", WGANParams)
def _wgan(p: WGANParams, *, data_shape, **_):
    return WGANCritic(p, DATA_ENERGIES.build(parsed(p, "critic"), "critic", data_shape=data_shape))
