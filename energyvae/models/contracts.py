"""Check a registered part against its contract: built from its default parameters, of the
right base class, and working inside a small model.

Every registry has a contract: a base class (the part subclasses it, its optional capabilities
are defaults there) and a behaviour check that builds the part with its defaults, puts it in a
tiny model (a VAE on 1 x 8 x 8 images with 4 latents and small MLP nets, or the part's own
model), runs one loss of every update in the trainer's order, ``after_update``, ``evaluate``,
``sample`` and ``reconstruct``, and checks shapes and finiteness. The test suite runs it for
every entry of every registry (tests/models/test_contracts.py); a plugin author runs the same on
their own part::

    from energyvae.models.contracts import check_part
    problems = check_part("prior", "my_prior")        # [] when the part keeps its contract

Some parts only work beside a particular companion (a Gibbs sampler needs the GRBM energy, NCP
the tilted energy); :data:`COMPANIONS` states those pairings, and a part's own needs can be
given with ``context``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..registry import REGISTRIES
from .base import Calibrator, Model, StepState, UpdateSpec
from .posterior import DiagGaussian, Posterior
from .priors.base import Prior
from .priors.ebm import LatentEnergy, LatentSampler, PriorScheme
from .reconstruction.base import Reconstruction

SHAPE, LATENT, BATCH = (1, 8, 8), 4, 6

#: the base class each registry's parts subclass (None: any ``nn.Module`` with the shape contract)
BASES: dict[str, type | None] = {
    "model": Model, "prior": Prior, "reconstruction": Reconstruction, "calibrator": Calibrator,
    "posterior": Posterior, "energy": LatentEnergy, "latent sampler": LatentSampler,
    "prior training scheme": PriorScheme, "encoder": None, "decoder": None, "data energy": None,
}

#: parts that work only beside another: (registry, name) -> model overrides of the smoke test
COMPANIONS: dict[tuple[str, str], dict] = {
    ("prior training scheme", "ncp"): {"energy": {"name": "tilted", "hidden": [8]}},
    ("latent sampler", "gibbs"): {"energy": {"name": "grbm", "hidden": 4}},
    ("latent sampler", "gibbs_langevin"): {"energy": {"name": "grbm", "hidden": 4}},
}

_MLP = {"name": "mlp", "hidden": [16]}
_SMALL_CHAIN = {"steps": 3}                     # short MCMC in the smoke tests


def _vae(**parts):
    from .vae import VAE
    spec = dict(encoder=_MLP, decoder=_MLP, reconstruction="bernoulli", prior="normal")
    spec.update(parts)
    return VAE.from_parts(SHAPE, LATENT, **spec)


def _ebm_prior(**kw) -> dict:
    prior = {"name": "ebm", "energy": {"name": "grbm", "hidden": 4},
             "sampler": {"name": "langevin", "steps": 3}, "scheme": {"name": "ssm"}}
    prior.update(kw)
    return prior


def _x() -> torch.Tensor:
    return torch.rand(BATCH, *SHAPE).round()        # binary, valid for every objective


def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def exercise_model(model: Model, x: torch.Tensor | None = None) -> list[str]:
    """Run every update of ``model`` once in the trainer's order, then evaluate, sample and
    reconstruct; the problems found (empty: the model keeps the trainer's contract)."""
    problems = []
    if not isinstance(model, Model):
        return [f"{type(model).__name__} does not subclass energyvae.models.base.Model"]
    x = _x() if x is None else x
    updates = model.updates()
    if not updates or not all(isinstance(u, UpdateSpec) for u in updates):
        problems.append(f"updates() must be a non-empty list of UpdateSpec, got {updates!r}")
        return problems
    state = StepState(step=0)
    model.train()
    for u in sorted(updates, key=lambda u: u.order):
        loss, logs = model(u.name, x, state)
        if loss.dim() != 0 or not _finite(loss.detach()):
            problems.append(f"update {u.name!r}: the loss must be a finite scalar, got {loss}")
        if not isinstance(logs, dict):
            problems.append(f"update {u.name!r}: logs must be a dict, got {type(logs).__name__}")
        if loss.requires_grad:
            loss.backward()
        model.after_update(u.name, state)
    model.eval()
    ev = model.evaluate(x)
    if "loss" not in ev or tuple(ev["loss"].shape) != (len(x),):
        problems.append(f"evaluate(x) must hold a per-example 'loss' of shape [{len(x)}], got "
                        f"{ {k: tuple(v.shape) for k, v in ev.items()} }")
    with torch.no_grad():
        s = model.sample(3)
        r = model.reconstruct(x)
    if tuple(s.shape) != (3, *x.shape[1:]):
        problems.append(f"sample(3) must be [3, {', '.join(map(str, x.shape[1:]))}], got {tuple(s.shape)}")
    if tuple(r.shape) != tuple(x.shape):
        problems.append(f"reconstruct(x) must keep the shape {tuple(x.shape)}, got {tuple(r.shape)}")
    if model.has_encoder:
        for attr in ("encode", "decode", "prior", "posterior", "reconstruction"):
            if not hasattr(model, attr):
                problems.append(f"has_encoder is True but the model has no {attr!r}")
    if not isinstance(model.metric_units, str):
        problems.append("metric_units must be a string")
    return problems


def _check_net(kind: str, net: nn.Module) -> list[str]:
    if kind == "encoder":
        out = net(_x())
        want = (BATCH, 2 * LATENT)
    elif kind == "decoder":
        out = net(torch.randn(BATCH, LATENT))
        want = (BATCH, *SHAPE)
    else:                                                        # data energy
        out = net(_x())
        want = (BATCH,)
    ok = tuple(out.shape) == want and _finite(out.detach())
    return [] if ok else [f"output must be finite with shape {want}, got {tuple(out.shape)}"]


def _build(kind: str, name: str, context: dict):
    """Build ``name`` of registry ``kind`` with its default parameters (and ``context``) and
    return the object to check plus a model to exercise (or None)."""
    reg = REGISTRIES[kind]
    ctx = dict(latent_dim=LATENT, data_shape=SHAPE, data_kind="image", value_range=(0.0, 1.0))
    ctx.update(context)
    if kind == "encoder":
        return reg.build({"name": name}, in_shape=SHAPE, out_features=2 * LATENT), None
    if kind == "decoder":
        return reg.build({"name": name}, latent_dim=LATENT, out_shape=SHAPE), None
    if kind == "data energy":
        return reg.build({"name": name}, data_shape=SHAPE), None
    if kind == "model":
        from . import build_model
        spec = {"latent_dim": LATENT, "encoder": _MLP, "decoder": _MLP} if name == "vae" else {}
        if name == "data_ebm":
            spec = {"energy": {"name": "mlp", "hidden": [16]}, "steps": 3}
        elif name == "flow":
            spec = {"transforms": 2, "hidden": [16]}
        model = build_model(reg.parse({"name": name, **spec, **context}, "model"), SHAPE, "image", (0.0, 1.0))
        return model, model
    if kind in ("prior", "reconstruction", "calibrator", "posterior"):
        overrides = {"prior": {"name": name, **({"sampler": {"name": "langevin", "steps": 3}}
                                                 if name == "ebm" else {})}} if kind == "prior" else \
            {"calibrators": [{"name": name, **({"steps": 3} if name in ("ec", "calibrated_posterior") else {})}]} \
            if kind == "calibrator" else {kind: name}
        if kind == "calibrator" and name in ("ec", "wgan"):
            key = "energy" if name == "ec" else "critic"
            overrides["calibrators"][0][key] = {"name": "mlp", "hidden": [16]}
        if kind == "reconstruction" and name in ("energy_score",):
            overrides["reconstruction"] = {"name": name, "samples": 2}
        overrides.update(context)
        model = _vae(**overrides)
        part = {"prior": model.prior, "reconstruction": model.reconstruction,
                "posterior": model.posterior}.get(kind) or (model.calibrators[0] if kind == "calibrator" else None)
        return part, model
    # the EBM prior's parts: energy, latent sampler, training scheme
    field = {"energy": "energy", "latent sampler": "sampler", "prior training scheme": "scheme"}[kind]
    spec = {"name": name}
    if kind == "latent sampler":
        spec.update(_SMALL_CHAIN if name != "mala" else {"steps": 4, "warmup": 2})
    if kind == "prior training scheme" and name == "short_run":
        spec.update(_SMALL_CHAIN)
    prior = _ebm_prior(**{field: spec, **COMPANIONS.get((kind, name), {}), **context})
    model = _vae(prior=prior)
    part = {"energy": model.prior.energy_net, "sampler": model.prior.sampler,
            "scheme": model.prior.scheme}[field]
    return part, model


def check_part(kind: str, name: str, context: dict | None = None, seed: int = 0) -> list[str]:
    """The ways the part ``name`` of registry ``kind`` breaks its contract (empty: none).
    ``context``: extra settings the part needs (merged into the smoke-test model's spec)."""
    if kind not in REGISTRIES:
        return [f"no registry {kind!r} (known: {', '.join(sorted(REGISTRIES))})"]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        try:
            part, model = _build(kind, name, dict(context or {}))
        except Exception as e:          # a part that cannot be built from its defaults fails
            return [f"{kind} {name!r}: cannot be built with its default parameters: {type(e).__name__}: {e}"]
        base = BASES.get(kind)
        problems = []
        if base is not None and not isinstance(part, base):
            problems.append(f"{type(part).__name__} does not subclass {base.__module__}.{base.__qualname__}")
        try:
            if model is not None:
                problems += exercise_model(model)
            else:
                problems += _check_net(kind, part)
            if kind == "energy":
                out = part(torch.randn(5, LATENT))
                if tuple(out.shape) != (5,):
                    problems.append(f"forward(z [5, {LATENT}]) must be [5], got {tuple(out.shape)}")
            if kind == "prior":
                lp = part.log_prob(torch.randn(5, LATENT))
                if tuple(lp.shape) != (5,) or not _finite(lp.detach()):
                    problems.append(f"log_prob(z [5, {LATENT}]) must be finite [5], got {tuple(lp.shape)}")
            if kind == "posterior":
                q = part(torch.randn(BATCH, part.encoder_features(LATENT)))
                if not isinstance(q, DiagGaussian) or tuple(q.mean.shape) != (BATCH, LATENT):
                    problems.append("forward(h) must return a DiagGaussian over the latents")
        except Exception as e:
            problems.append(f"{type(e).__name__}: {e}")
    return [f"{kind} {name!r}: {p}" for p in problems]


def check_registry(kind: str, context_for: Callable[[str], dict] | None = None) -> list[str]:
    """:func:`check_part` for every entry of a registry."""
    problems = []
    for name in REGISTRIES[kind].names():
        problems += check_part(kind, name, context_for(name) if context_for else None)
    return problems


__all__ = ["BASES", "COMPANIONS", "check_part", "check_registry", "exercise_model"]
