"""Study tables and figures: accuracy per setup, scenario, method and density against dense.

Built only from store run dicts. A run's setup is its ``dataset``/``model``; its scenario is
read from its config (``label_noise``, ``data_fraction`` ...; "clean" when none is set), so
the tables need nothing but the store. The dense baseline of a (setup, scenario) is the
mean test accuracy of its ``dense`` runs, and Δ is a row's mean minus that baseline.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import statistics
import types
from pathlib import Path
from typing import Any, Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sparsetrain.atomic import atomic_write_bytes
from sparsetrain.experiments.spec import ExperimentConfig
from sparsetrain.reporting.tables import format_accuracy, format_table
from sparsetrain.scenarios.apply import describe as describe_scenario

DENSE = "dense"

STUDY_COLUMNS: list[tuple[str, str]] = [
    ("setup", "setup"),
    ("scenario", "scenario"),
    ("method", "method"),
    ("density", "density"),
    ("n_seeds", "seeds"),
    ("test_acc", "test acc (%)"),
    ("dense_acc", "dense (%)"),
    ("delta", "Δ vs dense"),
]


def scenario_of(run: Mapping[str, Any]) -> str:
    """The scenario label of a run, from its stored config (defaults for keys it lacks)."""
    config = run.get("config") or {}
    defaults = {f.name: f.default for f in dataclasses.fields(ExperimentConfig)}
    values = {k: config.get(k, v) if config.get(k) is not None else v for k, v in defaults.items()}
    label, training = describe_scenario(types.SimpleNamespace(**values)), training_of(run)
    return label if not training else training if label == "clean" else f"{label}, {training}"


def training_of(run: Mapping[str, Any]) -> str:
    """"adversarial training" (+ ", WOT-block" / ", WOT-whole") for adversarially trained runs, else ""."""
    config = run.get("config") or {}
    if not config.get("adversarial_training"):
        return ""
    wot = config.get("wot") or "none"
    return "adversarial training" + ("" if wot == "none" else f", WOT-{wot}")


def setup_of(run: Mapping[str, Any]) -> str:
    return f"{run.get('dataset')}/{run.get('model')}"


def study_groups(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One dict per (setup, scenario, method, density) with mean/std test accuracy over seeds,
    the dense baseline of its (setup, scenario) and the difference to it; runs without final
    metrics are left out. Sorted by setup, scenario (clean first), method (dense first), density."""
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for run in runs:
        final = run.get("final") or {}
        if final.get("test_acc") is None:
            continue
        density = None if run.get("method") == DENSE else run.get("density")
        key = (setup_of(run), scenario_of(run), str(run.get("method")), density)
        groups.setdefault(key, []).append(run)
    rows = []
    for (setup, scenario, method, density), members in groups.items():
        accs = [float(r["final"]["test_acc"]) for r in members]
        rows.append({
            "setup": setup, "scenario": scenario, "method": method, "density": density,
            "n_seeds": len(accs), "test_acc_mean": statistics.fmean(accs),
            "test_acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "layers": _mean_layers(members),
        })
    dense = {(r["setup"], r["scenario"]): r for r in rows if r["method"] == DENSE}
    for row in rows:
        base = dense.get((row["setup"], row["scenario"]))
        row["dense_acc_mean"] = base["test_acc_mean"] if base else None
        row["dense_acc_std"] = base["test_acc_std"] if base else None
        row["delta"] = (row["test_acc_mean"] - base["test_acc_mean"]) if base else None
    rows.sort(key=lambda r: (r["setup"], r["scenario"] != "clean", r["scenario"],
                             r["method"] != DENSE, r["method"],
                             -1.0 if r["density"] is None else float(r["density"])))
    return rows


