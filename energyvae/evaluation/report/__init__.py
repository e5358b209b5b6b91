"""An offline HTML page comparing run folders side by side, and a Markdown metrics table.

:func:`build_report` reads, for each run folder (all optional; a missing or unreadable file is
shown as "—" and noted, never an error):

- ``config.yaml``: a few settings (data set, model and part names, latent size, steps, ...);
- ``metrics.json``: the end-of-training metrics (``test``, ``iw``, ``train``, ...);
- ``evaluation/metrics.json``: the metrics of ``energyvae evaluate`` (its ``"metrics"``
  entry: FID, KID, IS, precision / recall, NLL, bits/dim, timings; the other entries, such as
  the feature network, the reference split and the likelihood settings, become notes; a flat
  dict of metrics and info keys is read too);
- ``evaluation/per_image_nll.json``: the per-image test NLLs of ``energyvae evaluate``'s
  ``nll`` metric; runs evaluated on the same examples (split, number, seed, data settings) are
  compared with a baseline run in a "Paired NLL differences" section (see
  :func:`paired_nll_comparisons`); runs that cannot be paired get one line saying why;
- every ``*.png`` in the folder and in ``evaluation/``.

and writes one self-contained ``index.html``: inline CSS, no script, no external resource
(a Content-Security-Policy forbids any), images embedded as base64 ``data:image/png`` URIs.
Layout: a settings table and a metrics table (runs as columns, best value per row
highlighted where the direction is known), the paired NLL differences (only where runs have
per-image NLLs), notes (feature network, reference split, caveats), then one row per figure
name with each run's version side by side.

Metric names are flattened with dots: ``test.loss``, ``iw.nll``, ``train.seconds`` from
``metrics.json``; ``evaluation/metrics.json`` keys are kept as they are (``fid_gen``,
``kid.mean``, ...), or prefixed ``eval.`` if a name would clash.

Parts: :mod:`.summary` reads a run folder, :mod:`.tables` flattens, orders and formats the
metrics (and writes the Markdown table), :mod:`.pairing` pairs per-image NLLs, :mod:`.page`
writes the HTML page.
"""
from .page import build_report
from .pairing import paired_nll_comparisons
from .summary import PER_IMAGE_NLL, RunSummary, load_run
from .tables import MISSING, flatten_metrics, format_value, metric_direction, metrics_markdown_table

__all__ = [
    "RunSummary",
    "build_report",
    "flatten_metrics",
    "format_value",
    "load_run",
    "metric_direction",
    "metrics_markdown_table",
    "paired_nll_comparisons",
]
