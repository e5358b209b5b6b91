"""A data-space EBM trained by contrastive divergence: the "EBM" and "EBM init w/ VAE samples"
baselines of paper 001 (EC-VAE), Table 10 (CIFAR-10 FID: EBM 45.52, EBM init w/ VAE samples
44.63, EC-VAE 5.20; Sec. 5.4, "Effect of Calibration").

Model ``data_ebm``: p_w(x) ∝ exp(-E_w(x)), E_w a ``DATA_ENERGIES`` net (``energy``, see
``nets/energy.py``). One update per training step, ``ebm`` (its Adam takes the train section's
lr / betas unless ``lr`` / ``betas`` are given):

    x_0 ~ init,   x_neg = K steps of unconditional Langevin from x_0 (sg: no gradient through the chain),
    loss = mean_b E_w(x_b) - mean_b E_w(x_neg,b) + alpha * mean_b (E_w(x_b)^2 + E_w(x_neg,b)^2)

(paper 001 Eq. 2; the alpha term is the energy-magnitude regulariser of Du & Mordatch 2019,
"Implicit generation and generalization in energy-based models", Sec. 3.3; ``alpha: 0``, the
default, is plain CD as in Nijkamp et al. 2019 and the EC-VAE authors' code). The chain is
``energy_calibration.conditional_langevin`` with ``sigma = None`` (Eq. 3 of paper 001 with a
noise scale c):

    x_{k+1} = x_k - s/2 grad E_w(x_k) + c sqrt(s) xi,   xi ~ N(0, I),

targeting exp(-E_w / c^2) up to an O(s) bias; samples are not clamped to the data range.

``init`` (the start x_0 of every chain, in training and at test time):

- ``noise`` ("EBM alone"): uniform over the data's value range (e.g. U[0, 1]^D for ``scale: 01``
  images, U[-1, 1]^D for ``pm1``), as Nijkamp et al. 2019 (uniform on [-1, 1]) and Du & Mordatch
  2019 (uniform on [0, 1]); data without a bounded range (vectors, logit images) start from
  N(0, I).
- ``run`` ("EBM initialised with samples of a trained VAE"): ``init_run`` is the folder of a
  trained run (e.g. ``runs/digits_conv_vae``: train ``configs/digits_conv_vae.yaml`` first);
  x_0 = that model's ``sample(n)`` (one decoder pass at z ~ prior). The run is loaded with
  ``load_run(init_run, init_checkpoint, ema=init_ema)`` of the model context (the run layer hands
  down :func:`energyvae.runs.load_run`) when this model is built
  (a relative path is taken from the working directory), inside ``torch.random.fork_rng`` so
  the EBM's initial weights do not depend on it. It is frozen (``requires_grad`` False, always in
  eval mode, not in any update) and kept as the submodule ``init_model``, so its weights are
  also saved in every checkpoint of this run: a resume or ``load_run`` rebuilds it from
  ``init_run`` (its config.yaml and checkpoint must still exist) and then restores the stored
  weights, so the chains restart from exactly the same VAE even if ``init_run`` was retrained.
  A missing / unreadable ``init_run`` or one with other data shape / value range raises a
  one-line ``ConfigError``.

Persistent chains (optional; ``buffer_size: 0``, the default, is the non-persistent short-run
EBM of Nijkamp et al. 2019, "Learning non-convergent non-persistent short-run MCMC toward
energy-based model"): with ``buffer_size: N > 0`` a replay buffer of past negatives (Du &
Mordatch 2019, Sec. 3.1) holds up to N samples; each chain starts from a uniformly drawn buffer
entry, or with probability ``reinit`` (0.05, theirs) from a fresh init; the chains' ends are
written to the buffer in ring (FIFO) order. The buffer and its counters are registered buffers,
so checkpoints (and the EMA copy) carry them and resume is exact. Test-time ``sample`` still
starts from ``init`` (a persistent-chain EBM may need a larger ``mcmc`` there).

Test time: ``sample(n, mcmc=0)`` = init + K' Langevin steps, K' = ``mcmc`` if > 0, else
``sample_steps``, else the training K (so ``energyvae sample RUN --mcmc K'`` changes K').
``reconstruct(x)`` (what ``energyvae reconstruct`` and the end-of-run reconstructions.png show
for this model) is K' Langevin steps started at the data x: a diagnostic, not a
reconstruction; a short-run EBM is not expected to leave data fixed (Nijkamp et al. 2020, "On
the anatomy of MCMC-based maximum likelihood learning of energy-based models").

``evaluate(x)`` (per example; the trainer keeps the checkpoint of lowest mean ``loss``):
``loss`` = the energy score (Gneiting & Raftery 2007; beta = 1, Euclidean norm over all data
dimensions, model space) of the test-time sampler at x, estimated with the n = max(B, 2)
samples X_j drawn for the batch: mean_j ||X_j - x|| - 1/2 mean_{j != k} ||X_j - X_k||. It is
a proper scoring rule of the sampler's law (minimised in expectation when it equals the data
law), so unlike E_w(x), whose offset is arbitrary, it ranks checkpoints by sample quality.
Also ``energy`` = E_w(x) and ``energy_gap`` = E_w(x) - mean_j E_w(X_j) (the CD gap). No
likelihood is reported (ln Z is unknown).

Defaults (8x8 digits, ``scale: 01``; ``configs/ebm_digits.yaml``), converted from Nijkamp et al.
2019's short-run setting: x <- x + grad f(x) + 0.01 xi with f = -E on [-1, 1] images, K = 100,
i.e. s/2 = 1 (s = 2) and c sqrt(s) = 0.01, c ~ 0.0071 in this package's convention; on [0, 1]
data the same noise relative to the data range is 0.005, c = 0.005 / sqrt(2) ~ 0.0035. The step
size matters little, the energy adapts its gradient to it: trained with s = 20 (SiLU energy, c
sqrt(s) kept at 0.005, lr 1e-3, 2000 steps) its gradient came out ~10x smaller than with s = 2,
the chains moved as far (||x_K - x_0|| ~ 3.1) and the samples looked alike (validation energy
score 1.65 vs 1.52; real images 1.51, uniform noise 2.48). Chains of K = 100 steps through a
ResNet cost ~100 forward-backward passes per training step (~1.4 s / step for channels [16, 32],
batch 128, on one CPU thread), so the digits configs use an MLP energy 64-256-256-1 with
LeakyReLU (with SiLU, lr 1e-4 or 1e-3, 2000 steps, samples kept grey noisy backgrounds;
LeakyReLU's were darker with clearer strokes), Adam lr 1e-3, betas (0.5, 0.999), batch 128, 4000
steps (~0.17 s per step on one contended CPU thread, ~11 min; samples are digit-like with some
pixel noise).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from ..errors import ConfigError, EnergyVAEError
from ..nets.energy import DATA_ENERGIES
from ..registry import check, keep_parsed, parsed
from .base import MODELS, Model, ModelContext, UpdateSpec
from .energy_calibration import conditional_langevin

__all__ = ["DataEBM", "DataEBMParams", "energy_score"]


@dataclass
class DataEBMParams:
    energy: dict = field(default_factory=lambda: {"name": "mlp"})
    init: Literal["noise", "run"] = "noise"
    init_run: str | None = None                  # run folder of a trained VAE (init: run)
    init_checkpoint: Literal["best", "last"] = "best"
    init_ema: bool = True                        # the init run's EMA weights (if it has them)
    steps: int = 100                             # K, training chain length
    step_size: float = 2.0                       # s
    noise: float = 0.005 / 2 ** 0.5              # c
    sample_steps: int | None = None              # K' at test time; None: K
    alpha: float = 0.0                           # energy-magnitude regulariser (Du & Mordatch: 1)
    buffer_size: int = 0                         # replay buffer of past negatives; 0: short-run
    reinit: float = 0.05                         # share of buffer chains restarted from init
    lr: float | None = None                      # None: the train section's
    betas: tuple[float, float] | None = None

    def __post_init__(self):
        self.energy = {"name": "mlp", **self.energy}
        keep_parsed(self, "energy", DATA_ENERGIES, "energy")
        check(self.steps >= 1, f"steps: must be >= 1, got {self.steps}")
        check(self.sample_steps is None or self.sample_steps >= 1,
              f"sample_steps: must be >= 1 or null, got {self.sample_steps}")
        check(self.step_size > 0, f"step_size: must be > 0, got {self.step_size}")
        check(self.noise >= 0, f"noise: must be >= 0, got {self.noise}")
        check(self.alpha >= 0, f"alpha: must be >= 0, got {self.alpha}")
        check(self.buffer_size >= 0, f"buffer_size: must be >= 0, got {self.buffer_size}")
        check(0 <= self.reinit <= 1, f"reinit: must be in [0, 1], got {self.reinit}")
        check(self.lr is None or self.lr > 0, f"lr: must be > 0, got {self.lr}")
        check(self.betas is None or (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas)),
              f"betas: must be two numbers in [0, 1), got {self.betas}")
        if self.init == "run":
            check(bool(self.init_run), "init_run: required when init is 'run' (the folder of a trained "
                                       "VAE run, e.g. runs/digits_conv_vae)")
        else:
            check(self.init_run is None, f"init_run: only used with init: run, got init: {self.init!r}")


def energy_score(samples: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-example energy score (beta = 1) of the sample set ``samples`` [n, ...] (n >= 2) at
    each x [B, ...]: mean_j ||X_j - x|| - 1/2 mean_{j != k} ||X_j - X_k|| -> [B]."""
    s, x = samples.flatten(1).double(), x.flatten(1).double()
    n = s.shape[0]
    fit = torch.cdist(x, s).mean(1)
    spread = torch.cdist(s, s).sum() / (n * (n - 1))
    return (fit - 0.5 * spread).to(samples.dtype)


