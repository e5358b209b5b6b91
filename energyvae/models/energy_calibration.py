"""Energy-Calibrated VAE (EC-VAE, paper 001): calibrators ``ec`` and ``calibrated_posterior``.

``ec`` (Sec. 3). A data-space energy E_w (``energy``, see ``nets/energy.py``) defines the
conditional EBM p_w(x~|x) ∝ exp(-E_w(x~) - ||x~ - x||^2 / (2 sigma^2)) around a generated
x = g(z), z ~ p(z) (``source: prior``; ``normal``: z ~ N(0, I) whatever the prior, as the
authors' demo draws it), g = the decoder's mean: ``model.generate(n, z)``, so any generator model
with that method (EC-Flow's flow, ``models/flow_model.py``) is calibrated the same way. Each training step:

1. VAE update (order 0): x~_K = K steps of the conditional Langevin chain (Eq. 3, below) from
   x_0 = sg(x), and the VAE loss gets  lambda * L_con,  L_con = mean_b ||g(z_b) - sg(x~_K,b)||^2
   (squared norm summed over the data dimensions, mean over the batch, as the demo's
   ``MSELoss(sum) / B``); z and x~_K are detached, so only the decoder gets its gradient.
2. EBM update ``ec`` (order 1, after the VAE update, as in the demo), own Adam:
   minimize mean E_w(x_data) - mean E_w(x~_K) (Eq. 2 with the conditional negatives). The
   negatives are the x~_K of step 1 (the demo re-runs the chain from the updated decoder with
   the same z; reusing them halves the MCMC cost). Needs the VAE update at the same step.
3. Dual step (Eq. 4) after the VAE update, when ``primal_dual``:
   lambda <- clip(lambda + eta (L_con - eps1), 0, lambda_max), L_con the value of step 1.
   ``primal_dual: false`` keeps lambda = ``lambda_init`` (the "w/o primal-dual" ablation).
   lambda is a persistent buffer, so checkpoints and resume are exact.

Logs: ``ec/lambda``, ``ec/l_con``, ``ec/e_gen`` = mean E_w(x) (VAE update); ``ec/e_real``,
``ec/e_cal`` = mean E_w(x~_K), ``ec/loss`` (EBM update).

Langevin convention (Eq. 3 with a noise scale c = ``noise``, s = ``step_size``):
    x_{k+1} = x_k - s/2 (grad E(x_k) + (x_k - x_0) / sigma^2) + c sqrt(s) xi,   xi ~ N(0, I),
which targets exp(-(E(x~) + ||x~ - x_0||^2 / (2 sigma^2)) / c^2) up to an O(s) bias; c = 1 is
Eq. 3 as printed, and the chain of ``priors/samplers.py`` (z - h grad E + sqrt(2h) eps) is c = 1,
h = s/2. ``sigma: null`` drops the distance term.

Defaults, converted from the authors' demo (STL-10 32x32 in [-1, 1] pixels): its chain is
x <- x - (1e-6 / 2) grad(E_net / tau) + 1e-3 xi with tau = 1e-5, i.e. x - 0.05 grad E_net + 1e-3 xi:
in [-1, 1] units s = 0.1, c = 1e-3 / sqrt(0.1) = sqrt(tau) ~ 3.16e-3 (targeting exp(-E_net / tau)).
For [0, 1] pixels (x' = (x + 1) / 2, our default ``scale: "01"``) the same chain is
x' <- x' - 0.0125 grad_x' E + 5e-4 xi: s = 0.025, the same c. (Until the grid diagnosis below the default was
s = 0.1 in [0, 1] units, 4x the demo's step; it is the first cause of the grid below.) Its
distance term, (K-k-1)/K * (relu(||x - x_0||^2 - 0.07) + 0.07), adds a drift of at most 1e-6
(x - x_0) per step (sigma >= 224 in these units): negligible, hence ``sigma: null``. K = 15
(paper: 15, CIFAR-10 30); lambda_init 30, eps1 0.05, eta 1e-2, lambda_max 100; EBM Adam lr 1e-4,
betas (0, 0.9) (the demo's VAE: lr 2e-4, betas (0, 0.9), left to the train section).
``energy_reg`` alpha adds alpha * mean(E(x_data)^2 + E(x~_K)^2) to the EBM loss (Du & Mordatch
2019; a commented-out option of the demo): default 0 (Eq. 2 as printed); the Fashion-MNIST
configs use 1.

Diagnosis: the periodic grid of conv EC-VAE samples on Fashion-MNIST (evidence in
``benchmarks/results/ecvae_grid.md`` and its two figures, from ``benchmarks/ecvae_grid.py``:
800 steps x batch 64, one seed per variant, the CPU-sized 16-32-64 ResNet energy).
- What the chain writes. grad_x E_w on generated images is a periodic pattern on the pooling
  lattice (figure ``ecvae_grid_gradients.png``); the test-time displacement x~_K - x_0 carries
  several times the data's share of period-2/4 power, and the decoder, trained to output
  x~_K (L_con), copies it into the samples.
- Why it grows. Eq. 2 alone leaves the energy's scale free: e_real and e_cal drift by tens
  and swing from step to step (``ecvae_grid_training.png``), the spectral-norm bound is the
  only limit on |grad E|, and with s = 0.1 the chain moves ||x~_K - x_0||^2 from ~0.01 at step
  100 to ~1 by step 500-800, 20x eps1; lambda then rises and the decoder follows the chain's
  pattern (reconstruction loss rises with it).
- Not the pooling. Blur-pool and strided-conv energies show the same growth and the same (or a
  stronger) lattice in their gradients: the pattern is the energy's most sensitive input
  direction, not an aliasing of 2x2 average pooling.
- The fix: both causes. (a) the demo's step in [0, 1] units (s = 0.025) keeps the moves small
  and removes the grid but leaves the energy's scale drifting (worse FID than the VAE); (c) the
  energy regulariser alone keeps e_real ~ e_cal ~ 0 and L_con below eps1 and lowers FID below the
  VAE's, yet still leaves the grid at s = 0.1 (and a weaker one at s = 0.05); (d) s = 0.01 also
  removes it, with a drifting energy and a worse FID. (a) + (c), the default of ``configs/ecvae_fashion.yaml`` and
  ``configs/ecvae_fashion_cpu.yaml``, keeps the energy bounded, L_con below eps1 throughout, the
  samples' lattice power at the VAE's, and FID a little below the VAE's with this ResNet
  energy and ~0.6x the VAE's with a spectral-norm MLP energy (3 seeds, 800 steps, in
  ``benchmarks/results/ecvae_fashion_mnist.md``). What it gives up: the smaller step also
  weakens the decoder's calibration signal (~ lambda K s grad E), which is why (c) alone, with
  4x the step, lowers FID more while it paints the grid.

``calibrated_posterior`` (Sec. 4.1). From z_0 ~ q(z|x) (the VAE update's ``state["z"]``), K
steps of the same chain on z for U(z) = -ln p(x|z) - ln p(z) (+ ||z - z_0||^2 / (2 sigma^2)),
then the VAE loss gets lambda_2 * mean_b ||z_0 - sg(z_K)||^2: the gradient reaches the encoder
(and posterior) only. Needs a likelihood reconstruction; ln p(x|z) is evaluated with the
reconstruction in eval mode (a calibrated Gaussian then uses its running scale and is not
updated by the chain). Defaults: K = 5 (paper); step 1e-3, sigma 1, c = 1 and a fixed
lambda_2 = 1 are ours (the paper gives none; it updates lambda_2 by Eq. 4 too: ``primal_dual``).
Logs ``cpost/lambda``, ``cpost/l_con``. Use it alone (VAE + calibrated posterior) or after
``ec``. Known limit of these defaults (Fashion-MNIST, latent 32, benchmarks/results/ecvae_fashion_mnist.md): the logged
``cpost/l_con`` sits at K s m = 5 * 1e-3 * 32 = 0.16, the expected ||z_K - z_0||^2 of the noise
alone, so the drift of -ln p(x|z) - ln p(z) barely moves z in 5 steps and the encoder's target is
z_0 plus noise; MSE and ELBO did not improve (``benchmarks/results/ecvae_fashion_mnist.md``).
A larger step or more steps would be the next thing to measure.

Randomness. Both calibrators draw from a private stream seeded by (a seed buffer drawn at build,
the trainer's step, the call, the process rank) inside ``torch.random.fork_rng``, so the global
RNG (posterior noise, binarization) is exactly as without them: with lambda = 0 and no dual step,
training equals the plain VAE's bit for bit, and resume stays exact. ``refine`` (test-time "w/
MCMC") uses the global RNG.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
from torch import nn

from ..errors import ConfigError
from ..nets.energy import DATA_ENERGIES
from ..registry import check, keep_parsed, parsed
from .base import CALIBRATORS, Calibrator, UpdateSpec
from ..mcmc.kernels import langevin_step
from .priors.ebm import grad_fn

__all__ = ["conditional_langevin", "private_rng", "PrivateSeed", "EnergyCalibration", "CalibratedPosterior"]


def conditional_langevin(energy: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, steps: int,
                         step_size: float, sigma: float | None = None, noise: float = 1.0) -> torch.Tensor:
    """K steps of x <- x - s/2 (grad E(x) + (x - x0) / sigma^2) + c sqrt(s) xi from x0 (Eq. 3);
    ``energy`` maps [B, ...] -> [B]. Returns the detached x_K; no parameter gets a .grad.
    The energy's parametrized weights are cached for the chain (one spectral-norm power
    iteration per chain in training mode, not one per step)."""
    x0 = x0.detach()
    x, fn = x0, grad_fn(energy)
    # parametrized weights (spectral norm: W / sigma(W) with a power-iteration step) are
    # computed once per chain, not at each of its K energy calls (8 % of an EC-VAE step)
    with torch.nn.utils.parametrize.cached():
        for _ in range(steps):
            _, g = fn(x)
            if sigma is not None:
                g = g + (x - x0) / sigma**2
            x = langevin_step(x, g, 0.5 * step_size, noise * step_size**0.5)
    return x


@contextmanager
def private_rng(seed: int | torch.Tensor, state: dict, call: int, device: torch.device):
    """Run the block on a private RNG stream seeded by (``seed``, the trainer's ``state["step"]``,
    ``call``, the process rank) inside ``torch.random.fork_rng``: the global RNG (and, on CUDA,
    ``device``'s) is restored afterwards, as if the block had drawn nothing from it."""
    dist = torch.distributed
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(hash((int(seed), state.get("step", 0), call, rank)) % 2**63)
        yield


@contextmanager
def _eval_mode(module: nn.Module):
    was = module.training
    module.train(False)
    try:
        yield
    finally:
        module.train(was)


class PrivateSeed:
    """Mixin for an ``nn.Module`` with a private RNG stream (:func:`private_rng`): the seed is a
    buffer drawn at build (so it is checkpointed), read to the host once after build or load,
    not at every step (each read is a synchronisation on CUDA)."""

    def init_private_seed(self) -> None:
        self.register_buffer("seed", torch.randint(2**62, ()))
        self._seed_int: int | None = None

    def private_rng(self, state: dict, call: int, device: torch.device):
        if self._seed_int is None:
            self._seed_int = int(self.seed)
        return private_rng(self._seed_int, state, call, device)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._seed_int = None


class _ChainCalibrator(PrivateSeed, Calibrator):
    """Shared parts: the chain settings, the dual variable lambda (Eq. 4) and the private RNG."""

    def __init__(self, p: "ChainParams"):
        super().__init__()
        self.steps, self.step_size, self.sigma, self.noise = p.steps, p.step_size, p.sigma, p.noise
        self.primal_dual, self.eps1, self.eta, self.lambda_max = p.primal_dual, p.eps1, p.eta, p.lambda_max
        self.register_buffer("lam", torch.tensor(p.lambda_init, dtype=torch.float64))
        self.init_private_seed()

    def chain(self, energy, x0: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        return conditional_langevin(energy, x0, self.steps if steps is None else steps, self.step_size,
                                    self.sigma, self.noise)

    def dual_step(self, l_con: torch.Tensor | float) -> None:
        """lambda <- clip(lambda + eta (L_con - eps1), 0, lambda_max) (Eq. 4's dual ascent), on
        the device: no host synchronisation per step."""
        if self.primal_dual:
            step = self.eta * (torch.as_tensor(l_con).detach().to(self.lam) - self.eps1)
            self.lam.add_(step).clamp_(0.0, self.lambda_max)


class EnergyCalibration(_ChainCalibrator):
    """EC-VAE's conditional data-space EBM (module docstring)."""
    name = "ec"
    refines = True

    def __init__(self, p: "ECParams", energy: nn.Module):
        super().__init__(p)
        self.energy, self.source, self.lr, self.betas = energy, p.source, p.lr, tuple(p.betas)
        self.energy_reg = p.energy_reg

    def data_energy(self, x: torch.Tensor) -> torch.Tensor:
        """E_w(x) -> [B] (differentiable; used by zero-shot restoration)."""
        return self.energy(x)

    @torch.no_grad()
    def refine(self, model: nn.Module, x: torch.Tensor, steps: int) -> torch.Tensor:
        """Test-time "w/ MCMC": ``steps`` steps of Eq. 3 from generated samples x (global RNG)."""
        return self.chain(self.energy, x, steps)

    def updates(self) -> list[UpdateSpec]:
        return [UpdateSpec("ec", list(self.energy.parameters()), lr=self.lr, betas=self.betas, order=1)]

    def vae_loss_term(self, model, x, state):
        with self.private_rng(state, 0, x.device):
            z = None if self.source == "prior" else torch.randn(x.shape[0], model.latent_dim, device=x.device)
            x_gen = model.generate(x.shape[0], z=z)
            x_cal = self.chain(self.energy, x_gen)
        l_con = (x_gen - x_cal).pow(2).flatten(1).sum(1).mean()
        state["ec_negatives"], state["ec_l_con"] = x_cal, l_con.detach()
        with torch.no_grad():
            e_gen = self.energy(x_gen).mean()
        lam = self.lam.to(l_con.dtype)
        return lam * l_con, {"ec/lambda": lam, "ec/l_con": l_con.detach(), "ec/e_gen": e_gen}

    def update_loss(self, name, x, state):
        if "ec_negatives" not in state:
            raise RuntimeError("the ec update needs the VAE update of the same step (its calibrated samples)")
        energies_real, energies_cal = self.energy(x), self.energy(state["ec_negatives"])
        e_real, e_cal = energies_real.mean(), energies_cal.mean()
        loss = e_real - e_cal
        if self.energy_reg:
            loss = loss + self.energy_reg * (energies_real.pow(2).mean() + energies_cal.pow(2).mean())
        return loss, {"loss": loss.detach(), "e_real": e_real.detach(), "e_cal": e_cal.detach()}

    def after_update(self, name, state):
        if name == "vae":
            self.dual_step(state["ec_l_con"])


class CalibratedPosterior(_ChainCalibrator):
    """Energy-calibrated variational learning (Sec. 4.1; module docstring)."""
    name = "calibrated_posterior"

    def bind(self, model: nn.Module) -> None:
        if not model.reconstruction.likelihood:
            raise ConfigError("model.calibrators: calibrated_posterior needs a likelihood reconstruction "
                              f"(ln p(x|z)), got {type(model.reconstruction).__name__}")

    def vae_loss_term(self, model, x, state):
        z0 = state["z"].reshape(-1, model.latent_dim)              # [M*B, m] for M samples per x
        xs = x.repeat(z0.shape[0] // x.shape[0], *[1] * (x.dim() - 1))

        def u(z):                                                   # -ln p(x|z) - ln p(z)
            return -(model.reconstruction.log_prob(xs, model.decode(z)) + model.prior.log_prob(z))

        with self.private_rng(state, 2, x.device), _eval_mode(model.reconstruction):
            z_k = self.chain(u, z0)
        l_con = (z0 - z_k).pow(2).sum(-1).mean()
        state["cpost_l_con"] = l_con.detach()
        lam = self.lam.to(l_con.dtype)
        return lam * l_con, {"cpost/lambda": lam, "cpost/l_con": l_con.detach()}

    def after_update(self, name, state):
        if name == "vae":
            self.dual_step(state["cpost_l_con"])


@dataclass
class ChainParams:
    """Chain (Eq. 3) and dual-variable (Eq. 4) settings; defaults are ``ec``'s (module docstring)."""
    steps: int = 15                       # K
    step_size: float = 0.025              # s: the demo's chain in [0, 1] pixels (module docstring)
    noise: float = 1e-5 ** 0.5            # c (1: Eq. 3 as printed)
    sigma: float | None = None            # distance scale; None: no distance term
    lambda_init: float = 30.0
    primal_dual: bool = True              # False: lambda fixed at lambda_init
    eps1: float = 0.05                    # margin epsilon_1 of the constraint
    eta: float = 1e-2                     # dual step size
    lambda_max: float = 100.0

    def __post_init__(self):
        check(self.steps >= 1, f"steps: must be >= 1, got {self.steps}")
        check(self.step_size > 0, f"step_size: must be > 0, got {self.step_size}")
        check(self.noise >= 0, f"noise: must be >= 0, got {self.noise}")
        check(self.sigma is None or self.sigma > 0, f"sigma: must be > 0 or null, got {self.sigma}")
        check(self.eps1 >= 0, f"eps1: must be >= 0, got {self.eps1}")
        check(self.eta > 0, f"eta: must be > 0, got {self.eta}")
        check(0 <= self.lambda_init <= self.lambda_max,
              f"lambda_init: must be in [0, lambda_max = {self.lambda_max}], got {self.lambda_init}")


@dataclass
class ECParams(ChainParams):
    energy: dict = field(default_factory=lambda: {"name": "resnet"})
    source: Literal["prior", "normal"] = "prior"
    lr: float = 1e-4                      # EBM Adam
    betas: tuple[float, float] = (0.0, 0.9)
    energy_reg: float = 0.0               # alpha of Du & Mordatch's alpha (E_real^2 + E_cal^2)

    def __post_init__(self):
        super().__post_init__()
        check(self.energy_reg >= 0, f"energy_reg: must be >= 0, got {self.energy_reg}")
        self.energy = {"name": "resnet", **self.energy}
        keep_parsed(self, "energy", DATA_ENERGIES, "energy")
        check(self.lr > 0, f"lr: must be > 0, got {self.lr}")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
              f"betas: must be two numbers in [0, 1), got {self.betas}")


@dataclass
class CalibratedPosteriorParams(ChainParams):
    steps: int = 5
    step_size: float = 1e-3
    noise: float = 1.0
    sigma: float | None = 1.0
    lambda_init: float = 1.0              # lambda_2
    primal_dual: bool = False


@CALIBRATORS.register("ec", ECParams)
def _ec(p: ECParams, *, data_shape, **_):
    return EnergyCalibration(p, DATA_ENERGIES.build(parsed(p, "energy"), "energy", data_shape=data_shape))


@CALIBRATORS.register("calibrated_posterior", CalibratedPosteriorParams)
def _calibrated_posterior(p: CalibratedPosteriorParams, **_):
    return CalibratedPosterior(p)
