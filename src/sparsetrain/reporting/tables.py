"""Plain-text tables and the per-method summary of finished runs.

Everything here reads run dicts as returned by `ResultsStore.get_run` / `ResultsStore.runs`:
top-level ``method``, ``density``, ``duration_s`` ... and a ``final`` dict of metrics.
"""

from __future__ import annotations

import numbers
import statistics
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

Formatter = Union[str, Callable[[Any], str]]

# Fields of ``final`` (or of the run itself) averaged over seeds by `summarize_runs`.
MEAN_FIELDS = ("active_weights", "total_weights", "flops", "itop_rate", "duration_s")

COMPARISON_COLUMNS: list[tuple[str, str]] = [
    ("method", "method"),
    ("density", "density"),
    ("n_seeds", "seeds"),
    ("test_acc", "test acc"),
    ("active_weights", "active weights"),
    ("flops", "FLOPs"),
    ("itop_rate", "ITOP"),
    ("duration_s", "time (s)"),
]


def format_value(value: Any, fmt: Formatter | None = None) -> str:
    """One table cell: ``fmt`` (a format spec or a function) if given, else a sensible default.

    Floats get 4 significant digits, integers thousands separators, None a dash.
    """
    if value is None:
        return "-"
    if fmt is not None:
        return fmt(value) if callable(fmt) else format(value, fmt)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        return f"{float(value):.4g}"
    return str(value)


def format_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[tuple[str, str]],
    *,
    formats: Mapping[str, Formatter] | None = None,
    align: Mapping[str, str] | None = None,
) -> str:
    """An aligned plain-text table of ``rows``; ``columns`` are ``(key, header)`` pairs.

    ``formats`` maps a key to a format spec (``".2f"``) or a function; ``align`` maps a key
    to ``"<"`` or ``">"`` (default: numbers right, everything else left).
    """
    formats = formats or {}
    align = dict(align or {})
    cells = [[format_value(row.get(key), formats.get(key)) for key, _ in columns] for row in rows]
    headers = [header for _, header in columns]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    sides = [align.get(key) or _default_align(rows, key) for key, _ in columns]

    def line(values: Iterable[str]) -> str:
        parts = [f"{v:{side}{w}}" for v, side, w in zip(values, sides, widths)]
        return "  ".join(parts).rstrip()

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def summarize_runs(
    runs: Sequence[Mapping[str, Any]],
    group_by: Sequence[str] = ("method", "density"),
    *,
    include_runs: bool = False,
) -> list[dict[str, Any]]:
    """One dict per group of runs with equal ``group_by`` values, in order of first appearance.

    Each has the ``group_by`` keys, ``n_seeds`` (runs in the group), ``test_acc_mean`` and
    ``test_acc_std`` (sample std, 0 for one run), and the mean of each of `MEAN_FIELDS`
    (None where no run has it); with ``include_runs``, also ``runs``, the group's run dicts.
    Runs without ``final`` metrics are left out.
    """
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for run in runs:
        if not run.get("final"):
            continue
        key = tuple(_lookup(run, k) for k in group_by)
        groups.setdefault(key, []).append(run)

    summary = []
    for key in groups:
        members = groups[key]
        accs = [float(a) for a in (_lookup(r, "test_acc") for r in members) if a is not None]
        row: dict[str, Any] = dict(zip(group_by, key))
        row["n_seeds"] = len(members)
        row["test_acc_mean"] = statistics.fmean(accs) if accs else None
        row["test_acc_std"] = statistics.stdev(accs) if len(accs) > 1 else (0.0 if accs else None)
        for field in MEAN_FIELDS:
            values = [float(v) for v in (_lookup(r, field) for r in members) if v is not None]
            row[field] = statistics.fmean(values) if values else None
        if include_runs:
            row["runs"] = list(members)
        summary.append(row)
    return summary


def comparison_rows(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The rows of `comparison_table` as formatted strings, keyed like `COMPARISON_COLUMNS`."""
    rows = []
    for s in summarize_runs(runs, group_by=("method", "density")):
        rows.append({
            "method": format_value(s["method"]),
            "density": format_value(s["density"], ".4g"),
            "n_seeds": format_value(s["n_seeds"]),
            "test_acc": format_accuracy(s["test_acc_mean"], s["test_acc_std"]),
            "active_weights": format_value(s["active_weights"], lambda v: f"{round(v):,}"),
            "flops": format_value(s["flops"], human_count),
            "itop_rate": format_value(s["itop_rate"], ".3f"),
            "duration_s": format_value(s["duration_s"], ".1f"),
        })
    return rows


def comparison_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """A text table comparing methods: accuracy (mean ± std over seeds, in %), size, cost."""
    right = {key: ">" for key, _ in COMPARISON_COLUMNS if key != "method"}
    return format_table(comparison_rows(runs), COMPARISON_COLUMNS, align=right)


def format_accuracy(mean: float | None, std: float | None) -> str:
    """A 0-1 accuracy as ``"91.23 ± 0.45"`` (percent)."""
    if mean is None:
        return "-"
    return f"{100 * mean:.2f} ± {100 * (std or 0.0):.2f}"


def human_count(value: float) -> str:
    """A large count with a K/M/G/T suffix, e.g. ``1.23M``."""
    for threshold, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= threshold:
            return f"{value / threshold:.3g}{suffix}"
    return f"{value:.3g}"


def _lookup(run: Mapping[str, Any], key: str) -> Any:
    # A field may live on the run row, in its final metrics, or only in its config.
    if run.get(key) is not None:
        return run[key]
    for part in ("final", "config"):
        section = run.get(part)
        if isinstance(section, Mapping) and section.get(key) is not None:
            return section[key]
    return None


def _default_align(rows: Sequence[Mapping[str, Any]], key: str) -> str:
    values = [row.get(key) for row in rows if row.get(key) is not None]
    numeric = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values)
    return ">" if values and numeric else "<"
