"""EC-Flow (paper 001, Sec. 4.2): a normalizing flow as the generator, trained by maximum
likelihood and calibrated by EC-VAE's conditional data-space EBM (``ec`` calibrator).

Model (``model: {name: flow}``). A bijection t: R^D -> R^D (D = the flattened data dimension;
images are flattened inside the model and reshaped back to the data shape) with base
N(0, I):  ln p(x) = ln N(t(x); 0, I) + ln |det dt/dx|  (change of variables). Generation is
x = t^{-1}(z), z ~ N(0, I): ``generate(n, z)`` (differentiable in the flow's parameters, z
detached; ``latent_dim`` = D, so the ``ec`` calibrator's ``source: normal`` draws the base
noise), ``sample(n, mcmc)`` (no gradient; ``mcmc`` > 0 refines with the calibrator's Langevin,
the paper's "EC-Flow w/ MCMC").

Loss of the main update (named ``"vae"``, which means "the generator update" in this package;
the calibrators key their dual step on it): per example the NLL  -ln p(x)  in nats of the
model-space (preprocessed) data, averaged over the batch, plus every calibrator's term (for
``ec``: lambda * L_con, Eq. 4's primal-dual lambda, exactly as in EC-VAE, see
``energy_calibration.py``; the paper: "use the negative model log-likelihood to serve as
L(phi) ... while other components keep the same"). ``evaluate`` returns the per-example
``loss`` (= ``nll``) in nats of model space; ``evaluation.likelihood.exact_test_log_likelihood``
converts it to bits/dim of the 8-bit data (``Preprocess.bits_per_dim``), which ``runs.finalize`` reports as
``exact`` (an exact density needs no importance-weighted bound).

Data. The density is over the preprocessed continuous data, so image configs MUST dequantize
(``data.dequantize: uniform`` or ``uniform_logit``): on undequantized pixels (a finite set of
values) a flow's likelihood is unbounded and the NLL runs to -inf. With ``uniform_logit`` (the
RealNVP setting, our configs) the density, the samples of ``generate`` and the calibrator's
energy and Langevin chain all live in logit space, the space the trainer feeds;
``Preprocess.to_unit`` maps samples back to [0, 1] for image grids. ``reconstruct(x)`` is the
round trip t^{-1}(t(x)): exact up to float error (an invertibility check, not a lossy
reconstruction); it is there so the run artifacts and ``energyvae reconstruct`` work.

Architecture choices (``kind``):
- ``coupling`` (default): zuko's masked affine transforms with ``passes=2``: each layer splits
  the dimensions into two halves, applies a learned elementwise affine to the first and an
  affine conditioned on the first (a masked MLP of widths ``hidden``) to the second: an affine
  coupling layer (RealNVP, Dinh et al. 2017). Density and sampling are both 1-2 network passes
  per layer, which matters because the calibration term backpropagates through sampling every
  step. ``permutation: random`` draws a fixed random split per layer at build time (a buffer,
  saved with the weights; the train seed fixes it); ``alternate`` splits first/second half
  and reverses the order every other layer.
- ``maf``: fully autoregressive (MAF, Papamakarios et al. 2017): more expressive per layer,
  but sampling takes D sequential passes per layer (64 on digits), so the calibration step is
  much slower.
Every conditioner's last layer starts at zero, so the flow starts as the identity (p = N(0, I)).
Each layer's ln scale is soft-clipped to (-B, B), B = ``log_scale_bound`` (zuko's ``slope`` =
e^-B). Default B = ln 10, not zuko's ln 1000: on digits with ln 1000 a few base draws z came
out of t^{-1} at |x| ~ 1e3..1e25 within a few hundred steps (the conditioners extrapolate off
the training manifold and 2 x 8 sub-steps compound it); such outliers made the calibration
gradient (it backpropagates through t^{-1}) up to 100x the NLL gradient and sent an MLP
energy's values to 1e15. With ln 10 the plain flow's NLL trained as fast and samples stayed
bounded (|x| < ~20 in logit space).
The paper uses Glow on CIFAR-10; for 8x8 digits (1455 training images, which an affine flow
overfits after ~750 steps) 8 coupling layers with [64, 64] conditioners train in about 20 s
(plain) / 2 min (with ``ec``) on one CPU thread (``configs/flow_digits.yaml``,
``configs/ecflow_digits.yaml``).

Calibrators: ``ec`` (and any calibrator that uses only ``model.generate`` / ``latent_dim``);
those that need a VAE posterior (``calibrated_posterior``, ``mmd``) are rejected.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Literal, Sequence

import torch
import zuko
from torch import nn
from zuko.transforms import MonotonicAffineTransform

from ..registry import check, keep_parsed, parsed
from .base import CALIBRATORS, MODELS, HasCalibrators, Model, ModelContext, UpdateSpec

__all__ = ["FlowModelParams", "FlowModel", "make_data_flow"]

_NEEDS_POSTERIOR = ("calibrated_posterior", "mmd")


_ACTIVATIONS = {"relu": nn.ReLU, "elu": nn.ELU, "tanh": nn.Tanh}


def make_data_flow(dim: int, transforms: int = 8, hidden: Sequence[int] = (256, 256),
                   kind: Literal["coupling", "maf"] = "coupling",
                   permutation: Literal["random", "alternate"] = "random", activation: str = "relu",
                   log_scale_bound: float = math.log(10.0)) -> zuko.flows.Flow:
    """An affine flow over R^dim with base N(0, I), initialised to the identity (module docstring).
    Each layer's ln scale is soft-clipped to (-log_scale_bound, log_scale_bound) (zuko's ``slope``).
    ``flow()`` is the distribution; ``flow.transform()`` maps data to noise (``.inv``: noise to data)."""
    univariate = partial(MonotonicAffineTransform, slope=math.exp(-log_scale_bound))
    flow = zuko.flows.MAF(dim, transforms=transforms, hidden_features=tuple(hidden),
                          passes=2 if kind == "coupling" else None, randperm=permutation == "random",
                          activation=_ACTIVATIONS[activation], univariate=univariate)
    with torch.no_grad():
        for t in flow.transform.transforms:     # dim = 1: zuko uses free parameters, no conditioner
            linears = [m for m in t.modules() if isinstance(m, nn.Linear)]
            for p in (linears[-1] if linears else t).parameters():
                p.zero_()
    return flow


@dataclass
class FlowModelParams:
    """``transforms`` affine layers of kind ``kind``, conditioners of widths ``hidden``."""
    kind: Literal["coupling", "maf"] = "coupling"
    transforms: int = 8
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    permutation: Literal["random", "alternate"] = "random"
    activation: Literal["relu", "elu", "tanh"] = "relu"      # of the conditioner MLPs
    log_scale_bound: float = 2.302585092994046                # |ln scale| per layer < this (ln 10)
    calibrators: list = field(default_factory=list)

    def __post_init__(self):
        check(0 < self.transforms <= 1024, f"transforms: must be in [1, 1024], got {self.transforms}")
        check(len(self.hidden) > 0 and all(h > 0 for h in self.hidden),
              f"hidden: widths must be > 0, got {self.hidden}")
        check(self.log_scale_bound > 0, f"log_scale_bound: must be > 0, got {self.log_scale_bound}")
        for i, c in enumerate(self.calibrators):
            name, _ = keep_parsed(self, f"calibrators.{i}", CALIBRATORS, f"model.calibrators.{i}")
            check(name not in _NEEDS_POSTERIOR,
                  f"model.calibrators.{i}: {name!r} needs a VAE posterior; the flow model has none "
                  f"(use ec)")


class FlowModel(HasCalibrators, Model):
    """EC-Flow / a plain maximum-likelihood flow (module docstring)."""
    exact_likelihood = True            # log_prob is the exact, normalised model-space density

    def __init__(self, p: FlowModelParams, ctx: ModelContext):
        super().__init__()
        self.data_shape = tuple(ctx.data_shape)
        self.latent_dim = math.prod(self.data_shape)
        self.kind = p.kind
        self.flow = make_data_flow(self.latent_dim, p.transforms, p.hidden, p.kind, p.permutation,
                                   p.activation, p.log_scale_bound)
        common = dict(latent_dim=self.latent_dim, data_shape=self.data_shape, data_kind=ctx.data_kind,
                      value_range=ctx.value_range, **ctx.extra)
        self.calibrators = nn.ModuleList(
            CALIBRATORS.build(parsed(p, f"calibrators.{i}"), f"model.calibrators.{i}", **common)
            for i in range(len(p.calibrators)))
        self.bind_parts()

    # -- the density and the bijection -----------------------------------------------------
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ln p(x) per example, nats, model space: [B, *data_shape] -> [B]."""
        return self.flow().log_prob(x.reshape(x.shape[0], -1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z = t(x): data -> base noise, [B, *data_shape] -> [B, D]."""
        return self.flow.transform()(x.reshape(x.shape[0], -1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """x = t^{-1}(z): base noise -> data, [B, D] -> [B, *data_shape] (differentiable)."""
        return self.flow.transform().inv(z).reshape(z.shape[0], *self.data_shape)

    # -- generation ------------------------------------------------------------------------
    def generate(self, n: int, z: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable samples t^{-1}(z), z ~ N(0, I) (global RNG; or the given z), z detached:
        gradients reach the flow's parameters only. The calibrators' generator interface."""
        if z is None:
            p = next(self.flow.parameters())
            z = torch.randn(n, self.latent_dim, device=p.device, dtype=p.dtype)
        return self.decode(z.detach())

    @torch.no_grad()
    def sample(self, n: int, mcmc: int = 0) -> torch.Tensor:
        """Model-space samples; ``mcmc`` > 0 refines them by that many Langevin steps of each
        calibrator with a ``refine`` ("EC-Flow w/ MCMC")."""
        x = self.generate(n)
        return self.refine_samples(x, mcmc) if mcmc else x

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """t^{-1}(t(x)) = x up to float error (module docstring)."""
        return self.decode(self.encode(x))

    # -- the trainer contract (see models/base.py) ------------------------------------------
    def updates(self) -> list[UpdateSpec]:
        return self.collect_updates()

    def forward(self, update: str, x: torch.Tensor, state: dict):
        if update != self.MAIN_UPDATE:
            return self.part_update_loss(update, x, state)
        loss = -self.log_prob(x).mean()
        logs = {"loss": loss.detach(), "nll": loss.detach()}
        return self.add_calibrator_terms(loss, logs, x, state)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-example NLL in nats of model space (``loss`` = ``nll``)."""
        nll = -self.log_prob(x)
        return {"loss": nll, "nll": nll}


@MODELS.register("flow", FlowModelParams)
def _flow(p: FlowModelParams, ctx: ModelContext):
    return FlowModel(p, ctx)
