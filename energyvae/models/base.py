"""Registries of model parts and the contracts between a model, its parts and the trainer.

A model subclasses :class:`Model` (an abstract base: its abstract methods must be written, its
optional capabilities have defaults here, never probed with ``hasattr``). It lists its
optimisation *updates* (one optimizer each) and computes the loss of an update on a batch::

    model.updates() -> list[UpdateSpec]               # e.g. [vae] or [vae, prior] or [ebm, vae]
    model(update_name, x, state) -> (loss, logs)      # scalar loss, dict of floats
    model.after_update(update_name, state)            # non-gradient steps (e.g. a dual variable)
    model.evaluate(x) -> dict[str, Tensor[B]]         # per-example validation metrics (nats)
    model.sample(n, mcmc=0) / model.reconstruct(x)    # data-space samples / reconstructions

``state`` is a :class:`StepState` shared by the updates of one training step: the trainer sets
``step``; the VAE update leaves ``z`` (posterior samples with their graph, for extra VAE-loss
terms such as an MMD regulariser), ``z_posterior`` (the same, detached, for a prior update that
fits them) and ``posterior`` (q(z|x)); a part keeps its own entries (``state["ec_negatives"]``)
in ``extra``. Item access (``state["z"]``) reads the same fields, so a plain dict works too.

The main update of every generator model is named ``"vae"`` (it means "the generator update":
the VAE's ELBO step, EC-Flow's maximum-likelihood step); calibrators key their dual steps on
that name. :class:`HasCalibrators` holds the plumbing such a model shares: its parts'
own updates, the main update's parameters, the calibrator terms and the after-update hooks.
"""
from __future__ import annotations

import weakref
from abc import ABC, abstractmethod
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import Registry

POSTERIORS = Registry("posterior")
PRIORS = Registry("prior")
RECONSTRUCTIONS = Registry("reconstruction")
CALIBRATORS = Registry("calibrator")
MODELS = Registry("model")


@dataclass
class UpdateSpec:
    """One optimizer and the parameters it steps.

    ``lr``/``betas`` of None take the train section's values. Updates run in ascending
    ``order`` (order 0 is the VAE update) at the steps t (0-based) with ``start <= t < stop``
    (``stop`` None: no end) and ``t % every == 0`` (``every`` counts from step 0, not ``start``);
    e.g. a two-stage scheme stops the VAE update and starts its own at the same step.
    """
    name: str
    params: list[nn.Parameter]
    lr: float | None = None
    betas: tuple[float, float] | None = None
    weight_decay: float | None = None
    every: int = 1
    order: int = 0
    grad_clip: float | None = None
    start: int = 0
    stop: int | None = None


@dataclass(eq=False)
class StepState(MutableMapping):
    """What the updates of one training step share (module docstring). A typed field that is
    None reads as absent (``"z" in state`` is False until the VAE update sets it)."""
    step: int = 0
    z: torch.Tensor | None = None               # posterior samples, with their graph
    z_posterior: torch.Tensor | None = None     # the same, detached
    posterior: Any = None                       # q(z|x), a DiagGaussian
    extra: dict = field(default_factory=dict)   # a part's own entries

    def _typed(self, key) -> bool:
        return key in _STATE_FIELDS

    def __getitem__(self, key):
        if self._typed(key):
            value = getattr(self, key)
            if value is None:
                raise KeyError(key)
            return value
        return self.extra[key]

    def __setitem__(self, key, value) -> None:
        if self._typed(key):
            setattr(self, key, value)
        else:
            self.extra[key] = value

    def __delitem__(self, key) -> None:
        if self._typed(key):
            if getattr(self, key) is None:
                raise KeyError(key)
            setattr(self, key, None)
        else:
            del self.extra[key]

    def __iter__(self):
        yield from (k for k in _STATE_FIELDS if getattr(self, k) is not None)
        yield from self.extra

    def __len__(self) -> int:
        return sum(1 for _ in self)


_STATE_FIELDS = ("step", "z", "z_posterior", "posterior")


