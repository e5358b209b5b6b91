"""The composed VAE: encoder, posterior, decoder, prior, reconstruction objective, calibrators.

Per data point x (nats):  loss = recon(x) + kl_weight * KL(q(z|x) || p(z)) + calibrator terms,
where for likelihood objectives recon = -E_q ln p(x|z) and ELBO = -(recon + KL) (Kingma &
Welling 2014, Eq. 3); kl_weight != 1 is the beta-VAE. The KL is analytic when the prior
offers it, else the one-sample estimate ln q(z|x) - ln p(z) (for an unnormalised prior this
omits ln Z: the paper-002 "ALB").
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ConfigError
from ..nets import DECODERS, ENCODERS
from ..registry import check, keep_parsed, parsed
from .base import (CALIBRATORS, MODELS, POSTERIORS, PRIORS, RECONSTRUCTIONS, Calibrator, HasCalibrators, Model,
                   ModelContext, StepState, UpdateSpec)
from .posterior import Posterior
from .priors.base import LOG_2PI, Prior
from .reconstruction.base import Reconstruction


_DEFAULT_PARTS = {"encoder": "mlp", "decoder": "mlp", "posterior": "gaussian", "prior": "normal",
                  "reconstruction": "bernoulli"}


@dataclass
class VAEParams:
    latent_dim: int = 16
    # each part: a spec {name: ..., **params}, a bare name ("energy_score"), or (from Python) an nn.Module
    encoder: dict | str = field(default_factory=dict)
    decoder: dict | str = field(default_factory=dict)
    posterior: dict | str = field(default_factory=dict)
    prior: dict | str = field(default_factory=dict)
    reconstruction: dict | str = field(default_factory=dict)
    kl_weight: float = 1.0
    calibrators: list = field(default_factory=list)

    def __post_init__(self):
        check(self.latent_dim > 0, f"latent_dim must be > 0, got {self.latent_dim}")
        check(self.kl_weight >= 0, f"kl_weight must be >= 0, got {self.kl_weight}")
        # a spec without a name keeps the default part (so `model.encoder.hidden=[64]` works)
        for key in ("encoder", "decoder", "posterior", "prior", "reconstruction"):
            spec = getattr(self, key)
            if isinstance(spec, str):
                setattr(self, key, spec := {"name": spec})
            if isinstance(spec, dict) and "name" not in spec:
                setattr(self, key, {"name": _DEFAULT_PARTS[key], **spec})
        # validate every nested component now, so a bad key fails before any work starts; a
        # part given as an nn.Module (Python composition) is used as it is
        for key, reg in (("encoder", ENCODERS), ("decoder", DECODERS), ("posterior", POSTERIORS),
                         ("prior", PRIORS), ("reconstruction", RECONSTRUCTIONS)):
            if not isinstance(getattr(self, key), nn.Module):
                keep_parsed(self, key, reg, f"model.{key}")
        for i, c in enumerate(self.calibrators):
            if not isinstance(c, nn.Module):
                keep_parsed(self, f"calibrators.{i}", CALIBRATORS, f"model.calibrators.{i}")


class ModelOutput(dict):
    """What ``model(x)`` returns: a dict whose keys are also attributes (like pythae's
    ``ModelOutput``): ``loss`` (the scalar training loss of the main update, calibrator terms
    included), ``recon`` and ``kl`` (batch means), ``z`` (the posterior sample),
    ``posterior`` (q(z|x)) and every logged part (``fit``, ``spread``, ``lambda``, ...)."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


#: the contract each part given as a module or built from a spec must keep
_PART_BASES = {"prior": Prior, "reconstruction": Reconstruction, "posterior": Posterior, "calibrators": Calibrator}


