"""The comparison figure: test accuracy per experiment, and the density each gives each layer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sparsetrain.reporting.groups import DENSE, diff_keys, experiment_groups, row_label
from sparsetrain.reporting.study import seeds_note
from sparsetrain.reporting.style import method_color, plot_layer_lines, save_png

_MAX_NAMED_LAYERS = 16  # beyond this, the x axis shows layer indices instead of names


def plot_comparison(
    runs: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], *, dpi: int = 120
) -> Path:
    """Write a two-panel PNG to ``path`` and return it.

    Left: a dot plot of test accuracy (%) per experiment on a 0-100 axis: every seed as a
    small open dot, the mean as a filled dot, and ± std over seeds as a bar only for rows
    with two or more seeds; a short dashed mark on a row is its own dense baseline (same
    training settings). Right: per-layer density
    against the layer, one line per experiment; lines that coincide are set side by side
    with their own marker and dash, and the legend names the rows that share an allocation.
    Colours are fixed per method (`style.METHOD_COLORS`).
    """
    groups = experiment_groups(runs)
    keys = diff_keys(groups)
    several_densities = len({g["density"] for g in groups if g["density"] is not None}) > 1
    labels = [row_label(g, keys, density=several_densities) for g in groups]
    # rows of several setups or scenarios: say which, or two "dense" rows look alike
    for part in ("scenario", "setup"):
        if len({g[part] for g in groups}) > 1:
            labels = [f"{g[part]}: {label}" for g, label in zip(groups, labels)]

    fig = Figure(figsize=(12, 0.9 + max(3.6, 0.42 * len(groups))), layout="constrained")
    FigureCanvasAgg(fig)
    acc_ax, layer_ax = fig.subplots(1, 2, width_ratios=(1, 1.3))

    if groups:
        positions = list(range(len(groups)))[::-1]  # first row on top
        for y, g in zip(positions, groups):
            color = method_color(g["method"])
            seeds = [100 * float(r["final"]["test_acc"]) for r in g["runs"]
                     if (r.get("final") or {}).get("test_acc") is not None]
            acc_ax.plot(seeds, [y] * len(seeds), linestyle="none", marker="o", markersize=4,
                        markerfacecolor="none", markeredgecolor=color, alpha=0.7)
            if g["test_acc_mean"] is not None:
                std = 100 * g["test_acc_std"] if g["test_acc_std"] is not None else None
                acc_ax.errorbar([100 * g["test_acc_mean"]], [y], xerr=None if std is None else [std],
                                marker="o", markersize=7, capsize=4, color=color)
                acc_ax.annotate(f"{100 * g['test_acc_mean']:.1f}", (100 * g["test_acc_mean"], y),
                                xytext=(0, 7), textcoords="offset points", ha="center", fontsize="x-small")
            if g["dense"] is not None and g["method"] != DENSE:  # this row's own dense baseline
                acc_ax.plot([100 * g["dense_acc_mean"]] * 2, [y - 0.35, y + 0.35], color=method_color(DENSE),
                            linestyle="--", linewidth=1, label="dense, same settings")
        acc_ax.set_yticks(positions, [f"{label} (n={g['n_seeds']})" for label, g in zip(labels, groups)],
                          fontsize="small")
        acc_ax.set_ylim(-0.7, len(groups) - 0.3)
        handles, names = acc_ax.get_legend_handles_labels()
        if handles:
            acc_ax.legend(handles[:1], names[:1], fontsize="x-small", loc="best")
    else:
        acc_ax.text(0.5, 0.5, "no finished runs", ha="center", va="center", transform=acc_ax.transAxes)
        acc_ax.set_yticks([])
    acc_ax.set_xlim(0, 100)
    acc_ax.grid(axis="x", alpha=0.3)
    acc_ax.set_xlabel("test accuracy (%)")
    acc_ax.set_title(f"Test accuracy ({seeds_note(groups)})", fontsize="medium")

    # one line per configuration apart from the scenario (which does not change an allocation)
    lines: dict[str, tuple[str, list[float]]] = {}
    several_setups = len({g["setup"] for g in groups}) > 1
    for g in groups:
        if g["layers"]:
            label = row_label(g, keys, density=several_densities)
            label = f"{g['setup']}: {label}" if several_setups else label
            lines.setdefault(label, (g["method"], [float(layer["density"]) for layer in g["layers"]]))
    plot_layer_lines(layer_ax, lines)
    names: list[str] = []
    for g in groups:
        if len(g["layers"]) > len(names):
            names = [layer["name"] for layer in g["layers"]]
    if names:
        if len(names) <= _MAX_NAMED_LAYERS:
            layer_ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize="small")
        else:
            layer_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        layer_ax.text(0.5, 0.5, "no per-layer data", ha="center", va="center", transform=layer_ax.transAxes)
    layer_ax.set_ylim(0.0, 1.05)
    layer_ax.set_xlabel("layer")
    layer_ax.set_ylabel("density (active / total)")
    several = any(g["n_seeds"] > 1 for g in groups)
    layer_ax.set_title("Per-layer density" + (" (mean over seeds)" if several else ""), fontsize="medium")
    return save_png(fig, path, dpi)