def _load_init_model(p: DataEBMParams, ctx: ModelContext) -> nn.Module:
    where = f"model.init_run: {p.init_run}"
    if ctx.load_run is None:
        raise ConfigError(f"{where}: this model loads another run, so build it through "
                          f"energyvae.runs.prepare (or pass build_model(..., load_run=...))")
    if not (Path(p.init_run) / "config.yaml").is_file():
        raise ConfigError(f"{where}: not a run folder (no config.yaml); train its config first "
                          f"(e.g. configs/digits_conv_vae.yaml for runs/digits_conv_vae)")
    try:
        with torch.random.fork_rng():
            _, data, model = ctx.load_run(p.init_run, p.init_checkpoint, ema=p.init_ema)
    except EnergyVAEError as e:
        raise ConfigError(f"{where}: cannot load it ({e})") from None
    if tuple(data.shape) != tuple(ctx.data_shape):
        raise ConfigError(f"{where}: its data shape {tuple(data.shape)} differs from this run's "
                          f"{tuple(ctx.data_shape)}")
    their, ours = data.preprocess.value_range, ctx.value_range
    if (None if their is None else tuple(their)) != (None if ours is None else tuple(ours)):
        raise ConfigError(f"{where}: its data value range {their} differs from this run's "
                          f"{ctx.value_range} (use the same data.scale / dequantize)")
    if not callable(getattr(model, "sample", None)):
        raise ConfigError(f"{where}: its model ({type(model).__name__}) has no sample(n)")
    for q in model.parameters():
        q.requires_grad_(False)
    return model.eval()