class BindsModel:
    """Mixin for a part that needs the whole model (VampPrior's encoder, EVaLP's frozen
    encoder). The VAE calls ``bind(model)``; the part keeps a weak reference (the model is not
    its submodule, so state_dict does not recurse) and ``bound_model`` returns it. Copies (the
    trainer's EMA deepcopy, pickling) point at the copied model, not the original."""
    _model_ref = None

    def bind(self, model: nn.Module) -> None:
        self._model_ref = weakref.ref(model)

    @property
    def bound_model(self) -> nn.Module | None:
        return self._model_ref() if self._model_ref is not None else None

    def __getstate__(self):
        state = super().__getstate__()
        state["_model_ref"] = self.bound_model         # strong while copying, so deepcopy maps it
        return state

    def __setstate__(self, state):
        model = state.pop("_model_ref", None)
        super().__setstate__(state)
        self._model_ref = weakref.ref(model) if model is not None else None


class Component(nn.Module):
    """A model part that may bring its own optimisation updates (priors, calibrators)."""

    def updates(self) -> list[UpdateSpec]:
        return []

    def bind(self, model: nn.Module) -> None:
        """Called once by the model that owns this part (default: nothing; :class:`BindsModel`
        keeps a weak reference)."""

    def update_loss(self, name: str, x: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        raise KeyError(f"{type(self).__name__} has no update {name!r}")

    def after_update(self, name: str, state: dict) -> None:
        """Non-gradient work after update ``name`` (default: nothing)."""


class Calibrator(Component, ABC):
    """An optional part that adds a term to the VAE loss (EC-VAE's energy calibration, an
    InfoVAE MMD regulariser, ...). Called after the VAE loss is formed, with ``state`` filled.

    ``vae_loss_term(model, x, state)`` returns (scalar loss added to the VAE update, logs).
    Optional: ``refines`` True and ``refine(model, x, steps)`` for a calibrator whose
    data-space energy can refine samples at test time (EC-VAE "w/ MCMC"); ``data_energy()``
    for one whose energy restoration may use (the ``ec`` calibrator).
    """
    name: str = ""                    # the registered name (``ec``, ``wgan``, ...)
    refines: bool = False             # offers refine(model, x, steps)

    @abstractmethod
    def vae_loss_term(self, model: nn.Module, x: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """(scalar loss added to the main update, logs)."""

    def refine(self, model: nn.Module, x: torch.Tensor, steps: int) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} does not refine samples (its `refines` is False)")


class HasCalibrators:
    """Mixin for a generator model (an ``nn.Module``) whose main update ``"vae"`` carries the
    terms of ``self.calibrators`` (an ``nn.ModuleList`` of :class:`Calibrator`) and whose parts
    (``component_parts()``: the calibrators, plus e.g. a VAE's prior) may bring their own updates.

    - ``bind_parts()``: ``part.bind(self)`` for every part that needs the model;
    - ``collect_updates(**main)``: the main update over every trainable parameter no part's own
      update owns (``main``: extra UpdateSpec fields, e.g. ``stop``), then the parts' updates,
      sorted by ``order``;
    - ``part_update_loss(update, x, state)``: the loss of a part's own update;
    - ``add_calibrator_terms(loss, logs, x, state)``: the main loss plus every calibrator's term;
    - ``refine_samples(x, mcmc)``: ``mcmc`` test-time Langevin steps of every calibrator with ``refine``;
    - ``after_update``: every part's non-gradient step (e.g. the dual step of lambda).
    """
    MAIN_UPDATE = "vae"

    def component_parts(self) -> list[Component]:
        return list(self.calibrators)

    def calibrator_parts(self) -> list[Calibrator]:
        return list(self.calibrators)

    def bind_parts(self) -> None:
        for part in self.component_parts():          # parts that need the model (VampPrior's encoder)
            part.bind(self)

    def _own_update_params(self) -> set[int]:
        owned = set()
        for part in self.component_parts():
            for u in part.updates():
                owned |= {id(q) for q in u.params}
        return owned

    def collect_updates(self, **main) -> list[UpdateSpec]:
        owned = self._own_update_params()
        params = [q for q in self.parameters() if id(q) not in owned and q.requires_grad]
        specs = [UpdateSpec(self.MAIN_UPDATE, params, **main)]
        for part in self.component_parts():
            specs += part.updates()
        return sorted(specs, key=lambda s: s.order)

    def part_update_loss(self, update: str, x: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        for part in self.component_parts():
            if update in {u.name for u in part.updates()}:
                return part.update_loss(update, x, state)
        raise KeyError(update)

    def add_calibrator_terms(self, loss: torch.Tensor, logs: dict, x: torch.Tensor,
                             state: dict) -> tuple[torch.Tensor, dict]:
        for cal in self.calibrators:
            extra, cal_logs = cal.vae_loss_term(self, x, state)
            loss = loss + extra
            logs.update(cal_logs)
        return loss, logs

    @torch.no_grad()
    def refine_samples(self, x: torch.Tensor, mcmc: int) -> torch.Tensor:
        refiners = [c for c in self.calibrators if c.refines]
        if not refiners:
            raise ConfigError("sample: mcmc > 0 needs a calibrator with a data-space energy (ec)")
        for c in refiners:
            x = c.refine(self, x, mcmc)
        return x

    def after_update(self, update: str, state: dict) -> None:
        for part in self.component_parts():
            part.after_update(update, state)


class Model(nn.Module, ABC):
    """The contract between a model and the trainer (module docstring).

    Optional capabilities, declared here with their defaults:

    - ``MAIN_UPDATE``: the name of the generator update that calibrators key on ("vae");
    - ``metric_units``: the unit of the losses it reports (saved with every run);
    - ``exact_likelihood``: True when ``log_prob`` is an exact normalised density (EC-Flow),
      so the test NLL is exact instead of an IW bound;
    - ``has_encoder``: True for a latent-variable model with ``encode`` / ``decode``,
      ``prior``, ``posterior`` and ``reconstruction`` (the VAE): the latent metrics, the
      IW bound and the latent figures need it.
    """
    MAIN_UPDATE = "vae"
    metric_units: str = "nats per example"
    exact_likelihood: bool = False
    has_encoder: bool = False

    @abstractmethod
    def updates(self) -> list[UpdateSpec]:
        """The optimisation updates, each with its parameters and optimizer settings."""

    @abstractmethod
    def forward(self, update: str, x: torch.Tensor, state: dict):
        """(scalar loss, logs) of update ``update`` on the batch ``x``."""

    def after_update(self, update: str, state: dict) -> None:
        """Non-gradient work after update ``update`` (default: nothing)."""

    @abstractmethod
    def evaluate(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-example validation metrics; the trainer keeps the checkpoint of lowest ``loss``."""

    @abstractmethod
    def sample(self, n: int, mcmc: int = 0) -> torch.Tensor:
        """``n`` data-space samples (``mcmc`` > 0: refined by a calibrator's Langevin steps)."""

    @abstractmethod
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstructions (or the model's diagnostic stand-in) of the batch ``x``."""

    def calibrator_parts(self) -> list[Calibrator]:
        """The model's calibrators (default: none; :class:`HasCalibrators` lists its own)."""
        return []


def batch_norm_layers(net: nn.Module) -> list[str]:
    """Names of ``net``'s batch-norm layers: a critic or EBM that scores data and generated
    examples in one batch (WGAN-GP's per-example penalty, DT-VAE's pairs) must have none."""
    return [n for n, m in net.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@dataclass
class ModelContext:
    """What a model builder gets to know about the data."""
    data_shape: tuple[int, ...]
    data_kind: str                       # "image" | "vector"
    value_range: tuple[float, float] | None = None
    extra: dict = field(default_factory=dict)
    #: ``load_run(run_dir, checkpoint, ema=...) -> (cfg, data, model)``: how a model that starts
    #: from another trained run loads it (handed down by the run layer; None outside a run)
    load_run: Callable | None = None
