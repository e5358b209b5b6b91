"""The benchmark scripts of energyvae, a package: run each from the repository root as

    python -m benchmarks.NAME [ARGS]          # e.g. python -m benchmarks.baseline_family --help

Each script trains its runs through the one driver in :mod:`benchmarks.common` (train or reuse
with the stale-cache check, evaluate, table) and writes its table to ``benchmarks/results/``.
``python benchmarks/NAME.py [ARGS]`` (the form the older result files record) still works: the
script then re-executes itself as the module (``benchmarks/_as_module.py``).
"""
