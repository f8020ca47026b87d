"""Robustness tables and figures, built only from store run dicts (and their stored epochs).

Runs evaluated with ``robust_eval`` carry in their final metrics the accuracy per
corruption and severity, the mean corruption accuracy, frequency-filter accuracies and
PGD robust accuracies (see `sparsetrain.experiments.robustness`). Here they become:

- a table per (setup, scenario, method, density), mean ± std over seeds: clean and mean
  corruption accuracy, mCE and relative mCE (Hendrycks & Dietterich, ICLR 2019) against
  the dense run of the same setup, scenario and seed, PGD (and AutoAttack) accuracy;
- a frequency table (low/high-pass accuracy per cut-off, Wang et al. CVPR 2020);
- heat maps of accuracy per corruption x severity, one per method and density;
- mean corruption and adversarial accuracy against density with the dense baseline;
- robust test accuracy over epochs of adversarially trained runs, with and without WOT
  (the robust-overfitting curve of Rice et al., ICML 2020).

mCE is averaged over the 15 benchmark corruptions when the runs have any of them (the
paper's definition), else over the corruptions they have; a corruption on which the
dense reference makes no error (or, for relative mCE, does not degrade) has no finite
ratio and is left out of the average.
"""

from __future__ import annotations

import math
import os
import statistics
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sparsetrain.reporting.groups import DENSE, diff_keys, experiment_groups, is_finished, row_label
from sparsetrain.reporting.style import accuracy_axis, method_color, save_png as _save
from sparsetrain.reporting.tables import format_accuracy, format_table
from sparsetrain.scenarios.corruptions import BENCHMARK, list_corruptions
from sparsetrain.scenarios.evaluation import corruption_errors, relative_corruption_errors

ATTACK_KEYS = (("robust_acc_linf", "PGD L∞"), ("robust_acc_l2", "PGD L2"),
               ("autoattack_acc_linf", "AA L∞"), ("autoattack_acc_l2", "AA L2"))

Run = Mapping[str, Any]


def _final(run: Run) -> Mapping[str, Any]:
    return run.get("final") or {}


def has_robustness(run: Run) -> bool:
    """Whether ``run`` stored robustness metrics (corruptions or attacks)."""
    final = _final(run)
    return "corruption_accuracy" in final or any(k in final for k, _ in ATTACK_KEYS)


