"""Tables of derived runs: accuracy per lottery-ticket level (reads store rows only)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from sparsetrain.reporting.tables import format_table

LEVEL_COLUMNS = [("level", "level"), ("method", "method"), ("density", "density"),
                 ("active_weights", "active weights"), ("val_acc", "val acc (%)"),
                 ("test_acc", "test acc (%)"), ("run_id", "run")]


def level_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """One row per level (runs with a ``level`` key, as `experiments.pruning.lottery_levels` gives)."""
    rows = []
    for r in runs:
        final = r.get("final") or {}
        rows.append({"level": r.get("level"), "method": r.get("method"),
                     "density": 1.0 if r.get("density") is None else float(r["density"]),
                     "active_weights": final.get("active_weights"),
                     "val_acc": _percent(final.get("val_acc")), "test_acc": _percent(final.get("test_acc")),
                     "run_id": r.get("run_id")})
    return format_table(rows, LEVEL_COLUMNS, formats={"density": ".4g", "val_acc": ".2f", "test_acc": ".2f"})


def _percent(value: Any) -> float | None:
    return None if value is None else 100 * float(value)
