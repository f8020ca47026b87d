"""Plain-text tables of experiments: one row per configuration over its seeds (`groups`).

Everything here reads run dicts as returned by `ResultsStore.get_run` / `ResultsStore.runs`:
top-level ``method``, ``density``, ``duration_s`` ... a ``config`` and a ``final`` dict of metrics.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

from sparsetrain.reporting.groups import (
    DENSE,
    diff_keys,
    experiment_groups,
    format_setting,
    short_ids,
)

Formatter = Union[str, Callable[[Any], str]]

TEXT_COLUMNS = ("setup", "scenario", "method", "runs")
"""Columns aligned left; every other column (numbers, hyperparameters) aligns right."""

COMPARISON_COLUMNS: list[tuple[str, str]] = [
    ("method", "method"),
    ("density", "density"),
    ("n_seeds", "seeds"),
    ("test_acc", "test acc (%)"),
    ("delta", "Δ vs dense"),
    ("active_weights", "active weights"),
    ("flops", "FLOPs"),
    ("itop_rate", "ITOP"),
    ("duration_s", "time (s)"),
    ("runs", "runs"),
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


def summarize_runs(runs: Sequence[Mapping[str, Any]], *, include_runs: bool = False) -> list[dict[str, Any]]:
    """One dict per experiment (`groups.experiment_groups`: one configuration minus the seed),
    with ``n_seeds`` distinct seeds, ``test_acc_mean``/``test_acc_std`` (None below two seeds)
    and the seed mean of each of `MEAN_FIELDS`; without ``include_runs`` the ``runs`` key is
    dropped. Runs that did not finish are left out."""
    groups = experiment_groups(runs)
    if not include_runs:
        for group in groups:
            group.pop("runs")
    return groups


def experiment_cells(group: Mapping[str, Any], keys: Sequence[str], ids: Mapping[str, str]) -> dict[str, str]:
    """Every table cell of one experiment row, as strings: the label columns, one per
    hyperparameter of ``keys`` ("-" where the method has no such option), accuracies in %,
    Δ vs dense ("no dense run" without one), sizes, cost, and the short run ids ``ids``."""
    cells = {
        "setup": group["setup"], "scenario": group["scenario"], "method": str(group["method"]),
        "density": "1" if group["density"] is None else f"{group['density']:.4g}",
        "n_seeds": str(group["n_seeds"]),
        "test_acc": format_accuracy(group["test_acc_mean"], group["test_acc_std"]),
        "dense_acc": ("-" if group["dense"] is None
                      else format_accuracy(group["dense_acc_mean"], group["dense_acc_std"])),
        "delta": _delta(group),
        "active_weights": format_value(group["active_weights"], lambda v: f"{round(v):,}"),
        "flops": format_value(group["flops"], human_count),
        "itop_rate": format_value(group["itop_rate"], ".3f"),
        "duration_s": format_value(group["duration_s"], ".1f"),
        "runs": " ".join(ids.get(i, i) for i in group["run_ids"]),
    }
    for key in keys:
        cells[f"config.{key}"] = format_setting(group["config"][key]) if key in group["config"] else "-"
    return cells


def comparison_rows(
    runs: Sequence[Mapping[str, Any]], *, among: Sequence[str] | None = None
) -> tuple[list[dict[str, str]], list[tuple[str, str]]]:
    """Rows and columns of `comparison_table`: setup, scenario when it varies, method,
    density, the hyperparameters that tell rows apart, seeds, accuracy, Δ vs dense, size,
    cost and run ids (the shortest prefixes unique among ``among``, default all ``runs``)."""
    groups = experiment_groups(runs)
    keys = diff_keys(groups)
    ids = _short_ids(groups, runs, among)
    columns = [("setup", "setup")] + ([("scenario", "scenario")] if len({g["scenario"] for g in groups}) > 1 else [])
    columns += [("method", "method"), ("density", "density"), *[(f"config.{k}", k) for k in keys]]
    columns += [c for c in COMPARISON_COLUMNS if c[0] not in ("method", "density")]
    return [experiment_cells(g, keys, ids) for g in groups], columns


def comparison_table(runs: Sequence[Mapping[str, Any]], *, among: Sequence[str] | None = None) -> str:
    """A text table with one row per experiment (a configuration, over its seeds): accuracy
    in % (± std only with two or more seeds), Δ vs the dense run of the same training
    settings, size, cost and the run ids `sparsetrain show` accepts."""
    rows, columns = comparison_rows(runs, among=among)
    right = {key: ">" for key, _ in columns if key not in TEXT_COLUMNS}
    return format_table(rows, columns, align=right)


def _short_ids(groups: Sequence[Mapping[str, Any]], runs: Sequence[Mapping[str, Any]],
               among: Sequence[str] | None) -> dict[str, str]:
    wanted = [i for g in groups for i in g["run_ids"]]
    pool = list(among) if among is not None else [str(r.get("run_id")) for r in runs]
    return dict(zip(wanted, short_ids(wanted, pool)))


def _delta(group: Mapping[str, Any]) -> str:
    if group["method"] == DENSE:
        return "-"
    if group["dense"] is None:
        return "no dense run"
    return "-" if group["delta"] is None else f"{100 * group['delta']:+.2f}"


def format_accuracy(mean: float | None, std: float | None) -> str:
    """A 0-1 accuracy in percent: ``"91.23 ± 0.45"``, or ``"91.23"`` when ``std`` is None
    (fewer than two seeds: there is no spread to show)."""
    if mean is None:
        return "-"
    return f"{100 * mean:.2f}" if std is None else f"{100 * mean:.2f} ± {100 * std:.2f}"


def human_count(value: float) -> str:
    """A large count with a K/M/G/T suffix, e.g. ``1.23M``."""
    for threshold, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= threshold:
            return f"{value / threshold:.3g}{suffix}"
    return f"{value:.3g}"


def _default_align(rows: Sequence[Mapping[str, Any]], key: str) -> str:
    values = [row.get(key) for row in rows if row.get(key) is not None]
    numeric = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values)
    return ">" if values and numeric else "<"
