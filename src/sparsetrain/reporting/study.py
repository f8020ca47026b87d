"""Study tables and figures: accuracy per experiment (setup, scenario, method, density and
the hyperparameters that differ) against the dense run of the same training settings.

Built only from store run dicts; the rows are `groups.experiment_groups` (one configuration
over its distinct seeds), so runs of different experiments never share a row or a point.
"""

from __future__ import annotations

import math
import os
import statistics
from pathlib import Path
from typing import Any, Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sparsetrain.reporting.groups import (
    DENSE,
    diff_keys,
    experiment_groups,
    row_label,
)
from sparsetrain.reporting.style import (
    LINESTYLES, MARKERS, accuracy_axis, method_color, plot_layer_lines, save_png,
)
from sparsetrain.reporting.tables import TEXT_COLUMNS, _short_ids, experiment_cells, format_table

STUDY_COLUMNS: list[tuple[str, str]] = [
    ("setup", "setup"),
    ("scenario", "scenario"),
    ("method", "method"),
    ("density", "density"),
    ("n_seeds", "seeds"),
    ("test_acc", "test acc (%)"),
    ("dense_acc", "dense (%)"),
    ("delta", "Δ vs dense"),
    ("runs", "runs"),
]


def study_groups(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One dict per experiment with its accuracy over seeds and its dense baseline
    (see `groups.experiment_groups`); runs that did not finish are left out."""
    return experiment_groups(runs)


def study_rows(runs: Sequence[Mapping[str, Any]], *, among: Sequence[str] | None = None
               ) -> tuple[list[dict[str, str]], list[tuple[str, str]]]:
    """Rows and columns of the study table: `STUDY_COLUMNS` with the hyperparameters that
    tell rows apart after density, accuracies in %, run ids unique among ``among``."""
    groups = study_groups(runs)
    keys = diff_keys(groups)
    ids = _short_ids(groups, runs, among)
    columns = STUDY_COLUMNS[:4] + [(f"config.{k}", k) for k in keys] + STUDY_COLUMNS[4:]
    return [experiment_cells(g, keys, ids) for g in groups], columns


def study_table(runs: Sequence[Mapping[str, Any]], *, among: Sequence[str] | None = None) -> str:
    """A text table of `study_rows`."""
    rows, columns = study_rows(runs, among=among)
    return format_table(rows, columns, align={k: ">" for k, _ in columns if k not in TEXT_COLUMNS})


def seeds_note(groups: Sequence[Mapping[str, Any]]) -> str:
    """What the error bars of ``groups`` are: "± std over N seeds" when every row has the
    same N >= 2, "one seed: no error bars" when none has two, else a mixed note."""
    counts = {g["n_seeds"] for g in groups}
    if not counts or max(counts) < 2:
        return "one seed: no error bars"
    if len(counts) == 1:
        return f"mean ± std over {counts.pop()} seeds"
    return "mean ± std where n ≥ 2 seeds"


def plot_accuracy_vs_density(runs: Sequence[Mapping[str, Any]], path: str | os.PathLike[str],
                             *, dpi: int = 110) -> Path:
    """PNG with one panel per (setup, scenario): test accuracy against density, one line per
    sparse method (and per value of the hyperparameters that differ), set slightly apart
    along the density axis so that equal points stay visible, error bars only for rows with
    two or more seeds, and each dense baseline as a horizontal line."""
    groups = study_groups(runs)
    keys = diff_keys(groups)
    panels = list(dict.fromkeys((g["setup"], g["scenario"]) for g in groups)) or [("", "")]
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(6.4 * cols, 3.8 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (setup, scenario) in zip(axes, panels):
        mine = [g for g in groups if (g["setup"], g["scenario"]) == (setup, scenario)]
        lines: dict[str, list[Mapping[str, Any]]] = {}
        for g in mine:
            if g["method"] != DENSE and g["density"] is not None:
                lines.setdefault(row_label(g, keys, density=False), []).append(g)
        variants: dict[str, int] = {}
        for i, (label, points) in enumerate(lines.items()):
            points.sort(key=lambda g: g["density"])
            method = points[0]["method"]
            k = variants[method] = variants.get(method, -1) + 1
            n = min(g["n_seeds"] for g in points)
            dodge = 10 ** (0.015 * (i - (len(lines) - 1) / 2))  # side by side on the log axis: none hides another
            ax.errorbar([g["density"] * dodge for g in points], [100 * g["test_acc_mean"] for g in points],
                        yerr=[100 * (g["test_acc_std"] or 0.0) for g in points] if n >= 2 else None,
                        marker=MARKERS[k % len(MARKERS)], markersize=5, capsize=3,
                        linestyle=LINESTYLES[k % len(LINESTYLES)], color=method_color(method),
                        label=f"{label} (n={n})")
        for k, g in enumerate(x for x in mine if x["method"] == DENSE):
            mean = 100 * g["test_acc_mean"]
            ax.axhline(mean, color=method_color(DENSE), linestyle=LINESTYLES[(k + 1) % len(LINESTYLES)],
                       linewidth=1, label=f"{row_label(g, keys)} (n={g['n_seeds']})")
            if g["test_acc_std"] is not None:
                std = 100 * g["test_acc_std"]
                ax.axhspan(mean - std, mean + std, color=method_color(DENSE), alpha=0.08)
        densities = sorted({float(g["density"]) for g in mine if g["density"] is not None})
        if densities:
            ax.set_xscale("log")
            ax.minorticks_off()
            ax.set_xticks(densities, [f"{d:g}" for d in densities])
            ax.set_xlim(densities[0] / 1.6, densities[-1] * 1.6)
        ax.set_title(f"{setup}, {scenario}" if setup else "no finished runs", fontsize="medium")
        ax.set_xlabel("density")
        ax.set_ylabel("test accuracy (%)")
        accuracy_axis(ax)
        if mine:  # outside the axes, on the right: a legend never hides a point
            ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"Test accuracy vs density ({seeds_note(groups)})", fontsize="medium")
    return save_png(fig, path, dpi)


def plot_layer_densities(runs: Sequence[Mapping[str, Any]], path: str | os.PathLike[str],
                         *, dpi: int = 110) -> Path:
    """PNG with one panel per (setup, density): each sparse method's per-layer density
    (active / total, mean over seeds and scenarios) against the layer. Lines that coincide
    (methods sharing one allocation, e.g. ERK) are drawn side by side with their own marker
    and dash, and the legend says which ones share."""
    groups = study_groups(runs)
    keys = [k for k in diff_keys(groups) if k not in _SCENARIO_FREE]
    merged: dict[tuple[str, float], dict[str, tuple[str, list[list[float]]]]] = {}
    names: dict[str, list[str]] = {}
    for g in groups:
        if g["method"] == DENSE or g["density"] is None or not g["layers"]:
            continue
        panel = merged.setdefault((g["setup"], float(g["density"])), {})
        label = row_label(g, keys, density=False)
        panel.setdefault(label, (g["method"], []))[1].append([layer["density"] for layer in g["layers"]])
        names.setdefault(g["setup"], [layer["name"] for layer in g["layers"]])
    panels = sorted(merged) or [("", 0.0)]
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(6.6 * cols, 3.9 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, panel in zip(axes, panels):
        lines = {label: (method, _mean_curve(curves)) for label, (method, curves) in merged.get(panel, {}).items()}
        plot_layer_lines(ax, lines)
        layer_names = names.get(panel[0], [])
        if layer_names and len(layer_names) <= 16:
            ax.set_xticks(range(len(layer_names)), layer_names, rotation=45, ha="right", fontsize="small")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{panel[0]}, density {panel[1]:g}" if panel[0] else "no per-layer data", fontsize="medium")
        ax.set_ylabel("layer density (active / total)")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return save_png(fig, path, dpi)


# Keys whose differences the layer-density panels average over (they do not change an allocation).
_SCENARIO_FREE = ("label_noise", "noise_type", "data_fraction", "imbalance_ratio", "subset", "subset_fraction",
                  "subset_split", "subset_score", "adversarial_training", "wot")


def _mean_curve(curves: Sequence[Sequence[float]]) -> list[float]:
    length = min(len(c) for c in curves)
    return [statistics.fmean(c[j] for c in curves) for j in range(length)]
