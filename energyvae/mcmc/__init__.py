"""Markov chain Monte Carlo machinery shared by every layer above: the kernels every chain of
the library runs on (:mod:`.kernels`: Langevin, MALA, HMC, GRBM Gibbs and Gibbs-Langevin,
device-side step-size adaptation), the chain runner's trace (:mod:`.trace`), annealed importance
sampling for log-partition functions on the same kernels (:mod:`.ais`), chain diagnostics
(split R-hat, ESS, drift; :mod:`.diagnostics`) and the Gaussian-Bernoulli RBM's closed forms
(:mod:`.grbm`).

It imports nothing of energyvae but :mod:`energyvae.errors`, so models and evaluation both
build on it."""
