"""Training schemes of EBM priors (``model.prior.scheme.name``); see ``priors/ebm.py``."""
from . import adversarial, evalp, iw, ml, ncp, short_run, ssm  # noqa: F401  (register the built-ins)
