"""Latent priors p(z) = exp(-E(z)) / Z.

Interface of every prior (subclass :class:`Prior`, register with ``PRIORS.register``):

- ``normalized``: True when ``log_prob`` is a normalised log-density, False when it is
  only -E(z) (ln Z unknown; likelihoods then need AIS, see the evaluation module);
- ``log_prob(z)``: [..., m] -> [...];  ``energy(z) = -log_prob(z)``;
- ``sample(n)``: n samples [n, m] (MCMC priors run their sampler here);
- ``kl(q)``: KL(q(z|x) || p) per example in closed form, or None (the model then uses the
  one-sample Monte Carlo estimate ln q(z|x) - ln p(z));
- ``trained_by_elbo``: whether the VAE update also steps this prior's parameters (True for
  VampPrior or a flow; False for EBM priors that bring their own update);
- ``updates()`` / ``update_loss(name, x, state)``: the prior's own optimisation updates, which
  see the posterior samples of the step in ``state["z_posterior"]``.
"""
from .base import LOG_2PI, Prior  # noqa: F401
from .normal import StandardNormal  # noqa: F401
from . import ebm, energies, flow, samplers, schemes, vamp  # noqa: F401,E402  (register the built-ins)
