"""Models and their parts. ``build_model(cfg, data)`` builds the configured model."""
from ..registry import Spec
from .base import CALIBRATORS, MODELS, POSTERIORS, PRIORS, RECONSTRUCTIONS, ModelContext, UpdateSpec  # noqa: F401
from . import energy_calibration, posterior, priors, reconstruction, regularizers, vae  # noqa: F401,E402  (register the built-ins)


def build_model(model_cfg, data_shape, data_kind="image", value_range=None, load_run=None):
    """Build a model from a config's ``(name, params)`` pair. ``load_run(run_dir, checkpoint,
    ema=...) -> (cfg, data, model)`` is handed to models that start from another trained run
    (``data_ebm``'s ``init_run``); :func:`energyvae.runs.prepare` passes
    :func:`energyvae.runs.load_run`."""
    name, params = model_cfg
    ctx = ModelContext(tuple(data_shape), data_kind, value_range, load_run=load_run)
    return MODELS.build(Spec(name, params), "model", ctx)
from . import data_ebm  # noqa: F401,E402  (model "data_ebm": the paper-001 Table 10 EBM baselines)
from . import flow_model  # noqa: F401,E402  (model "flow": EC-Flow, paper 001 Sec. 4.2)
from . import wgan_critic  # noqa: F401,E402  (calibrator "wgan": VAE + WGAN-GP, paper 001 Table 10)
from . import divergence_triangle  # noqa: F401,E402  (calibrator "triangle": DT-VAE, Han et al. 2020)
