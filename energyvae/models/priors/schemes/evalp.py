"""EVaLP: an EBM prior with a sampler network instead of MCMC (paper 003, docs/methods.md §4;
``scheme: {name: evalp}``).

The partition function of p(z) = exp(-E(z)) / Z is handled by the abstract's variational bound

    ln Z >= E_{z~S}[-E(z)] + H(S),   equality iff S = p,

with S a sampler network (noise -> z, sampler_nets.py). Training alternates two updates after
the VAE's (which keeps the default ALB term ln q(z|x) + E(z), no ln Z):

- ``prior`` (order 1, energy params): mean E(z+) - mean E(sg(z-)) [+ gradient_penalty * mean
  ||grad_z E||^2 at ``penalty_at``], z+ ~ q(z|x) the step's posterior samples
  (``state["z_posterior"]``), z- ~ S: contrastive divergence with S's samples as negatives;
- ``sampler`` (order 2, S's params): mean E(S(e)) - w H(S) (w = ``entropy_weight``): S
  maximises the bound (for w = 1 this is KL(S || p) - ln Z). Its backward also reaches the
  energy's parameters; those gradients are never applied (each optimizer steps only its own
  parameters and the ``prior`` optimizer zeroes the energy's gradients before its backward).

Generation (``model.sample``) is S then the decoder: no MCMC and no gradient of E, unless
``refine_steps`` > 0 adds that many Langevin steps (samplers.py convention,
z <- z - h grad E + sqrt(2h) eps, h = ``refine_step_size``) started at S's samples.

Two-stage mode (``two_stage_at`` = T, as the authors' code: autoencoder first, then the prior on
frozen posteriors): for steps t < T the VAE trains alone with KL(q || N(0, I)); from T on the VAE
update stops (``vae_stop``), the prior and sampler updates start, and the prior update encodes
the batch itself (no_grad, one z ~ q(z|x) per example) through the model bound by ``bind``. The
switch of the KL term reads the persistent buffer ``vae_steps`` (VAE updates done, saved in
checkpoints and copied to the EMA model), not the trainer's step, so resumed runs and loaded
models use the right term; validation losses before and after T are thus different quantities.

Defaults (docs/methods.md, "What the authors' public code does"): Adam betas (0.5, 0.999), energy
lr 5e-5 and sampler lr 5e-4 (their "5e-4 / 5e-5" read as sampler / energy: S must keep up with
the energy), gradient penalty 0 here (theirs: 10; we put it at the positives, as MEG, Kumar et
al. 2019, whose energy / sampler losses EVaLP's match), S a 4-layer flow (theirs: RealNVP with
4 blocks; here the repository's IAF). Their sampler loss is E(S(e)) + w (ln S(z) - ln N(z; 0, I)):
for w = 1 that is our loss for the ``tilted`` energy E(z) + ||z||^2 / 2 (same energy gradient),
so ``energy: {name: tilted}`` reproduces it.

Measured failure (benchmarks/results/ebm_prior_fashion-mnist.md, binarised Fashion-MNIST, 50
epochs, joint training, gradient penalty 0): with the flow S the energy put mass where neither
the posteriors nor S go: AIS ln Z 220 against S's bound 186 and the aggregate posterior's 185,
NLL 33 nats worse than N(0, I), and MCMC on the energy finds that mass (MALA samples FID 188,
R-hat 1.85 after 2000 steps) while S's samples look fine (FID 11.9). S minimises KL(S || p),
which is mode-seeking, so CD with S's negatives never pushes up the energy of modes S misses.
The implicit S did not show it (NLL -0.10 paired, within N(0, I)'s seed-to-seed spread).
The authors' gradient penalty (10) may be what prevents it; not yet measured here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import torch

from ....errors import ConfigError
from ....registry import check
from ...base import BindsModel, UpdateSpec
from ..ebm import PRIOR_SCHEMES, EnergyOptimParams, PriorScheme
from ..sampler_nets import FlowSampler, ImplicitSampler, SamplerNet
from ..samplers import Langevin


@dataclass
class EVaLPParams(EnergyOptimParams):
    """``lr``/``betas``/``every``: the energy's Adam (``betas`` also the sampler's; ``every`` also
    paces the sampler update). ``sampler_net``: ``flow`` (IAF, exact entropy) or ``implicit``
    (MLP e -> z, e ~ N(0, I_noise_dim), LeakyReLU, k-NN entropy with k = ``knn``);
    ``hidden``: the flow's conditioner widths or the implicit MLP's; ``transforms``: flow layers;
    ``noise_dim``: None = the latent dimension (must be >= it). ``negatives``: S samples per
    update (None = the step's number of posterior samples)."""
    lr: float = 5e-5
    betas: tuple[float, float] = (0.5, 0.999)
    sampler_net: Literal["flow", "implicit"] = "flow"
    sampler_lr: float = 5e-4
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    transforms: int = 4
    noise_dim: int | None = None
    knn: int = 3
    entropy_weight: float = 1.0
    gradient_penalty: float = 0.0
    penalty_at: Literal["positives", "negatives", "both"] = "positives"
    negatives: int | None = None
    refine_steps: int = 0
    refine_step_size: float = 0.01
    two_stage_at: int | None = None

    def __post_init__(self):
        super().__post_init__()
        check(self.sampler_lr > 0, f"sampler_lr: must be > 0, got {self.sampler_lr}")
        check(all(h >= 1 for h in self.hidden), f"hidden: every width must be >= 1, got {self.hidden}")
        check(1 <= self.transforms <= 1024, f"transforms: must be in [1, 1024], got {self.transforms}")
        check(self.noise_dim is None or self.noise_dim >= 1, f"noise_dim: must be >= 1, got {self.noise_dim}")
        check(self.knn >= 1, f"knn: must be >= 1, got {self.knn}")
        check(self.entropy_weight > 0, f"entropy_weight: must be > 0, got {self.entropy_weight}")
        check(self.gradient_penalty >= 0, f"gradient_penalty: must be >= 0, got {self.gradient_penalty}")
        least = self.knn + 1 if self.sampler_net == "implicit" else 1      # k-NN needs n > k
        check(self.negatives is None or self.negatives >= least,
              f"negatives: must be >= {least}, got {self.negatives}")
        check(self.refine_steps >= 0, f"refine_steps: must be >= 0, got {self.refine_steps}")
        check(self.refine_step_size > 0, f"refine_step_size: must be > 0, got {self.refine_step_size}")
        check(self.two_stage_at is None or self.two_stage_at >= 1,
              f"two_stage_at: must be >= 1, got {self.two_stage_at}")


class EVaLPScheme(BindsModel, PriorScheme):   # bound: encodes batches once the VAE update stops
    def __init__(self, p: EVaLPParams, net: SamplerNet, latent_dim: int):
        super().__init__()
        self.p, self.net = p, net
        self.refiner = Langevin(latent_dim, p.refine_steps, p.refine_step_size) if p.refine_steps else None
        self.register_buffer("vae_steps", torch.zeros((), dtype=torch.long))   # VAE updates done

    # -- the updates -------------------------------------------------------------------------
    @property
    def vae_stop(self) -> int | None:
        return self.p.two_stage_at

    def updates(self, prior):
        start = self.p.two_stage_at or 0
        return [dataclasses.replace(self.energy_update(prior, self.p), start=start),
                UpdateSpec("sampler", list(self.net.parameters()), lr=self.p.sampler_lr,
                           betas=self.p.betas, order=2, every=self.p.every, start=start)]

    def _positives(self, prior, x, state) -> torch.Tensor:
        if "z_posterior" not in state:            # the VAE update did not run this step: encode x
            model = self.bound_model
            if model is None:
                raise RuntimeError("EVaLP needs the posterior samples of the step or a bound model")
            with torch.no_grad():
                state["z_posterior"] = model.encode(x).rsample()
        return state["z_posterior"].detach().reshape(-1, prior.latent_dim)

    def update_loss(self, prior, name, x, state):
        if name not in ("prior", "sampler"):
            return super().update_loss(prior, name, x, state)
        z_pos = self._positives(prior, x, state)
        n = self.p.negatives or z_pos.shape[0]
        if name == "sampler":
            z, h = self.net.rsample_and_entropy(n)
            e = prior.energy(z).mean()
            return e - self.p.entropy_weight * h, {"energy": e.detach(), "entropy": h.detach(),
                                                  "log_z_bound": (h - e).detach()}
        gp, at = self.p.gradient_penalty, self.p.penalty_at
        z_pos = z_pos.requires_grad_(gp > 0 and at in ("positives", "both"))
        z_neg = self.net.sample(n).requires_grad_(gp > 0 and at in ("negatives", "both"))
        e_pos, e_neg = prior.energy(z_pos), prior.energy(z_neg)
        loss = e_pos.mean() - e_neg.mean()
        logs = {"cd_loss": loss.detach(), "energy_pos": e_pos.mean().detach(),
                "energy_neg": e_neg.mean().detach()}
        if gp:
            zs, es = zip(*[(z, e) for z, e in ((z_pos, e_pos), (z_neg, e_neg)) if z.requires_grad])
            grads = torch.autograd.grad(sum(e.sum() for e in es), zs, create_graph=True)
            penalty = torch.cat([g.pow(2).sum(-1) for g in grads]).mean()
            loss = loss + gp * penalty
            logs["grad_penalty"] = penalty.detach()
        return loss, logs

    def after_update(self, prior, name, state):
        if name == "vae":
            self.vae_steps += 1

    def kl(self, prior, q):
        """KL(q || N(0, I)) during the first stage of the two-stage mode, else the ALB term."""
        if self.p.two_stage_at is not None and int(self.vae_steps) < self.p.two_stage_at:
            return q.kl_standard_normal()
        return None

    def sample(self, prior, n):
        z = self.net.sample(n)
        if self.refiner is not None:
            z = self.refiner.sample(prior.energy_net, n, init=z)[0]
        return z.detach()


@PRIOR_SCHEMES.register("evalp", EVaLPParams)
def _evalp(p: EVaLPParams, *, latent_dim: int, **_):
    if p.sampler_net == "flow":
        return EVaLPScheme(p, FlowSampler(latent_dim, p.transforms, p.hidden), latent_dim)
    noise_dim = p.noise_dim or latent_dim
    if noise_dim < latent_dim:
        raise ConfigError(f"model.prior.scheme.noise_dim: must be >= the latent dimension "
                          f"{latent_dim} (a lower-dimensional S has no entropy), got {noise_dim}")
    return EVaLPScheme(p, ImplicitSampler(latent_dim, noise_dim, p.hidden, "leaky_relu", p.knn), latent_dim)