def study_rows(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """`study_groups` formatted as strings keyed like `STUDY_COLUMNS` (accuracies in %)."""
    out = []
    for g in study_groups(runs):
        out.append({
            "setup": g["setup"], "scenario": g["scenario"], "method": g["method"],
            "density": "1" if g["density"] is None else f"{g['density']:.4g}",
            "n_seeds": str(g["n_seeds"]),
            "test_acc": format_accuracy(g["test_acc_mean"], g["test_acc_std"]),
            "dense_acc": format_accuracy(g["dense_acc_mean"], g["dense_acc_std"]),
            "delta": "-" if g["delta"] is None or g["method"] == DENSE else f"{100 * g['delta']:+.2f}",
        })
    return out


def study_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """A text table of `study_rows`."""
    right = {k: ">" for k in ("density", "n_seeds", "test_acc", "dense_acc", "delta")}
    return format_table(study_rows(runs), STUDY_COLUMNS, align=right)


def plot_accuracy_vs_density(runs: Sequence[Mapping[str, Any]], path: str | os.PathLike[str],
                             *, dpi: int = 110) -> Path:
    """PNG with one panel per (setup, scenario): test accuracy (mean ± std) against density,
    one line per sparse method and the dense baseline as a horizontal line."""
    groups = study_groups(runs)
    panels = list(dict.fromkeys((g["setup"], g["scenario"]) for g in groups)) or [("", "")]
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.6 * cols, 3.6 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    methods = sorted({g["method"] for g in groups if g["method"] != DENSE})
    color = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    for ax, (setup, scenario) in zip(axes, panels):
        mine = [g for g in groups if (g["setup"], g["scenario"]) == (setup, scenario)]
        for method in methods:
            points = sorted((float(g["density"]), g) for g in mine
                            if g["method"] == method and g["density"] is not None)
            if points:
                ax.errorbar([d for d, _ in points], [100 * g["test_acc_mean"] for _, g in points],
                            yerr=[100 * g["test_acc_std"] for _, g in points], marker="o",
                            markersize=4, capsize=3, color=color[method], label=method)
        for g in mine:
            if g["method"] == DENSE:
                mean, std = 100 * g["test_acc_mean"], 100 * g["test_acc_std"]
                ax.axhline(mean, color="black", linestyle="--", linewidth=1, label="dense")
                ax.axhspan(mean - std, mean + std, color="black", alpha=0.08)
        densities = sorted({float(g["density"]) for g in mine if g["density"] is not None})
        if densities:
            ax.set_xscale("log")
            ax.minorticks_off()
            ax.set_xticks(densities, [f"{d:g}" for d in densities])
        ax.set_title(f"{setup}, {scenario}" if setup else "no finished runs", fontsize="medium")
        ax.set_xlabel("density")
        ax.set_ylabel("test accuracy (%)")
        if mine:
            ax.legend(fontsize="small")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return _save(fig, path, dpi)


def plot_layer_densities(runs: Sequence[Mapping[str, Any]], path: str | os.PathLike[str],
                         *, dpi: int = 110) -> Path:
    """PNG with one panel per (setup, density): each sparse method's per-layer density
    (active / total, mean over seeds and scenarios) against the layer."""
    merged: dict[tuple[str, float, str], list[list[float]]] = {}
    names: dict[str, list[str]] = {}
    for g in study_groups(runs):
        if g["method"] == DENSE or g["density"] is None or not g["layers"]:
            continue
        merged.setdefault((g["setup"], float(g["density"]), g["method"]), []).append(
            [layer["density"] for layer in g["layers"]])
        names.setdefault(g["setup"], [layer["name"] for layer in g["layers"]])
    panels = sorted({(s, d) for s, d, _ in merged}) or [("", 0.0)]
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.6 * cols, 3.6 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    methods = sorted({m for _, _, m in merged})
    for ax, (setup, density) in zip(axes, panels):
        for i, method in enumerate(methods):
            curves = merged.get((setup, density, method))
            if curves:
                length = min(len(c) for c in curves)
                mean = [statistics.fmean(c[j] for c in curves) for j in range(length)]
                # methods with the same allocation overlap exactly: vary marker and dash to see them all
                ax.plot(range(length), mean, marker="os^Dvx"[i % 6], markersize=7 - i % 4,
                        linestyle=("-", "--", ":", "-.")[i % 4], color=f"C{i % 10}", label=method)
        layer_names = names.get(setup, [])
        if layer_names and len(layer_names) <= 16:
            ax.set_xticks(range(len(layer_names)), layer_names, rotation=45, ha="right", fontsize="small")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{setup}, density {density:g}" if setup else "no per-layer data", fontsize="medium")
        ax.set_ylabel("layer density")
        if setup:
            ax.legend(fontsize="small")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return _save(fig, path, dpi)


def _mean_layers(members: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    tables = [r.get("layers") or [] for r in members]
    tables = [t for t in tables if t]
    if not tables:
        return []
    length = min(len(t) for t in tables)
    return [{"name": str(tables[0][j].get("name", j)),
             "density": statistics.fmean(float(t[j]["density"]) for t in tables)} for j in range(length)]


def _save(fig: Figure, path: str | os.PathLike[str], dpi: int) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return atomic_write_bytes(path, buffer.getvalue())


def write_study_report(runs: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], *,
                       title: str = "sparsetrain report", figure: str | os.PathLike[str] | None = None,
                       histories: Mapping[str, Sequence[Mapping[str, Any]]] | None = None) -> Path:
    """One self-contained HTML file: the study table (mean ± std over seeds, dense baseline, Δ),
    accuracy-vs-density and per-layer density figures (PNG, base64-embedded), the per-method
    comparison and every run's details; ``figure`` is an extra PNG to embed first. Runs with
    robustness metrics add the robustness section (`reporting.robustness`); ``histories``
    (run id -> stored epochs) adds the robust-accuracy-over-epochs curves."""
    import base64
    import html
    import tempfile

    from sparsetrain.reporting.html import _STYLE, _run_section, _table
    from sparsetrain.reporting.tables import COMPARISON_COLUMNS, comparison_rows

    e = html.escape

    def image(png: Path, alt: str) -> str:
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        return f'<img alt="{e(alt)}" src="data:image/png;base64,{data}">'

    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{e(title)}</title><style>{_STYLE}</style></head><body>", f"<h1>{e(title)}</h1>"]
    if figure is not None:
        parts.append(image(Path(figure), "comparison figure"))
    rows = study_rows(runs)
    parts.append("<h2>Test accuracy per setup, scenario, method and density</h2>")
    parts.append('<p class="meta">Mean ± std over seeds, in %; dense is the same setup and scenario '
                 "trained without sparsity; Δ is the difference to it in percentage points.</p>")
    if rows:
        numeric = {"density", "n_seeds", "test_acc", "dense_acc", "delta"}
        parts.append(_table(rows, STUDY_COLUMNS, numeric))
        with tempfile.TemporaryDirectory() as tmp:
            parts.append("<h2>Accuracy vs density</h2>")
            parts.append(image(plot_accuracy_vs_density(runs, Path(tmp) / "acc.png"), "accuracy vs density"))
            parts.append("<h2>Per-layer density</h2>")
            parts.append(image(plot_layer_densities(runs, Path(tmp) / "layers.png"), "per-layer density"))
            from sparsetrain.reporting.robustness import robustness_html

            parts.extend(robustness_html(runs, histories, image, _table, tmp))
    else:
        parts.append("<p>No finished runs.</p>")
    comparison = comparison_rows(runs)
    if comparison:
        parts.append("<h2>Per method and density (all scenarios)</h2>")
        parts.append(_table(comparison, COMPARISON_COLUMNS, {k for k, _ in COMPARISON_COLUMNS if k != "method"}))
    parts.append("<h2>Runs</h2>")
    for run in runs:
        parts.extend(_run_section(run))
    parts.append("</body></html>\n")
    return atomic_write_bytes(path, "\n".join(parts).encode("utf-8"))
