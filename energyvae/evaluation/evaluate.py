"""Deprecated alias: ``evaluate_run`` moved to :mod:`energyvae.commands.evaluate`, the model
measurements (``generate``, ``prior_sampler_diagnostics``, ``time_train_steps``, ...) to
:mod:`energyvae.evaluation.model_metrics`."""


def __getattr__(name: str):
    """The old names, with a DeprecationWarning (removed in 0.2)."""
    import importlib

    from .._deprecation import warn_moved
    for where in ("energyvae.evaluation.model_metrics", "energyvae.commands.evaluate"):
        module = importlib.import_module(where)
        if hasattr(module, name):
            warn_moved(f"energyvae.evaluation.evaluate.{name}", f"{where}.{name}")
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
