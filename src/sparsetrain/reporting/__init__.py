"""Tables, plots and HTML reports built only from the results store's run dicts.

Every table and figure shows one row per experiment (`groups.experiment_groups`: one
resolved configuration over its distinct seeds); runs that did not finish are listed apart.
"""

from sparsetrain.reporting.groups import experiment_groups, not_finished
from sparsetrain.reporting.html import write_html_report, write_study_report
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
)

__all__ = [
    "comparison_rows",
    "comparison_table",
    "experiment_groups",
    "format_table",
    "level_table",
    "not_finished",
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
