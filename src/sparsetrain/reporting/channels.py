"""Channel counts per layer, for runs whose masks remove channels: each layer's active / total
output channels (a channel is active while any of its weights is) and what the model
`st.shrink` makes of the run costs. Read from the stored per-layer table only."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sparsetrain.reporting.groups import is_finished, setup_of, short_ids
from sparsetrain.reporting.style import plot_layer_lines, save_png
from sparsetrain.reporting.tables import format_table, human_count

Run = Mapping[str, Any]

NOTE = ("Active / total output channels of each layer (active: any weight of the channel is active). Shrunk "
        "FLOPs: the model st.shrink makes of the run, run dense, as a fraction of the dense model's; a channel "
        "without active weights is removed only when it outputs exactly zero (zero bias, zero batch-norm weight "
        "and bias) in every layer a residual add couples it with.")


def channel_runs(runs: Sequence[Run]) -> list[Run]:
    """Finished runs with a layer whose masks leave an output channel without any active weight."""
    return [r for r in runs if is_finished(r) and any(
        layer.get("active_channels") is not None and layer["active_channels"] < layer.get("channels", 0)
        for layer in r.get("layers") or [])]


def channel_tables(runs: Sequence[Run], among: Sequence[str] | None = None
                   ) -> list[tuple[str, list[dict[str, Any]], list[tuple[str, str]]]]:
    """Per setup (dataset/model): (setup, rows, columns) of a table with one row per layer and
    one column per run of `channel_runs` (its short id, method and density), cells
    ``active/total``; the last row is the shrunk model's FLOPs over the dense model's."""
    chosen = channel_runs(runs)
    ids = dict(zip([str(r.get("run_id")) for r in chosen],
                   short_ids([str(r.get("run_id")) for r in chosen], among or [str(r.get("run_id")) for r in runs])))
    by_setup: dict[str, list[Run]] = {}
    for run in chosen:
        by_setup.setdefault(setup_of(run), []).append(run)
    out = []
    for setup, members in by_setup.items():
        columns = [("layer", "layer")] + [(str(r.get("run_id")), _label(r, ids)) for r in members]
        names = [layer["name"] for layer in members[0]["layers"]]
        rows = [{"layer": name} for name in names]
        for run in members:
            key = str(run.get("run_id"))
            for row, layer in zip(rows, run["layers"]):
                row[key] = f"{layer.get('active_channels', '-')}/{layer.get('channels', '-')}"
        flops = {"layer": "shrunk FLOPs / dense"}
        for run in members:
            final = run.get("final") or {}
            shrunk, dense = final.get("shrunk_flops"), final.get("dense_flops")
            flops[str(run.get("run_id"))] = (f"{human_count(shrunk)} ({shrunk / dense:.1%})"
                                            if shrunk is not None and dense else "-")
        out.append((setup, rows + [flops], columns))
    return out


def channel_text(runs: Sequence[Run], among: Sequence[str] | None = None) -> str | None:
    """`channel_tables` as plain text, or None when no run removes channels."""
    tables = channel_tables(runs, among)
    if not tables:
        return None
    parts = []
    for setup, rows, columns in tables:
        parts.append(f"{setup}:\n{format_table(rows, columns, align={k: '>' for k, _ in columns[1:]})}")
    return "\n\n".join(parts)


def plot_channels(runs: Sequence[Run], path: str | os.PathLike[str], *, dpi: int = 110) -> Path:
    """PNG with one panel per setup: each run's fraction of active output channels per layer."""
    tables = channel_runs(runs)
    by_setup: dict[str, list[Run]] = {}
    for run in tables:
        by_setup.setdefault(setup_of(run), []).append(run)
    panels = sorted(by_setup) or [""]
    fig = Figure(figsize=(6.6 * min(2, len(panels)), 3.9 * ((len(panels) + 1) // 2)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots((len(panels) + 1) // 2, min(2, len(panels)), squeeze=False).ravel()
    ids = dict(zip([str(r.get("run_id")) for r in tables], short_ids([str(r.get("run_id")) for r in tables],
                                                                      [str(r.get("run_id")) for r in runs])))
    for ax, setup in zip(axes, panels):
        members = by_setup.get(setup, [])
        lines = {_label(r, ids): (str(r.get("method")), [layer["active_channels"] / layer["channels"]
                                                          for layer in r["layers"]]) for r in members}
        plot_layer_lines(ax, lines)
        names = [layer["name"].removesuffix(".weight") for layer in members[0]["layers"]] if members else []
        if names and len(names) <= 24:
            ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize="x-small")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("active channels / total")
        ax.set_title(setup or "no run removes channels", fontsize="medium")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return save_png(fig, path, dpi)


def channel_html(runs: Sequence[Run], image: Callable[[Path, str], str],
                 table: Callable[[Sequence[Mapping[str, Any]], Sequence[tuple[str, str]], set[str]], str],
                 tmp: str | os.PathLike[str], among: Sequence[str] | None = None) -> list[str]:
    """The report's "Channels per layer" section (figure and tables), or nothing when no run
    removes channels."""
    tables = channel_tables(runs, among)
    if not tables:
        return []
    out = ["<h2>Channels per layer</h2>", f'<p class="meta">Runs whose masks remove channels. {html.escape(NOTE)}</p>',
           image(plot_channels(runs, Path(tmp) / "channels.png"), "active channels per layer")]
    for setup, rows, columns in tables:
        out.append(f"<h3>{html.escape(setup)}</h3>")
        out.append(f'<div class="scroll">{table(rows, columns, {k for k, _ in columns[1:]})}</div>')
    return out


def _label(run: Run, ids: Mapping[str, str]) -> str:
    density = run.get("density")
    shown = f" d={float(density):g}" if density is not None else ""
    return f"{run.get('method')}{shown} ({ids.get(str(run.get('run_id')), run.get('run_id'))})"
