"""The self-contained HTML report: one row per experiment with its configuration, the
figures, the runs that are no result, and every run's learning curves and layers."""

from __future__ import annotations

import base64
import html
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

from sparsetrain.atomic import atomic_write_text
from sparsetrain.reporting.channels import channel_html
from sparsetrain.reporting.curves import has_curves, plot_run_curves
from sparsetrain.reporting.groups import diff_keys, experiment_groups, format_setting, not_finished, row_label
from sparsetrain.reporting.robustness import robustness_html
from sparsetrain.reporting.study import plot_accuracy_vs_density, plot_layer_densities, seeds_note, study_rows
from sparsetrain.reporting.tables import COMPARISON_COLUMNS, TEXT_COLUMNS, format_value, human_count

LAYER_COLUMNS: list[tuple[str, str]] = [
    ("name", "layer"),
    ("shape", "shape"),
    ("structure", "structure"),
    ("density", "density"),
    ("active", "active"),
    ("total", "total"),
    ("channels", "channels"),
    ("flops", "FLOPs"),
    ("shrunk_flops", "shrunk FLOPs"),
]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: min(95vw, 1600px); color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.8em; text-align: left; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
img { max-width: 100%; }
.scroll { overflow-x: auto; }
td.ids { font-family: monospace; font-size: 0.85em; }
.meta { color: #555; font-size: 0.9em; }
details { margin: 0.3em 0; }
summary { cursor: pointer; }
.config { font-size: 0.85em; line-height: 1.5; }
.config b { font-weight: 600; }
.config .diff { background: #fff3c4; }
"""

_CELL_CLASS = {"runs": " class=ids"}  # run ids in a small fixed-width font

_NOTE = ("One row per configuration (everything but the seed); seeds counts its distinct seeds. Test "
         "accuracy in %: mean ± sample std when a row has two or more seeds, else the one value. Dense: "
         "the dense run with the same setup, scenario and training settings; Δ vs dense in percentage "
         "points, or \"no dense run\" when there is none. Columns after density name the hyperparameters "
         "that differ between rows of a setup and scenario. Runs: the ids <code>sparsetrain show</code> "
         "accepts.")


def write_study_report(runs: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], *,
                       title: str = "sparsetrain report", figure: str | os.PathLike[str] | None = None,
                       histories: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                       among: Sequence[str] | None = None) -> Path:
    """Write one self-contained HTML file to ``path``: the experiment table (`study_rows`
    with size and cost), accuracy-vs-density and per-layer density figures, the robustness
    section (`reporting.robustness`) when runs have robustness metrics, the configuration of
    every row, the runs that did not finish (never averaged), and every run's details with
    its learning curves when ``histories`` (run id -> stored epochs) has them. ``figure`` is
    an extra PNG embedded first; run ids are shortened to prefixes unique among ``among``."""
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{e(title)}</title><style>{_STYLE}</style></head><body>", f"<h1>{e(title)}</h1>"]
    if figure is not None:
        parts.append(_image(Path(figure), "comparison figure"))
    groups = experiment_groups(runs)
    rows, columns = study_rows(runs, among=among)
    parts.append("<h2>Test accuracy per experiment</h2>")
    parts.append(f'<p class="meta">{_NOTE}</p>')
    with tempfile.TemporaryDirectory() as tmp:
        if rows:
            size = [c for c in COMPARISON_COLUMNS if c[0] in ("active_weights", "flops", "itop_rate", "duration_s")]
            columns = columns[:-1] + size + columns[-1:]
            table = _table(rows, columns, {k for k, _ in columns if k not in TEXT_COLUMNS})
            parts.append(f'<div class="scroll">{table}</div>')
            parts.append("<h2>Accuracy vs density</h2>")
            parts.append(_image(plot_accuracy_vs_density(runs, Path(tmp) / "acc.png"), "accuracy vs density"))
            parts.append("<h2>Per-layer density</h2>")
            parts.append(_image(plot_layer_densities(runs, Path(tmp) / "layers.png"), "per-layer density"))
            parts.extend(channel_html(runs, _image, _table, tmp, among))
            parts.extend(robustness_html(runs, histories, _image, _table, tmp))
            parts.extend(_configurations(groups))
        else:
            parts.append("<p>No finished runs.</p>")
        parts.extend(_unfinished(runs))
        parts.append("<h2>Runs</h2>")
        for k, run in enumerate(runs):
            epochs = (histories or {}).get(str(run.get("run_id"))) or []
            curves = None
            if has_curves(epochs):
                curves = plot_run_curves(epochs, Path(tmp) / f"curves{k}.png", title=str(run.get("run_id")))
            parts.extend(_run_section(run, curves))
    parts.append("</body></html>\n")
    return atomic_write_text(path, "\n".join(parts))


def write_html_report(runs: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], *, title: str,
                      figure: str | os.PathLike[str] | None = None,
                      histories: Mapping[str, Sequence[Mapping[str, Any]]] | None = None) -> Path:
    """The report of ``runs`` (`write_study_report`), with the PNG ``figure`` first."""
    return write_study_report(runs, path, title=title, figure=figure, histories=histories)


def _image(png: Path, alt: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _configurations(groups: Sequence[Mapping[str, Any]]) -> list[str]:
    """The settings every row shares, then each row's own (highlighted: those that tell rows apart)."""
    e = html.escape
    keys = set(diff_keys(groups))
    configs = [g["config"] for g in groups]
    shared = {k: v for k, v in configs[0].items()
              if all(k in c and format_setting(c[k]) == format_setting(v) for c in configs[1:])}

    def settings(values: Mapping[str, Any]) -> str:
        return " · ".join(f'<span{" class=diff" if k in keys else ""}><b>{e(k)}</b> {e(format_setting(v))}</span>'
                          for k, v in sorted(values.items()))

    out = ["<h2>Configuration of each row</h2>",
           f'<p class="meta">The resolved configuration of each row (all but the seed); {e(seeds_note(groups))}. '
           "Highlighted: the settings that tell rows of one setup and scenario apart.</p>",
           f'<p class="config"><b>Shared by every row:</b> {settings(shared)}</p>', "<ul>"]
    for g in groups:
        own = {k: v for k, v in g["config"].items() if k not in shared}
        seeds = ", ".join(str(s) for s in g["seeds"])
        out.append(f'<li class="config">{e(g["setup"])}, {e(g["scenario"])}, <b>{e(row_label(g))}</b> '
                   f"(seeds {e(seeds)}): {settings(own) or 'nothing else'}</li>")
    out.append("</ul>")
    return out


def _unfinished(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    others = not_finished(runs)
    if not others:
        return []
    rows = [{"run_id": r.get("run_id"), "status": r.get("status"), "method": r.get("method"),
             "density": r.get("density"), "error": r.get("error") or ""} for r in others]
    columns = [("run_id", "run"), ("status", "status"), ("method", "method"), ("density", "density"),
               ("error", "why")]
    return ["<h2>Runs that are no result</h2>",
            '<p class="meta">Running, failed, diverged or interrupted: listed here, never averaged into a row.</p>',
            _table(rows, columns, {"density"})]


def _run_section(run: Mapping[str, Any], curves: Path | None = None) -> list[str]:
    e = html.escape
    meta = ", ".join(
        f"{key} {format_value(run.get(key))}"
        for key in ("method", "model", "dataset", "density", "seed", "status")
        if run.get(key) is not None
    )
    if run.get("duration_s") is not None:
        meta += f", {run['duration_s']:.1f} s"
    out = [f"<h3>{e(str(run.get('run_id', '')))}</h3>", f'<p class="meta">{e(meta)}</p>']
    if run.get("error"):
        out.append(f"<pre>{e(str(run['error']))}</pre>")
    if curves is not None:
        out.append(_image(curves, f"learning curves of {run.get('run_id')}"))
    final = run.get("final") or {}
    if final:
        rows = [{"metric": k, "value": format_value(v)} for k, v in sorted(final.items())
                if not isinstance(v, (Mapping, list))]
        out.append(_table(rows, [("metric", "metric"), ("value", "value")], {"value"}))
    layers = run.get("layers") or []
    if layers:
        rows = [
            {
                "name": layer.get("name"),
                "shape": "×".join(str(n) for n in layer.get("shape") or ()),
                "density": format_value(layer.get("density"), ".4f"),
                "active": format_value(layer.get("active")),
                "total": format_value(layer.get("total")),
                "flops": format_value(layer.get("flops"), human_count),
                "structure": layer.get("structure"),
                "channels": (f"{layer['active_channels']}/{layer['channels']}"
                             if layer.get("active_channels") is not None else None),
                "shrunk_flops": format_value(layer.get("shrunk_flops"), human_count),
            }
            for layer in layers
        ]
        columns = [c for c in LAYER_COLUMNS if c[0] not in ("structure", "channels", "shrunk_flops")
                   or any(layer.get(c[0]) is not None for layer in layers)]  # rows stored before these existed
        out.append(_table(rows, columns, {"density", "active", "total", "channels", "flops", "shrunk_flops"}))
    return out


def _table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]], numeric: set[str]
) -> str:
    e = html.escape
    head = "".join(f"<th>{e(header)}</th>" for _, header in columns)
    body = []
    for row in rows:
        cells = "".join(
            f'<td{_CELL_CLASS.get(key, " class=num" if key in numeric else "")}>{e(format_value(row.get(key)))}</td>'
            for key, _ in columns
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
