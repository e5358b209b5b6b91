"""The self-contained offline HTML page of :func:`build_report` (inline CSS, embedded PNGs, no
script, a Content-Security-Policy that blocks every fetch)."""
from __future__ import annotations

import base64
import datetime as _dt
import html
import re
from pathlib import Path
from typing import Iterable
from ...atomic import atomic_write_text
from .pairing import paired_nll_comparisons
from .summary import RunSummary, load_run
from .tables import MISSING, _best, _plain, _rows, format_value, metric_direction


def _unique_names(paths: list[Path], names: list[str] | None) -> list[str]:
    if names is not None:
        if len(names) != len(paths):
            raise ValueError(f"{len(names)} names for {len(paths)} runs")
        out = [str(n) for n in names]
    else:
        out = [p.name or str(p) for p in paths]
    seen: dict[str, int] = {}
    for i, n in enumerate(out):
        if out.count(n) > 1:
            parent = paths[i].parent.name
            cand = f"{parent}/{n}" if parent else n
            seen[cand] = seen.get(cand, 0) + 1
            out[i] = cand if seen[cand] == 1 else f"{cand} ({seen[cand]})"
    return out


_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 1.5rem; color: #1d1d1f; background: #fff; line-height: 1.35; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2rem;
     border-bottom: 1px solid #ddd; padding-bottom: .2rem; } h3 { font-size: 1rem; }
