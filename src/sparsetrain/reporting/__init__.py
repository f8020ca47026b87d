"""Tables, plots and HTML reports built only from the results store's run dicts."""

from sparsetrain.reporting.html import write_html_report
from sparsetrain.reporting.plots import plot_comparison
from sparsetrain.reporting.pruning import level_table
from sparsetrain.reporting.tables import (
    comparison_rows,
    comparison_table,
    format_table,
    summarize_runs,
)

from sparsetrain.reporting.study import (
    plot_accuracy_vs_density,
    plot_layer_densities,
    study_groups,
    study_rows,
    study_table,
    write_study_report,
)

__all__ = [
    "comparison_rows",
    "comparison_table",
    "format_table",
    "level_table",
    "plot_comparison",
    "summarize_runs",
    "write_html_report",
    "plot_accuracy_vs_density",
    "plot_layer_densities",
    "study_groups",
    "study_rows",
    "study_table",
    "write_study_report",
]
