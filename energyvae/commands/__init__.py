"""The commands of the ``energyvae`` CLI as Python functions, the top of the layer order
(docs/layout.md): :mod:`.train` (``train_run``), :mod:`.sample` (sample and reconstruction
grids), :mod:`.evaluate` (``evaluate_run``, a table of metric objects), :mod:`.restore`
(``restore_files``). ``energyvae report`` is :func:`energyvae.evaluation.report.build_report`.
:mod:`energyvae.cli` parses the arguments and calls these."""