.meta { color: #666; font-size: .85rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .88rem; }
th, td { border: 1px solid #ddd; padding: .25rem .55rem; vertical-align: top; }
thead th { background: #f3f4f6; position: sticky; top: 0; }
th.row { text-align: left; font-weight: normal; white-space: nowrap; background: #fafafa;
         font-family: ui-monospace, Menlo, Consolas, monospace; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.best { background: #dcfce7; font-weight: 700; }
td.missing { color: #aaa; text-align: center; }
tr.section th { background: #eef2ff; text-align: left; font-weight: 600; }
.dir { color: #888; font-size: .75rem; margin-left: .3rem; }
.warn { background: #fff7ed; border: 1px solid #fdba74; padding: .4rem .7rem; margin: .5rem 0; }
.problems { color: #b45309; font-size: .8rem; }
.figrow { display: grid; gap: 1rem; align-items: start; }
figure { margin: 0; border: 1px solid #e5e7eb; padding: .4rem; background: #fff; min-width: 0; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figure img.grid { image-rendering: pixelated; }
figcaption { font-size: .8rem; color: #444; margin-top: .3rem; text-align: center;
             overflow-wrap: anywhere; }
figure.missing { color: #aaa; text-align: center; padding: 2rem .4rem; }
"""


_FIGURE_ORDER = ["samples", "reconstructions", "loss_curves"]


def _e(s) -> str:
    return html.escape(str(s), quote=True)


def _png_data_uri(path: Path, max_bytes: int) -> tuple[str | None, str]:
    """(data URI or None, info text)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        return None, f"unreadable ({type(e).__name__})"
    if not raw.startswith(b"\x89PNG\r\n\x1a\n"):
        return None, "not a PNG file"
    if len(raw) > max_bytes:
        return None, f"too large to embed ({len(raw) / 1e6:.1f} MB)"
    info = f"{len(raw) / 1024:.0f} KiB"
    if len(raw) >= 26 and raw[12:16] == b"IHDR":
        w, h = int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
        info = f"{w}×{h} px, {info}"
    return "data:image/png;base64," + base64.b64encode(raw).decode("ascii"), info


def _png_meta(path: Path) -> tuple[int | None, bool]:
    """(width, is_pixel_grid): grids from save_image_grid are gray / RGB without alpha and are
    drawn pixelated; matplotlib figures (RGBA) are drawn smoothly."""
    try:
        with open(path, "rb") as f:
            head = f.read(26)
    except OSError:
        return None, False
    if len(head) < 26 or head[12:16] != b"IHDR":
        return None, False
    return int.from_bytes(head[16:20], "big"), head[25] in (0, 2, 3)


def _table(headers: list[str], body: list[str]) -> str:
    head = "<tr><th></th>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr>"
    return (f'<div class="scroll"><table><thead>{head}</thead><tbody>{"".join(body)}'
            f"</tbody></table></div>")


def _value_rows(rows: list[str], values: list[dict], fmt) -> list[str]:
    """One <tr> per row key: each run's formatted value, or the missing marker."""
    return [f'<tr><th class="row">{_e(row)}</th>' + "".join(
        f"<td>{_e(fmt(v[row]))}</td>" if row in v else f'<td class="missing">{MISSING}</td>'
        for v in values) + "</tr>" for row in rows]


def _settings_html(runs: list[RunSummary], names: list[str]) -> str:
    rows = _rows([r.settings for r in runs])
    body = _value_rows(rows, [r.settings for r in runs], _plain)
    cells = "".join(f'<td class="problems">{_e("; ".join(r.problems)) or "all files found"}</td>'
                    for r in runs)
    body.append(f'<tr><th class="row">files</th>{cells}</tr>')
    cells = "".join(f'<td class="meta">{_e(r.path)}</td>' for r in runs)
    body.append(f'<tr><th class="row">folder</th>{cells}</tr>')
    return _table(names, body)


def _same_units(runs: list[RunSummary], vals: list) -> bool:
    """Whether the runs holding a value of a training-run row (loss, recon, kl, elbo) report it
    in one unit with one reconstruction objective: an energy score and a nats likelihood (or
    an unnormalised prior's kl without ln Z) are not ranked against each other."""
    keys = {(str(r.notes.get("metrics.json: units", "nats per example")), str(r.settings.get("reconstruction", "")))
            for r, v in zip(runs, vals) if v is not None}
    return len(keys) <= 1


def _metrics_html(runs: list[RunSummary], names: list[str]) -> str:
    rows = _rows([r.metrics for r in runs])
    section_of = {}
    for r in runs:
        for k, s in r.sections.items():
            section_of.setdefault(k, s)
    order = {"evaluation": 0, "training run": 1}
    rows.sort(key=lambda k: order.get(section_of.get(k, ""), 2))   # stable within a section
    titles = {"evaluation": "evaluation/metrics.json (energyvae evaluate)",
              "training run": "metrics.json (end of training)"}
    body, current = [], None
    for row in rows:
        sec = section_of.get(row, "")
        if sec != current:
            current = sec
            body.append(f'<tr class="section"><th colspan="{len(runs) + 1}">'
                        f"{_e(titles.get(sec, sec))}</th></tr>")
        vals = [r.metrics.get(row) for r in runs]
        d = metric_direction(row)
        comparable = sec != "training run" or _same_units(runs, vals)
        best = _best(vals, d) if comparable else set()
        cells = []
        for i, v in enumerate(vals):
            if v is None:
                cells.append(f'<td class="missing">{MISSING}</td>')
            else:
                cls = "num best" if i in best else "num"
                cells.append(f'<td class="{cls}" title="{_e(repr(v))}">{_e(format_value(v))}</td>')
        arrow = {"lower": "↓ lower is better", "higher": "↑ higher is better"}.get(d, "")
        if not comparable and d:
            arrow = "units or objectives differ: not ranked"
        label = _e(row) + (f'<span class="dir">{_e(arrow)}</span>' if arrow else "")
        body.append(f'<tr><th class="row">{label}</th>{"".join(cells)}</tr>')
    if not rows:
        return '<p class="meta">No metrics found.</p>'
    return _table(names, body)


def _notes_html(runs: list[RunSummary], names: list[str]) -> str:
    parts = []
    feats = {}
    for r, n in zip(runs, names):
        vals = tuple(format_value(v) for k, v in r.notes.items() if re.search(r"feature", k, re.I))
        if vals:
            feats[n] = vals
    if len(set(feats.values())) > 1:
        parts.append('<p class="warn">The runs were evaluated with different feature networks; '
                     "their FID / KID / precision / recall are not comparable.</p>")
    refs = {}
    for r, n in zip(runs, names):
        vals = tuple(format_value(v) for k, v in r.notes.items()
                     if re.search(r"reference|ref_split", k, re.I))
        if vals:
            refs[n] = vals
    if len(set(refs.values())) > 1:
        parts.append('<p class="warn">The runs used different reference sets for the '
                     "feature-based metrics.</p>")
    if any(r.metrics.get(k) is not None for r in runs for k in r.metrics if "fid" in k) \
            and not feats:
        parts.append('<p class="warn">No feature-network information was recorded with the '
                     "FID values.</p>")
    rows = sorted(_rows([r.notes for r in runs]), key=lambda k: not k.startswith("evaluation"))
    body = _value_rows(rows, [r.notes for r in runs], format_value)
    parts.append(_table(names, body) if body else
                 '<p class="meta">No notes (no evaluation/metrics.json info found).</p>')
    return "".join(parts)


def _paired_html(paired: dict) -> str:
    """The "Paired NLL differences" section: one row per run paired with the baseline, then
    one line per run that was not paired."""
    def num(v):
        if v is None:
            return f'<td class="missing">{MISSING}</td>'
        return f'<td class="num" title="{_e(repr(v))}">{_e(format_value(v))}</td>'
    parts = []
    info = paired["baseline_info"]
    if info is not None:
        parts.append(
            f'<p class="meta">Baseline: <b>{_e(paired["baseline"])}</b>, NLL '
            f'{_e(format_value(info["nll"]))} ± {_e(format_value(info["stderr"]))} nats over '
            f'{_e(info["examples"])} {_e(info["split"])} examples (seed {_e(info["seed"])}'
            + (f', K = {_e(info["k"])}' if info["k"] is not None else "") + "). "
            "Δ NLL = mean over the same examples of the run's per-image NLL minus the baseline's "
            "(nats; negative: the run is better); paired stderr = sample std of the per-image "
            "differences / √n; unpaired stderr = √(se_run² + se_baseline²), what the two NLLs' own "
            "error bars would give; bits/dim = nats / (D ln 2).</p>")
    if paired["note"]:
        parts.append(f'<p class="warn">{_e(paired["note"])}</p>')
    if paired["pairs"]:
        headers = ["Δ NLL (nats)", "paired stderr", "z", "n", "Δ bits/dim", "stderr (bits/dim)",
                   "unpaired stderr", "K"]
        body = []
        for p in paired["pairs"]:
            bpd = p["bits_per_dim"] or {}
            cells = [num(p["mean"]), num(p["stderr"]), num(p["z"]), num(p["n"]), num(bpd.get("mean")),
                     num(bpd.get("stderr")), num(p["unpaired_stderr"]), num(p["k"])]
            body.append(f'<tr class="paired"><th class="row">{_e(p["run"])} − {_e(paired["baseline"])}</th>'
                        + "".join(cells) + "</tr>")
        parts.append(_table(headers, body))
    if paired["unpaired"]:
        items = "".join(f"<li>{_e(name)}: not paired: {_e(why)}</li>" for name, why in paired["unpaired"])
        parts.append(f'<ul class="problems">{items}</ul>')
    return "".join(parts)


def _figures_html(runs: list[RunSummary], names: list[str], max_bytes: int) -> str:
    keys = _rows([r.figures for r in runs])
    keys.sort(key=lambda k: (k.startswith("evaluation/"),
                             _FIGURE_ORDER.index(k) if k in _FIGURE_ORDER else len(_FIGURE_ORDER),
                             k))
    if not keys:
        return '<p class="meta">No figures found.</p>'
    out = []
    cols = f"grid-template-columns: repeat({max(1, len(runs))}, minmax(0, 1fr));"
    for key in keys:
        out.append(f'<section><h3 id="fig-{_e(re.sub(r"[^A-Za-z0-9_-]", "-", key))}">'
                   f"{_e(key)}</h3><div class=\"figrow\" style=\"{cols}\">")
        for r, n in zip(runs, names):
            p = r.figures.get(key)
            if p is None:
                out.append(f'<figure class="missing">{MISSING}<figcaption>{_e(n)}: '
                           f"no {_e(key)}.png</figcaption></figure>")
                continue
            uri, info = _png_data_uri(p, max_bytes)
            if uri is None:
                out.append(f'<figure class="missing">{MISSING}<figcaption>{_e(n)}: {_e(key)} '
                           f"({_e(info)})</figcaption></figure>")
                continue
            width, grid = _png_meta(p)
            attrs = (f' width="{width}"' if width else "") + (' class="grid"' if grid else "")
            out.append(f'<figure><img src="{uri}"{attrs} alt="{_e(n)}: {_e(key)}">'
                       f"<figcaption>{_e(n)} — {_e(key)} ({_e(info)})</figcaption></figure>")
        out.append("</div></section>")
    return "".join(out)


def build_report(run_dirs: Iterable, out_dir, title: str | None = None,
                 names: list[str] | None = None, max_image_bytes: int = 25_000_000,
                 baseline: str | None = None) -> Path:
    """Write ``out_dir/index.html`` comparing ``run_dirs`` side by side; return its path.

    Runs are columns, named by their folder names (or ``names``; duplicates get their parent
    folder's name). The page is self-contained and usable offline: inline CSS, no scripts,
    images as base64 data URIs (PNG files above ``max_image_bytes`` are listed, not embedded),
    and a Content-Security-Policy that blocks any network fetch. All text is HTML-escaped.
    Missing or unreadable files are shown as "—" and listed in the "files" row.

    Runs with per-image NLLs (``evaluation/per_image_nll.json``) get a "Paired NLL
    differences" section against ``baseline`` (a run's name or folder; by default the first
    run with per-image NLLs), see :func:`paired_nll_comparisons`; an unknown ``baseline`` is a
    ``ValueError``.
    """
    paths = [Path(p) for p in run_dirs]
    labels = _unique_names(paths, names)
    runs = [load_run(p, n) for p, n in zip(paths, labels)]
    paired = paired_nll_comparisons(runs, baseline)
    title = title or "energyvae: run comparison"
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    csp = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; "
           "form-action 'none'")
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">{len(runs)} run(s), generated {_e(now)}. Missing values: {MISSING}. '
        "Best value per row highlighted where the direction is known.</p>",
        "<h2>Settings</h2>",
        _settings_html(runs, labels) if runs else '<p class="meta">No runs.</p>',
        "<h2>Metrics</h2>", _metrics_html(runs, labels),
        *(["<h2>Paired NLL differences</h2>", _paired_html(paired)] if paired is not None else []),
        "<h2>Notes</h2>", _notes_html(runs, labels) if runs else "",
        "<h2>Figures</h2>", _figures_html(runs, labels, max_image_bytes),
    ]
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index = out / "index.html"
    atomic_write_text(index, page)
    return index
