"""A self-contained HTML report: comparison table, figure and per-layer tables of each run."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from sparsetrain.atomic import atomic_write_text
from sparsetrain.reporting.tables import (
    COMPARISON_COLUMNS,
    comparison_rows,
    format_value,
    human_count,
)

LAYER_COLUMNS: list[tuple[str, str]] = [
    ("name", "layer"),
    ("shape", "shape"),
    ("density", "density"),
    ("active", "active"),
    ("total", "total"),
    ("flops", "FLOPs"),
]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.8em; text-align: left; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; }
.meta { color: #555; font-size: 0.9em; }
"""


def write_html_report(
    runs: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    title: str,
    figure: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the report of ``runs`` (store dicts) to ``path``, embedding the PNG ``figure``."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    if figure is not None:
        data = base64.b64encode(Path(figure).read_bytes()).decode("ascii")
        parts.append(f'<img alt="comparison figure" src="data:image/png;base64,{data}">')

    parts.append("<h2>Comparison</h2>")
    rows = comparison_rows(runs)
    if rows:
        numeric = {key for key, _ in COMPARISON_COLUMNS if key != "method"}
        parts.append(_table(rows, COMPARISON_COLUMNS, numeric))
    else:
        parts.append("<p>No finished runs.</p>")

    parts.append("<h2>Runs</h2>")
    for run in runs:
        parts.extend(_run_section(run))
    parts.append("</body></html>\n")
    return atomic_write_text(path, "\n".join(parts))


def _run_section(run: Mapping[str, Any]) -> list[str]:
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
    final = run.get("final") or {}
    if final:
        rows = [{"metric": k, "value": format_value(v)} for k, v in sorted(final.items())]
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
            }
            for layer in layers
        ]
        out.append(_table(rows, LAYER_COLUMNS, {"density", "active", "total", "flops"}))
    return out


def _table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]], numeric: set[str]
) -> str:
    e = html.escape
    head = "".join(f"<th>{e(header)}</th>" for _, header in columns)
    body = []
    for row in rows:
        cells = "".join(
            f'<td{" class=num" if key in numeric else ""}>{e(format_value(row.get(key)))}</td>'
            for key, _ in columns
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