class DataEBM(Model):
    """E_w(x) on data space, trained by CD with Langevin negatives (module docstring)."""
    metric_units = "per example; loss = energy score of samples, energy in the net's units"

    def __init__(self, p: DataEBMParams, ctx: ModelContext, energy: nn.Module,
                 init_model: nn.Module | None = None):
        super().__init__()
        self.data_shape, self.value_range = tuple(ctx.data_shape), ctx.value_range
        self.energy = energy
        self.init_kind = p.init
        self.init_model = init_model                 # frozen; its weights are saved with this run
        self.steps, self.step_size, self.noise = p.steps, p.step_size, p.noise
        self.sample_steps = p.sample_steps or p.steps
        self.alpha, self.reinit, self.lr, self.betas = p.alpha, p.reinit, p.lr, p.betas
        self.buffer_size = p.buffer_size
        if p.buffer_size:
            self.register_buffer("replay", torch.zeros(p.buffer_size, *self.data_shape))
            self.register_buffer("replay_count", torch.zeros((), dtype=torch.long))
            self.register_buffer("replay_next", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True):
        super().train(mode)
        if self.init_model is not None:
            self.init_model.eval()                   # frozen: never in training mode
        return self

    # -- chains ----------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return next(self.energy.parameters()).device

    @torch.no_grad()
    def init_samples(self, n: int) -> torch.Tensor:
        """x_0 for n chains (global RNG): noise over the value range, or the init run's samples."""
        dev = self._device()
        if self.init_model is not None:
            return self.init_model.sample(n).to(dev, torch.float32).detach()
        if self.value_range is None:
            return torch.randn(n, *self.data_shape, device=dev)
        lo, hi = self.value_range
        return lo + (hi - lo) * torch.rand(n, *self.data_shape, device=dev)

    def chain(self, x0: torch.Tensor, steps: int) -> torch.Tensor:
        return conditional_langevin(self.energy, x0, steps, self.step_size, None, self.noise)

    @torch.no_grad()
    def _training_start(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        fresh = self.init_samples(n)
        if not self.buffer_size or int(self.replay_count) == 0:
            return fresh, None
        idx = torch.randint(int(self.replay_count), (n,), device=fresh.device)
        restart = torch.rand(n, device=fresh.device) < self.reinit
        mask = restart.view(n, *[1] * len(self.data_shape))
        return torch.where(mask, fresh, self.replay[idx]), restart

    @torch.no_grad()
    def _push(self, x: torch.Tensor) -> None:
        n = min(x.shape[0], self.buffer_size)
        pos = (int(self.replay_next) + torch.arange(n, device=x.device)) % self.buffer_size
        self.replay[pos] = x[:n].to(self.replay.dtype)
        self.replay_next.fill_((int(self.replay_next) + n) % self.buffer_size)
        self.replay_count.fill_(min(int(self.replay_count) + n, self.buffer_size))

    # -- test time -------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, mcmc: int = 0) -> torch.Tensor:
        """init + K' Langevin steps; K' = ``mcmc`` if > 0 else ``sample_steps`` (default: the
        training K). Global RNG."""
        return self.chain(self.init_samples(n), mcmc or self.sample_steps)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """K' Langevin steps started at the data x (a diagnostic; module docstring)."""
        return self.chain(x, self.sample_steps)

    # -- the trainer contract (models/base.py) ---------------------------------------------
    def updates(self) -> list[UpdateSpec]:
        return [UpdateSpec("ebm", list(self.energy.parameters()), lr=self.lr, betas=self.betas)]

    def forward(self, update: str, x: torch.Tensor, state: dict):
        if update != "ebm":
            raise KeyError(update)
        x0, restart = self._training_start(x.shape[0])
        x_neg = self.chain(x0, self.steps)
        if self.buffer_size:
            self._push(x_neg)
        e = self.energy(torch.cat([x, x_neg.to(x.dtype)]))
        e_real, e_neg = e[:x.shape[0]], e[x.shape[0]:]
        cd = e_real.mean() - e_neg.mean()
        loss = cd + self.alpha * (e_real.pow(2).mean() + e_neg.pow(2).mean()) if self.alpha else cd
        logs = {"loss": loss.detach(), "cd": cd.detach(), "e_real": e_real.mean().detach(),
                "e_neg": e_neg.mean().detach()}
        if restart is not None:
            logs["restart_share"] = restart.float().mean()
        return loss, logs

    def after_update(self, update: str, state: dict) -> None:
        pass

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per example: ``loss`` (energy score of the sampler), ``energy``, ``energy_gap``."""
        samples = self.sample(max(x.shape[0], 2)).to(x.dtype)
        e_x, e_s = self.energy(x), self.energy(samples)
        return {"loss": energy_score(samples, x), "energy": e_x, "energy_gap": e_x - e_s.mean()}


@MODELS.register("data_ebm", DataEBMParams)
def _data_ebm(p: DataEBMParams, ctx: ModelContext):
    init_model = _load_init_model(p, ctx) if p.init == "run" else None
    energy = DATA_ENERGIES.build(parsed(p, "energy"), "model.energy", data_shape=ctx.data_shape)
    return DataEBM(p, ctx, energy, init_model)
