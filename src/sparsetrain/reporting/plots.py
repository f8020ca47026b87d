"""The comparison figure: test accuracy per method, and the density each method gives each layer."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sparsetrain.atomic import atomic_write_bytes
from sparsetrain.reporting.tables import summarize_runs

_MAX_NAMED_LAYERS = 16  # beyond this, the x axis shows layer indices instead of names


def plot_comparison(
    runs: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], *, dpi: int = 120
) -> Path:
    """Write a two-panel PNG to ``path`` and return it.

    Left: mean test accuracy (%) per method and density, with the std over seeds as error bars.
    Right: per-layer density (mean over seeds) against layer index, one line per method.
    """
    groups = summarize_runs(runs, group_by=("method", "density"), include_runs=True)
    several_densities = len({g["density"] for g in groups}) > 1
    labels = [_label(g, several_densities) for g in groups]

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    acc_ax, layer_ax = fig.subplots(1, 2, width_ratios=(1, 1.4))

    if groups:
        means = [100 * (g["test_acc_mean"] or 0.0) for g in groups]
        stds = [100 * (g["test_acc_std"] or 0.0) for g in groups]
        colors = [f"C{i % 10}" for i in range(len(groups))]
        positions = range(len(groups))
        acc_ax.bar(positions, means, yerr=stds, capsize=4, color=colors)
        acc_ax.set_xticks(list(positions), labels, rotation=30 if len(groups) > 4 else 0,
                          ha="right" if len(groups) > 4 else "center")
        low = min(m - s for m, s in zip(means, stds))
        high = max(m + s for m, s in zip(means, stds))
        margin = max(1.0, 0.15 * (high - low))
        acc_ax.set_ylim(max(0.0, low - margin), min(100.0, high + margin))
    else:
        acc_ax.text(0.5, 0.5, "no finished runs", ha="center", va="center",
                    transform=acc_ax.transAxes)
    acc_ax.set_ylabel("test accuracy (%)")
    acc_ax.set_title("Test accuracy (mean ± std over seeds)")

    names: list[str] = []
    for i, (group, label) in enumerate(zip(groups, labels)):
        densities = _mean_layer_densities(group["runs"])
        if densities:
            layer_ax.plot(range(len(densities)), densities, marker="o", markersize=4,
                          color=f"C{i % 10}", label=label)
            if len(densities) > len(names):
                names = _layer_names(group["runs"])[: len(densities)]
    if names:
        layer_ax.legend(fontsize="small")
        if len(names) <= _MAX_NAMED_LAYERS:
            layer_ax.set_xticks(range(len(names)), names, rotation=45, ha="right",
                                fontsize="small")
        else:
            layer_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        layer_ax.text(0.5, 0.5, "no per-layer data", ha="center", va="center",
                      transform=layer_ax.transAxes)
    layer_ax.set_ylim(0.0, 1.05)
    layer_ax.set_xlabel("layer")
    layer_ax.set_ylabel("density (active / total)")
    layer_ax.set_title("Per-layer density")

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return atomic_write_bytes(path, buffer.getvalue())


def _label(group: Mapping[str, Any], with_density: bool) -> str:
    method = str(group["method"])
    if with_density and group["density"] is not None:
        return f"{method} ({group['density']:.3g})"
    return method


def _mean_layer_densities(runs: Sequence[Mapping[str, Any]]) -> list[float]:
    # Seeds of one config have the same layers; average them position by position.
    per_run = [[float(layer["density"]) for layer in r.get("layers") or []] for r in runs]
    per_run = [d for d in per_run if d]
    if not per_run:
        return []
    length = min(len(d) for d in per_run)
    return [sum(d[i] for d in per_run) / len(per_run) for i in range(length)]


def _layer_names(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    for run in runs:
        if run.get("layers"):
            return [str(layer.get("name", i)) for i, layer in enumerate(run["layers"])]
    return []