def _groups(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """`experiment_groups` of the finished runs with robustness metrics, each ``name`` its method
    plus the hyperparameters that tell it apart from rows with the same label."""
    groups = experiment_groups([r for r in runs if has_robustness(r) and is_finished(r)])
    keys = diff_keys(groups)
    for g in groups:
        g["name"] = row_label(g, keys, density=False)
    return groups


def mce_pair(run: Run, reference: Run) -> tuple[float, float]:
    """(mCE, relative mCE) of ``run`` against ``reference`` from their stored accuracies (nan if none)."""
    acc, ref = _final(run).get("corruption_accuracy") or {}, _final(reference).get("corruption_accuracy") or {}
    common = [c for c in acc if c in ref]
    benchmark = [c for c in common if c in BENCHMARK]
    names = benchmark or common
    if not names:
        return float("nan"), float("nan")
    errors = {c: [1 - a for a in acc[c]] for c in names}
    ref_errors = {c: [1 - a for a in ref[c]] for c in names}
    with np.errstate(divide="ignore", invalid="ignore"):
        ce = corruption_errors(errors, ref_errors)
        rce = relative_corruption_errors(errors, 1 - float(_final(run)["corruption_clean_acc"]), ref_errors,
                                         1 - float(_final(reference)["corruption_clean_acc"]))
    ce_values = [v for c, v in ce.items() if np.sum(ref_errors[c]) > 0 and math.isfinite(v)]
    ref_drop = {c: np.sum(np.asarray(ref_errors[c]) - (1 - float(_final(reference)["corruption_clean_acc"])))
                for c in names}
    rce_values = [v for c, v in rce.items() if ref_drop[c] > 0 and math.isfinite(v)]
    return (float(np.mean(ce_values)) if ce_values else float("nan"),
            float(np.mean(rce_values)) if rce_values else float("nan"))


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def robustness_groups(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One dict per experiment (`groups.experiment_groups`) of finished runs with robustness
    metrics: means and stds over seeds of every metric (std None below two seeds), mCE /
    relative mCE against the dense run of the same training settings and seed, and the mean
    accuracy matrix per corruption."""
    out = []
    for g in _groups(runs):
        members = g["runs"]
        row: dict[str, Any] = {k: g[k] for k in ("setup", "scenario", "method", "density", "config", "n_seeds",
                                                 "name")}
        for key in ("test_acc", "corruption_clean_acc", "corruption_acc", *(k for k, _ in ATTACK_KEYS)):
            row[key] = _mean_std([_final(r).get(key) for r in members])
        dense = {r.get("seed"): r for r in (g["dense"]["runs"] if g["dense"] else [])}
        pairs = []
        for r in members:
            ref = dense.get(r.get("seed"))
            if ref is not None and "corruption_accuracy" in _final(r) and "corruption_accuracy" in _final(ref):
                pairs.append(mce_pair(r, ref))
        row["mce"] = _mean_std([p[0] for p in pairs])
        row["relative_mce"] = _mean_std([p[1] for p in pairs])
        row["mce_seeds"] = len(pairs)
        row["matrix"] = _mean_matrix(members)
        row["frequency"] = _mean_frequency(members)
        row["dense_corruption_acc"] = (_mean_std([_final(r).get("corruption_acc") for r in g["dense"]["runs"]])[0]
                                       if g["dense"] else None)
        out.append(row)
    return out


def _mean_matrix(members: Sequence[Run]) -> dict[str, list[float]]:
    tables = [_final(r).get("corruption_accuracy") for r in members]
    tables = [t for t in tables if t]
    if not tables:
        return {}
    order = [c for c in list_corruptions() if c in tables[0]] + [c for c in tables[0] if c not in list_corruptions()]
    return {c: list(np.mean([t[c] for t in tables if c in t], axis=0)) for c in order}


def _mean_frequency(members: Sequence[Run]) -> dict[str, dict[str, float]]:
    tables = [_final(r).get("frequency_accuracy") for r in members]
    tables = [t for t in tables if t]
    if not tables:
        return {}
    return {kind: {c: statistics.fmean(t[kind][c] for t in tables) for c in tables[0][kind]}
            for kind in tables[0]}


ROBUST_COLUMNS: list[tuple[str, str]] = [
    ("setup", "setup"), ("scenario", "scenario"), ("method", "method"), ("density", "density"),
    ("n_seeds", "seeds"), ("clean", "clean (%)"), ("corruption", "corrupted (%)"),
    ("delta", "Δ vs dense"), ("mce", "mCE"), ("relative_mce", "rel. mCE"),
]


def robustness_rows(runs: Sequence[Run]) -> list[dict[str, str]]:
    """`robustness_groups` as strings keyed like `robustness_columns` (accuracies in %)."""
    groups = robustness_groups(runs)
    out = []
    for g in groups:
        mean = g["corruption_acc"][0]
        dense = g["dense_corruption_acc"]
        row = {"setup": g["setup"], "scenario": g["scenario"], "method": g["name"],
               "density": "1" if g["density"] is None else f"{g['density']:.4g}", "n_seeds": str(g["n_seeds"]),
               "clean": format_accuracy(*g["test_acc"]), "corruption": format_accuracy(*g["corruption_acc"]),
               "delta": ("-" if g["method"] == DENSE or mean is None or dense is None
                         else f"{100 * (mean - dense):+.2f}"),
               "mce": _ratio(g["mce"], g["method"]), "relative_mce": _ratio(g["relative_mce"], g["method"])}
        for key, _ in ATTACK_KEYS:
            row[key] = format_accuracy(*g[key])
        out.append(row)
    return out


def robustness_columns(runs: Sequence[Run]) -> list[tuple[str, str]]:
    """`ROBUST_COLUMNS` plus one column per attack some run was evaluated with."""
    present = [(k, f"{h} (%)") for k, h in ATTACK_KEYS if any(k in _final(r) for r in runs)]
    return ROBUST_COLUMNS + present


def _ratio(value: tuple[float | None, float | None], method: str) -> str:
    mean, std = value
    if method == DENSE:
        return "1" if mean is not None else "-"
    if mean is None:
        return "-"
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def robustness_table(runs: Sequence[Run]) -> str:
    """A text table of `robustness_rows`."""
    columns = robustness_columns(runs)
    right = {k: ">" for k, _ in columns if k not in ("setup", "scenario", "method")}
    return format_table(robustness_rows(runs), columns, align=right)


def frequency_rows(runs: Sequence[Run]) -> tuple[list[dict[str, str]], list[tuple[str, str]]]:
    """Rows and columns of the frequency table: accuracy (%) after low/high-pass filtering per cut-off."""
    rows, cutoffs = [], []
    for g in robustness_groups(runs):
        if not g["frequency"]:
            continue
        row = {"setup": g["setup"], "scenario": g["scenario"], "method": g["name"],
               "density": "1" if g["density"] is None else f"{g['density']:.4g}"}
        for kind in ("low", "high"):
            for c, acc in g["frequency"].get(kind, {}).items():
                row[f"{kind}_{c}"] = f"{100 * acc:.1f}"
                if (kind, c) not in cutoffs:
                    cutoffs.append((kind, c))
        rows.append(row)
    columns = [("setup", "setup"), ("scenario", "scenario"), ("method", "method"), ("density", "density")]
    columns += [(f"{k}_{c}", f"{k}-pass {c}") for k, c in cutoffs]
    return rows, columns


def plot_corruption_heatmaps(runs: Sequence[Run], path: str | os.PathLike[str], *, dpi: int = 90) -> Path:
    """PNG with one heat map per (setup, scenario, method, density): accuracy (%) per corruption
    (rows) and severity (columns), mean over seeds."""
    groups = [g for g in robustness_groups(runs) if g["matrix"]]
    cols = min(4, max(1, len(groups)))
    rows = max(1, math.ceil(len(groups) / cols))
    height = max(2.5, 0.22 * max((len(g["matrix"]) for g in groups), default=5) + 1.2)
    fig = Figure(figsize=(3.3 * cols, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    image = None
    for ax, g in zip(axes, groups):
        names = list(g["matrix"])
        values = 100 * np.array([g["matrix"][c] for c in names])
        image = ax.imshow(values, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        ax.set_yticks(range(len(names)), names, fontsize=6)
        ax.set_xticks(range(values.shape[1]), [str(s + 1) for s in range(values.shape[1])], fontsize=7)
        ax.set_xlabel("severity", fontsize=7)
        density = "" if g["density"] is None else f" {g['density']:g}"
        ax.set_title(f"{g['method']}{density}, {g['scenario']}\n{g['setup']}", fontsize=7)
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=axes[:len(groups)].tolist(), shrink=0.6, label="accuracy (%)")
    return _save(fig, path, dpi)


def plot_robustness_vs_density(runs: Sequence[Run], path: str | os.PathLike[str], *, dpi: int = 100) -> Path:
    """PNG, one row per (setup, scenario), one column per metric (mean corruption accuracy and
    each attack): mean ± std over seeds against density per sparse method, dense as a line."""
    groups = robustness_groups(runs)
    metrics = [("corruption_acc", "mean corruption acc")] + [(k, h) for k, h in ATTACK_KEYS]
    metrics = [(k, h) for k, h in metrics if any(g[k][0] is not None for g in groups)]
    panels = list(dict.fromkeys((g["setup"], g["scenario"]) for g in groups)) or [("", "")]
    ncols = max(1, len(metrics))
    fig = Figure(figsize=(4.2 * ncols, 3.3 * len(panels)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), ncols, squeeze=False)
    names = list(dict.fromkeys(g["name"] for g in groups if g["method"] != DENSE))
    for i, (setup, scenario) in enumerate(panels):
        mine = [g for g in groups if (g["setup"], g["scenario"]) == (setup, scenario)]
        densities = sorted({float(g["density"]) for g in mine if g["density"] is not None})
        for j, (key, header) in enumerate(metrics):
            ax = axes[i][j]
            for name in names:
                points = sorted((float(g["density"]), g[key], g["method"]) for g in mine
                                if g["name"] == name and g["density"] is not None and g[key][0] is not None)
                if points:
                    ax.errorbar([d for d, _, _ in points], [100 * m for _, (m, _), _ in points],
                                yerr=[100 * (s or 0.0) for _, (_, s), _ in points], marker="o", markersize=4,
                                capsize=3, color=method_color(points[0][2]), label=name)
            for g in mine:
                if g["method"] == DENSE and g[key][0] is not None:
                    ax.axhline(100 * g[key][0], color=method_color(DENSE), linestyle="--", linewidth=1,
                               label=g["name"])
            if densities:
                ax.set_xticks(densities, [f"{d:g}" for d in densities])
            ax.set_xlabel("density")
            ax.set_ylabel(f"{header} (%)")
            accuracy_axis(ax)
            ax.set_title(f"{setup}, {scenario}" if setup else "no robustness runs", fontsize="small")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize="x-small")
    return _save(fig, path, dpi)


def robust_curves(runs: Sequence[Run], histories: Mapping[str, Sequence[Mapping[str, Any]]]
                  ) -> dict[tuple[str, str, str, float | None], list[float]]:
    """Mean ``test_robust_acc`` per epoch over seeds, per experiment, keyed by (setup, scenario,
    method plus the hyperparameters that tell it apart, density)."""
    groups = experiment_groups(runs)
    keys = diff_keys(groups)
    out = {}
    for g in groups:
        curves = []
        for run in g["runs"]:
            epochs = histories.get(str(run.get("run_id"))) or []
            curve = [float(e["test_robust_acc"]) for e in epochs if e.get("test_robust_acc") is not None]
            if curve:
                curves.append(curve)
        if curves:
            length = min(len(c) for c in curves)
            key = (g["setup"], g["scenario"], row_label(g, keys, density=False), g["density"])
            out[key] = [statistics.fmean(c[i] for c in curves) for i in range(length)]
    return out


def plot_robust_curves(runs: Sequence[Run], histories: Mapping[str, Sequence[Mapping[str, Any]]],
                       path: str | os.PathLike[str], *, dpi: int = 100) -> Path:
    """PNG, one panel per setup: robust test accuracy (mean over seeds) against epoch, one
    colour per method (the same in every figure), solid without WOT and dashed with WOT."""
    curves = robust_curves(runs, histories)
    setups = sorted({k[0] for k in curves}) or [""]
    fig = Figure(figsize=(6.0 * len(setups), 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(setups), squeeze=False).ravel()
    for ax, setup in zip(axes, setups):
        mine = sorted((k, v) for k, v in curves.items() if k[0] == setup)
        for (_, scenario, method, density), curve in mine:
            color = method_color(method.split(",")[0])
            style = "--" if "WOT" in scenario else "-"
            label = f"{method}{'' if density is None else f' {density:g}'}, {scenario}"
            ax.plot(range(1, len(curve) + 1), [100 * v for v in curve], linestyle=style, color=color, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("robust test accuracy (%)")
        accuracy_axis(ax)
        ax.set_title(setup or "no adversarially trained runs", fontsize="small")
        if mine:
            ax.legend(fontsize="x-small")
    return _save(fig, path, dpi)


def robustness_html(runs: Sequence[Run], histories: Mapping[str, Sequence[Mapping[str, Any]]] | None,
                    image: Any, table: Any, tmp: str | os.PathLike[str]) -> list[str]:
    """HTML parts of the robustness section (empty when no run has robustness metrics);
    ``image(png, alt)`` and ``table(rows, columns, numeric)`` render as the study report does."""
    runs = [r for r in runs if has_robustness(r)]
    if not runs:
        return []
    parts = ["<h2>Robustness</h2>",
             '<p class="meta">Mean ± std over seeds, in %. Corrupted: mean accuracy over corruptions and '
             "severities; Δ vs dense in percentage points; mCE and relative mCE (Hendrycks &amp; Dietterich "
             "2019) against the dense run of the same setup, scenario and seed (below 1: more robust than "
             "dense); PGD / AA: accuracy under attack.</p>"]
    columns = robustness_columns(runs)
    parts.append(table(robustness_rows(runs), columns, {k for k, _ in columns} - {"setup", "scenario", "method"}))
    freq_rows, freq_columns = frequency_rows(runs)
    if freq_rows:
        parts.append("<h3>Frequency analysis</h3>")
        parts.append('<p class="meta">Accuracy (%) on test images low-pass / high-pass filtered at a radial '
                     "cut-off of the centred spectrum (fraction of the largest frequency).</p>")
        parts.append(table(freq_rows, freq_columns, {k for k, _ in freq_columns[4:]}))
    tmp = Path(tmp)
    if any(has_robustness(r) for r in runs):
        parts.append("<h3>Robust accuracy vs density</h3>")
        parts.append(image(plot_robustness_vs_density(runs, tmp / "robust_density.png"), "robustness vs density"))
    if any("corruption_accuracy" in _final(r) for r in runs):
        parts.append("<h3>Accuracy per corruption and severity</h3>")
        parts.append(image(plot_corruption_heatmaps(runs, tmp / "heatmaps.png"), "corruption heat maps"))
    if histories and robust_curves(runs, histories):
        parts.append("<h3>Robust accuracy over epochs (adversarial training, with and without WOT)</h3>")
        parts.append(image(plot_robust_curves(runs, histories, tmp / "curves.png"), "robust accuracy over epochs"))
    return parts
