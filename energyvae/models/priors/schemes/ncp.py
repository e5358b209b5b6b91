"""NCP-VAE: a prior reweighted by a binary classifier (Aneja et al., NeurIPS 2021, "A
Contrastive Learning Approach for Training Variational Autoencoder Priors";
``prior: {name: ebm, energy: {name: tilted}, scheme: {name: ncp}}``).

A classifier D(z) learns to tell aggregate-posterior samples z ~ q(z) = E_x q(z|x) (label 1)
from base-prior samples z ~ p(z) = N(0, I) (label 0) by logistic regression (their Eq. 4); at
its optimum D = q / (q + p), so the reweighting factor r(z) = D / (1 - D) = q(z) / p(z) and

    p_NCP(z) = p(z) r(z) / Z,   Z = E_{p(z)}[r(z)]                       (their Eq. 5)

equals q(z) (Z = 1) when D is optimal. Here the classifier's logit is the tilt of the library's
``tilted`` energy, E(z) = ||z||^2 / 2 + f(z), with ln r(z) = logit D(z) = -f(z): the EBM prior
exp(-E(z)) is then exactly p(z) r(z) up to the constant (2 pi)^(m/2), so its log-density
(``log_prob`` = -E, without ln Z), its samplers, AIS for ln Z and the NLL of
``energyvae evaluate`` apply unchanged. The classifier loss per batch is

    mean softplus(f(z+)) + mean softplus(-f(z-)),   z+ ~ q(z|x) of the batch, z- ~ N(0, I)

(binary cross-entropy with logit -f). The VAE's KL term is always KL(q(z|x) || N(0, I)): NCP's
VAE is trained with the base prior and the classifier only reweights it afterwards (their
two-stage method; their Sec. 3).

Choices the paper leaves open or that differ from it, and what we do:

- **Stages.** ``two_stage_at`` = T: the VAE trains alone for T steps, then its update stops
  (``vae_stop``) and the classifier trains on the frozen encoder's posteriors (the batch is
  encoded under no_grad, one z ~ q(z|x) per example; the paper's setting). ``two_stage_at:
  null`` trains the classifier alongside the VAE from step 0 (a cheaper approximation: the
  classifier chases a moving q and is only fitted to the final one at the end).
- **Hierarchies.** The paper trains one classifier per group of NVAE's hierarchical latents;
  a single-group latent here has one classifier.
- **Sampling** (``sampling``): ``sir`` (sampling-importance-resampling, their Sec. 3.2: per
  sample, ``sir_proposals`` base draws, one kept with probability proportional to r) or
  ``mcmc`` (the prior's sampler, adapted MALA by default, on E; their Langevin variant).
- **ln Z.** ``log_partition(n)``: the classifier's own importance estimate
  ln (1/n sum r(z_i)), z_i ~ N(0, I) (their Sec. 3.3), with its delta-method standard error;
  evaluation uses the library's AIS like every EBM prior (the two agree when r is well
  estimated; tests/models/priors/test_ncp.py).
- **Classifier net.** The ``tilted`` energy's MLP (default widths [200, 200], leaky ReLU) instead
  of their residual nets; Adam lr 1e-3.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ....errors import ConfigError
from ....registry import check
from ...base import BindsModel
from ..ebm import PRIOR_SCHEMES, EnergyOptimParams, LatentEnergy, PriorScheme


@dataclass
class NCPParams(EnergyOptimParams):
    lr: float = 1e-3
    two_stage_at: int | None = None          # VAE steps before the classifier starts (None: jointly)
    sampling: Literal["sir", "mcmc"] = "sir"
    sir_proposals: int = 50                  # base draws per SIR sample
    negatives: int | None = None             # base samples per classifier step (None: the batch size)

    def __post_init__(self):
        super().__post_init__()
        check(self.two_stage_at is None or self.two_stage_at >= 1,
              f"two_stage_at: must be >= 1, got {self.two_stage_at}")
        check(self.sampling in ("sir", "mcmc"), f"sampling: must be 'sir' or 'mcmc', got {self.sampling!r}")
        check(self.sir_proposals >= 1, f"sir_proposals: must be >= 1, got {self.sir_proposals}")
        check(self.negatives is None or self.negatives >= 1, f"negatives: must be >= 1, got {self.negatives}")


def log_ratio(prior, z: torch.Tensor) -> torch.Tensor:
    """ln r(z) = logit D(z) = -f(z) = ||z||^2 / 2 - E(z) (module docstring), per sample."""
    return 0.5 * z.pow(2).sum(-1) - prior.energy(z)


class NCPScheme(BindsModel, PriorScheme):      # bound: encodes batches once the VAE update stops
    kl_normalized = True                       # the VAE's KL is to the normalised base prior

    def __init__(self, p: NCPParams, latent_dim: int):
        super().__init__()
        self.p, self.latent_dim = p, latent_dim

    @property
    def vae_stop(self) -> int | None:
        return self.p.two_stage_at

    def updates(self, prior):
        return [dataclasses.replace(self.energy_update(prior, self.p, name="classifier"),
                                    start=self.p.two_stage_at or 0)]

    def _positives(self, x, state) -> torch.Tensor:
        if "z_posterior" not in state:            # the VAE update did not run this step: encode x
            with torch.no_grad():
                state["z_posterior"] = self.bound_model.encode(x).rsample()
        return state["z_posterior"].detach().reshape(-1, self.latent_dim)

    def update_loss(self, prior, name, x, state):
        if name != "classifier":
            return super().update_loss(prior, name, x, state)
        z_pos = self._positives(x, state)
        z_neg = torch.randn(self.p.negatives or z_pos.shape[0], self.latent_dim, device=z_pos.device)
        l_pos, l_neg = log_ratio(prior, z_pos), log_ratio(prior, z_neg)      # logits of "posterior"
        loss = F.softplus(-l_pos).mean() + F.softplus(l_neg).mean()
        acc = 0.5 * ((l_pos > 0).float().mean() + (l_neg < 0).float().mean())
        return loss, {"bce": loss.detach(), "accuracy": acc.detach()}

    def kl(self, prior, q):
        """Always KL(q || N(0, I)): the VAE is trained with the base prior (module docstring)."""
        return q.kl_standard_normal()

    @torch.no_grad()
    def sample(self, prior, n):
        if self.p.sampling == "mcmc":
            return None                           # the prior's sampler on E
        k = self.p.sir_proposals
        dev = prior._device()
        z = torch.randn(n, k, self.latent_dim, device=dev)
        pick = torch.distributions.Categorical(logits=log_ratio(prior, z)).sample()      # [n]
        return z[torch.arange(n, device=dev), pick]

    @torch.no_grad()
    def log_partition(self, prior, n: int = 100_000, chunk: int = 10_000) -> tuple[float, float]:
        """(ln Z, its standard error): ln (1/n sum_i r(z_i)), z_i ~ N(0, I), the classifier's
        own importance estimate of Z = E_p[r] for p_NCP = p r / Z; add (m/2) ln(2 pi) for the Z
        of exp(-E) that AIS estimates."""
        dev = prior._device()
        logs = torch.cat([log_ratio(prior, torch.randn(min(chunk, n - i), self.latent_dim, device=dev))
                          for i in range(0, n, chunk)]).double()
        log_z = torch.logsumexp(logs, 0) - math.log(n)
        w = torch.exp(logs - log_z)                   # r_i / mean r
        stderr = float(w.std() / math.sqrt(n))        # delta method: sd(r) / (sqrt(n) mean r)
        return float(log_z), stderr


@PRIOR_SCHEMES.register("ncp", NCPParams)
def _ncp(p: NCPParams, *, latent_dim: int, energy=None, **_):
    if not (isinstance(energy, LatentEnergy) and energy.tilted):
        raise ConfigError("model.prior.scheme: ncp needs the tilted energy (energy: {name: tilted}): its "
                          "tilt is the classifier's logit, so exp(-E) = N(0, I) r(z) (schemes/ncp.py)")
    return NCPScheme(p, latent_dim)
