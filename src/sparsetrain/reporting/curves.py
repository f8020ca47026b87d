"""Learning curves of one run from its stored epochs (the store's copy of ``metrics.jsonl``):
loss and accuracy on the train, validation and test splits, and density and ITOP rate
(the fraction of weights ever active, Liu et al. ICML 2021) over epochs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sparsetrain.reporting.style import save_png

SPLITS = (("train", "C0", "-"), ("val", "C1", "--"), ("test", "C2", ":"))
"""Split, colour and dash: the same in every run's curves."""


def has_curves(epochs: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the stored ``epochs`` hold anything `plot_run_curves` can draw."""
    return any(_series(epochs, key)[0] for key in ("train_loss", "test_acc", "density", "itop_rate"))


def plot_run_curves(epochs: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], *,
                    title: str = "", dpi: int = 80) -> Path:
    """PNG of `run_curves_figure` at ``path``."""
    return save_png(run_curves_figure(epochs, title=title), path, dpi)


def run_curves_figure(epochs: Sequence[Mapping[str, Any]], *, title: str = "") -> Figure:
    """Three panels over epochs: loss, accuracy (%) and density / ITOP rate."""
    fig = Figure(figsize=(11, 2.9), layout="constrained")
    FigureCanvasAgg(fig)
    loss_ax, acc_ax, sparse_ax = fig.subplots(1, 3)
    for split, color, dash in SPLITS:
        for ax, key, scale in ((loss_ax, f"{split}_loss", 1.0), (acc_ax, f"{split}_acc", 100.0)):
            x, y = _series(epochs, key)
            if x:
                ax.plot(x, [scale * v for v in y], color=color, linestyle=dash, marker=".", label=split)
    for key, label, color, dash in (("density", "density", "C3", "-"), ("itop_rate", "ITOP rate", "C4", "--")):
        x, y = _series(epochs, key)
        if x:
            sparse_ax.plot(x, y, color=color, linestyle=dash, marker=".", label=label)
    acc_ax.set_ylim(0, 100)
    sparse_ax.set_ylim(0, 1.05)
    for ax, name in ((loss_ax, "loss"), (acc_ax, "accuracy (%)"), (sparse_ax, "fraction of weights")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(name)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="x-small")
        else:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
    if title:
        fig.suptitle(title, fontsize="small")
    return fig


def _series(epochs: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(int(e["epoch"]), float(e[key])) for e in epochs if e.get(key) is not None and "epoch" in e]
    return [p[0] for p in points], [p[1] for p in points]
