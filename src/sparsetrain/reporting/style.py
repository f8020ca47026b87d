"""The look shared by every figure: one fixed colour per method, markers and dashes that keep
overlapping lines apart, and the atomic PNG write."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from matplotlib.figure import Figure

from sparsetrain.atomic import atomic_write_bytes

# Fixed, so a method has the same colour in every figure and every report. Dense is black
# (it is drawn as the reference line); the rest are the 20 colours of matplotlib's tab20.
# A newly registered method belongs here too (tests/unit/reporting/test_figures.py checks).
METHOD_COLORS: dict[str, str] = {
    "dense": "#000000",
    "static": "#1f77b4", "set": "#ff7f0e", "rigl": "#2ca02c", "mest": "#d62728",
    "granet": "#9467bd", "gmp": "#8c564b", "snip": "#e377c2", "grasp": "#7f7f7f",
    "synflow": "#bcbd22", "imp": "#17becf", "pai": "#aec7e8",
    "prune-global": "#ffbb78", "prune-layer": "#98df8a", "prune-lamp": "#ff9896",
    "prune-dp": "#c5b0d5", "dsn": "#c49c94", "edge-popup": "#f7b6d2", "slak": "#dbdb8d",
    "sup-tickets": "#9edae5", "srigl": "#006d2c", "chase": "#843c39", "sup-tickets-granet": "#3182bd",
    "ugts": "#7b4173",
}
_SPARE = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354",
          "#756bb1", "#636363")
MARKERS = "osD^vPX*<>"
LINESTYLES = ("-", "--", ":", "-.")


def method_color(method: str) -> str:
    """The colour of ``method`` in every figure; a method without a fixed colour gets a spare
    one chosen by a hash of its name, so it too keeps its colour from figure to figure."""
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    digest = int(hashlib.sha256(method.encode()).hexdigest(), 16)
    return _SPARE[digest % len(_SPARE)]


MIN_ACCURACY_SPAN = 10.0
"""Fewest percentage points an accuracy axis spans (see `accuracy_axis`)."""


def accuracy_axis(ax: Any, span: float = MIN_ACCURACY_SPAN) -> None:
    """Widen ``ax``'s y-axis, an accuracy in %, to at least ``span`` points inside 0-100 around
    its data, so that a gap of a few tenths of a point does not fill the panel (matplotlib fits
    the axis to the data: 97.1 vs 97.6 would span it top to bottom). Wider data keep their range."""
    low, high = ax.get_ylim()
    if high - low >= span:
        return
    middle = (low + high) / 2
    low = min(max(middle - span / 2, 0.0), 100.0 - span)
    ax.set_ylim(low, low + span)


def save_png(fig: Figure, path: str | os.PathLike[str], dpi: int) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically and return the path."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")  # long labels and outside legends stay whole
    return atomic_write_bytes(path, buffer.getvalue())


def coinciding(lines: Mapping[str, tuple[str, Sequence[float]]], tol: float = 1e-3) -> dict[str, list[str]]:
    """For each line (label -> (method, values)), the labels of the other lines with the same
    values within ``tol``: methods that share one allocation draw the same line."""
    out: dict[str, list[str]] = {}
    for label, (_, values) in lines.items():
        same = [other for other, (_, v) in lines.items() if other != label and len(v) == len(values)
                and all(abs(a - b) <= tol for a, b in zip(v, values))]
        if same:
            out[label] = same
    return out


def plot_layer_lines(ax: Any, lines: Mapping[str, tuple[str, Sequence[float]]]) -> None:
    """Per-layer densities (label -> (method, density per layer)) on ``ax``, in the method's
    colour with its own marker and dash, set slightly side by side so that coinciding lines
    all stay visible; lines that coincide share a letter in the legend ("rigl [A]", "set [A]"),
    and the legend title says what the letters mean. The legend sits outside the axes."""
    shared = coinciding(lines)
    letters: dict[str, str] = {}
    for label, others in shared.items():
        if label not in letters:
            letter = chr(ord("A") + len(set(letters.values())) % 26)
            letters.update({name: letter for name in (label, *others)})
    width = 0.5 / max(1, len(lines))
    for i, (label, (method, values)) in enumerate(lines.items()):
        offset = (i - (len(lines) - 1) / 2) * width
        mark = f" [{letters[label]}]" if label in letters else ""
        ax.plot([j + offset for j in range(len(values))], values, marker=MARKERS[i % len(MARKERS)], markersize=5,
                linestyle=LINESTYLES[i % len(LINESTYLES)], color=method_color(method), label=label + mark)
    if lines:
        title = "[same letter]: same allocation,\ndrawn side by side" if letters else None
        ax.legend(fontsize="x-small", title=title, title_fontsize="x-small", loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), alignment="left")
