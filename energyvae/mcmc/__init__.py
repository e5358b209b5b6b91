"""Markov chain Monte Carlo machinery shared by every layer above: annealed importance sampling
for log-partition functions (:mod:`.ais`), chain diagnostics (split R-hat, ESS, drift;
:mod:`.diagnostics`) and the Gaussian-Bernoulli RBM's closed forms (:mod:`.grbm`).

It imports nothing of energyvae but :mod:`energyvae.errors`, so models and evaluation both
build on it."""
