"""Export a run: find its model and last checkpoint through the store, write it truly sparse.

(Moved here from `backends/export.py`, which now knows only models and files: runs, stores
and data sets belong to this floor.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sparsetrain.backends.export import export_model, sparse_model_from_state
from sparsetrain.backends.sparse import SparseLayer
from sparsetrain.errors import UserError


def export_run(record: dict[str, Any], root: str | Path, to: str | Path | None = None) -> Path:
    """Export the run of store row ``record`` (under results folder ``root``) from its last
    checkpoint; returns the folder written (default ``<run folder>/export``). The row's text
    is checked before it builds a path (`RunDir`) or a model."""
    from sparsetrain.data import load
    from sparsetrain.engine.checkpoint import load_checkpoint
    from sparsetrain.experiments.rundir import RunDir
    from sparsetrain.models import create

    config = record.get("config")
    if not isinstance(config, dict) or not all(isinstance(config.get(k), str) for k in ("dataset", "model")):
        raise UserError(f"run {record.get('run_id')!r} in the store has no readable config (dataset, model)")
    run_dir = RunDir(root, record["config_hash"], record["seed"])
    if not run_dir.last_checkpoint.is_file():
        raise UserError(f"run {record['run_id']} has no checkpoint at {str(run_dir.last_checkpoint)!r}")
    data = load(config["dataset"], seed=record["seed"], val_fraction=config.get("val_fraction", 0.1),
                data_dir=config.get("data_dir"), **(config.get("dataset_options") or {}))
    options = {"input_shape": tuple(data.input_shape), "num_classes": data.num_classes,
               **(config.get("model_options") or {})}
    model = create(config["model"], **options)
    state = load_checkpoint(run_dir.last_checkpoint)
    if "model" not in state:
        raise UserError(f"checkpoint {str(run_dir.last_checkpoint)!r} is damaged: it has no model state")
    model = sparse_model_from_state(model, state["model"], run_dir.last_checkpoint)
    if not any(isinstance(m, SparseLayer) for m in model.modules()):
        raise UserError(f"run {record['run_id']} trained a dense model (method {config.get('method')!r}); "
                        "nothing sparse to export")
    return export_model(model, Path(to) if to else run_dir.path / "export",
                        model_spec={"name": config["model"], "options": options})