class VAE(HasCalibrators, Model):
    has_encoder = True
    def __init__(self, p: VAEParams, ctx: ModelContext):
        super().__init__()
        m = p.latent_dim
        self.latent_dim, self.kl_weight, self.data_shape = m, p.kl_weight, tuple(ctx.data_shape)
        common = dict(latent_dim=m, data_shape=self.data_shape, data_kind=ctx.data_kind,
                      value_range=ctx.value_range, **ctx.extra)
        def part(key, registry, **kw):          # a module as it is, else the spec validated once
            value = getattr(p, key.split(".")[0])
            value = value[int(key.split(".")[1])] if "." in key else value
            built = value if isinstance(value, nn.Module) else registry.build(parsed(p, key), f"model.{key}", **kw)
            base = _PART_BASES.get(key.split(".")[0])
            if base is not None and not isinstance(built, base):
                raise ConfigError(f"model.{key}: {type(built).__name__} does not subclass "
                                  f"{base.__module__}.{base.__qualname__} (its contract)")
            return built
        self.posterior = part("posterior", POSTERIORS, **common)
        self.reconstruction = part("reconstruction", RECONSTRUCTIONS, **common)
        self.encoder = part("encoder", ENCODERS, in_shape=self.data_shape,
                            out_features=self.posterior.encoder_features(m))
        self.decoder = part("decoder", DECODERS, latent_dim=m,
                            out_shape=self.reconstruction.decoder_shape(self.data_shape))
        self.prior = part("prior", PRIORS, **common)
        self.calibrators = nn.ModuleList(
            part(f"calibrators.{i}", CALIBRATORS, **common) for i in range(len(p.calibrators)))
        self.bind_parts()

    @classmethod
    def from_parts(cls, data_shape, latent_dim: int, *, encoder="mlp", decoder="mlp", posterior="gaussian",
                   prior="normal", reconstruction="bernoulli", calibrators=(), kl_weight: float = 1.0,
                   data_kind: str = "image", value_range=None) -> "VAE":
        """Compose a VAE in Python: each part is a registered name (``"energy_score"``), a config
        spec (``{"name": "ebm", "energy": {"name": "grbm"}}``) or a built ``nn.Module``.

        A module encoder maps ``[B, *data_shape]`` to ``posterior.encoder_features(latent_dim)``
        features (``2 * latent_dim`` for the Gaussian posterior); a module decoder maps
        ``[B, latent_dim]`` to ``reconstruction.decoder_shape(data_shape)``; a prior or
        reconstruction module follows :class:`~energyvae.models.priors.Prior` /
        :class:`~energyvae.models.reconstruction.Reconstruction`. ``value_range``: the data's
        range, (0, 1) for images in [0, 1] (what energy-score objectives clamp to)."""
        spec = (lambda v: {"name": v} if isinstance(v, str) else v)
        if value_range is None and data_kind == "image":
            value_range = (0.0, 1.0)
        params = VAEParams(latent_dim=latent_dim, encoder=spec(encoder), decoder=spec(decoder),
                           posterior=spec(posterior), prior=spec(prior), reconstruction=spec(reconstruction),
                           kl_weight=kl_weight, calibrators=[spec(c) for c in calibrators])
        return cls(params, ModelContext(tuple(data_shape), data_kind, value_range))

    def component_parts(self):
        return [self.prior, *self.calibrators]

    @property
    def metric_units(self) -> str:
        """The unit of the loss parts this model reports (printed and saved with every run):
        nats for likelihood objectives, the objective's own unit for scores (energy score,
        L2, SSIM ...), and a note where an unnormalised prior's kl / elbo omit ln Z."""
        rec = self.reconstruction
        if rec.likelihood:
            units = "nats per example"
        else:
            units = f"per example; recon is the {type(rec).__name__} objective (not nats), kl in nats"
        if not self.prior.kl_normalized:
            units += "; kl and elbo exclude ln Z of the unnormalised prior"
        return units

    # -- the parts -------------------------------------------------------------------------
    def encode(self, x):
        return self.posterior(self.encoder(x))

    def decode(self, z):
        """Raw decoder output for latents of shape [..., m] (leading dims are batched)."""
        lead = z.shape[:-1]
        out = self.decoder(z.reshape(-1, self.latent_dim))
        return out.reshape(*lead, *out.shape[1:])

    def kl(self, q, z):
        """KL(q || p) per example: analytic if the prior has it; else, for a prior that offers
        ``expected_energy(q, z)`` (an estimate of E_q[-ln p] with its Gaussian parts in closed
        form, EBM priors), -H(q) + that; else the control-variate form

            KL(q || N(0, I)) (closed form) + ln N(z; 0, I) - ln p(z)   at the sample z,

        which has the expectation of the one-sample ln q(z) - ln p(z) (their difference,
        ln q(z) - ln N(z) - KL(q || N), has mean zero under q) and a far lower variance for a
        prior near N(0, I) (VampPrior, a flow prior): tests/models/test_kl_control_variate.py.
        A prior with ``kl_control_variate`` False (an EBM prior with ``kl_term: one_sample``,
        Alg. 1 as printed) keeps the one-sample form. Leading sample dimensions of z are averaged."""
        kl = self.prior.kl(q)
        if kl is not None:
            return kl
        if q.deterministic:
            return -self.prior.log_prob(z)
        cross = self.prior.expected_energy(q, z)
        if cross is not None:
            return cross - q.entropy()
        if not self.prior.kl_control_variate:
            return q.log_prob(z) - self.prior.log_prob(z)
        cv = -0.5 * (z.pow(2) + LOG_2PI).sum(-1) - self.prior.log_prob(z)      # ln N(z) - ln p(z)
        if cv.dim() > 1:
            cv = cv.reshape(-1, cv.shape[-1]).mean(0)
        return q.kl_standard_normal() + cv

    def terms(self, x):
        """Per-example reconstruction and KL terms, and the posterior sample used."""
        q = self.encode(x)
        recon, z, logs = self.reconstruction.loss(x, q, self.decode)
        return recon, self.kl(q, z), z, q, logs

    # -- generation ------------------------------------------------------------------------
    def generate(self, n: int, z: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable data-space samples for calibrators: the decoder's mean at z ~ prior
        (or the given z), z detached, so gradients reach the decoder only. Any generator model
        (EC-Flow's flow) offers the same method."""
        if z is None:
            with torch.no_grad():
                z = self.prior.sample(n)
        return self.reconstruction.mean(self.decode(z.detach()))

    @torch.no_grad()
    def sample(self, n: int, mcmc: int = 0) -> torch.Tensor:
        """Data-space samples: z ~ prior (its own sampler), then the decoder's mean; ``mcmc`` > 0
        refines them by that many Langevin steps of each calibrator with a ``refine`` (EC-VAE)."""
        x = self.generate(n)
        return self.refine_samples(x, mcmc) if mcmc else x

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder mean at the posterior mean."""
        return self.reconstruction.mean(self.decode(self.encode(x).mean))

    # -- the trainer contract (see models/base.py; plumbing in HasCalibrators) ---------------
    def updates(self) -> list[UpdateSpec]:
        return self.collect_updates(stop=self.prior.vae_stop)   # two-stage priors

    def forward(self, update, x: torch.Tensor | None = None, state: dict | None = None):
        """``model(x)``: the loss of a batch and its parts, a :class:`ModelOutput`.
        ``model(update, x, state)`` (the trainer's call): (loss, logs) of one named update."""
        if isinstance(update, torch.Tensor):
            state = StepState()
            loss, logs = self.forward(self.MAIN_UPDATE, update, state)
            return ModelOutput(loss=loss, z=state["z"], posterior=state["posterior"],
                               **{k: v for k, v in logs.items() if k != "loss"})
        if update != "vae":
            return self.part_update_loss(update, x, state)
        recon, kl, z, q, logs = self.terms(x)
        loss = (recon + self.kl_weight * kl).mean()
        state["z"], state["z_posterior"], state["posterior"] = z, z.detach(), q
        logs = {**logs, "loss": loss.detach(), "recon": recon.mean().detach(), "kl": kl.mean().detach()}
        return self.add_calibrator_terms(loss, logs, x, state)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-example validation metrics in nats: loss, recon, kl and (likelihoods) elbo."""
        recon, kl, _, _, _ = self.terms(x)
        out = {"loss": recon + self.kl_weight * kl, "recon": recon, "kl": kl}
        if self.reconstruction.likelihood:
            out["elbo"] = -(recon + kl)
        return out

    @torch.no_grad()
    def iw_log_likelihood(self, x: torch.Tensor, k: int, chunk: int = 50, *, prior=None) -> torch.Tensor:
        """Importance-weighted bound (Burda et al. 2016, Eq. 8) on ln p(x), per example:
        ln 1/K sum_k p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q(z|x). Tends to ln p(x) as K grows.
        For an unnormalised prior this is the bound of the unnormalised joint (subtract ln Z).
        ``prior``: what scores z, any object with ``log_prob(z)`` ([..., m] -> [...]), e.g. another
        :class:`~energyvae.models.priors.Prior`, to compare priors on the same encoder, decoder
        and draws; default ``self.prior``. The draws (``chunk`` latents per decode) do not depend
        on it, so two calls after the same ``torch.manual_seed`` are paired."""
        prior = self.prior if prior is None else prior
        if not self.reconstruction.likelihood:
            raise ValueError("the importance-weighted bound needs a likelihood reconstruction objective")
        q = self.encode(x)
        if q.deterministic:
            raise ValueError("the importance-weighted bound needs a stochastic posterior")
        logw = []
        for start in range(0, k, chunk):
            n = min(chunk, k - start)
            z = q.rsample(n)                                  # [n, B, m]
            out = self.decode(z)                              # [n, B, ...]
            xs = x.unsqueeze(0).expand(n, *x.shape)
            ll = self.reconstruction.log_prob(xs.reshape(-1, *x.shape[1:]),
                                              out.reshape(-1, *out.shape[2:])).reshape(n, -1)
            logw.append(ll + prior.log_prob(z) - q.log_prob(z))
        logw = torch.cat(logw, 0)
        return torch.logsumexp(logw, 0) - math.log(k)


@MODELS.register("vae", VAEParams)
def _vae(p: VAEParams, ctx: ModelContext):
    return VAE(p, ctx)
