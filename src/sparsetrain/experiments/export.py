"""Export a run: find its model and last checkpoint through the store, write it truly sparse
or shrunk to a smaller dense model.

(Moved here from `backends/export.py`, which now knows only models and files: runs, stores
and data sets belong to this floor.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from sparsetrain.backends.export import export_model, export_shrunk, masked_model_from_state
from sparsetrain.backends.sparse import SparseLayer, to_sparse
from sparsetrain.errors import UserError


def export_run(record: dict[str, Any], root: str | Path, to: str | Path | None = None, *,
               shrink: bool = False, log: Any = print) -> Path:
    """Export the run of store row ``record`` (under results folder ``root``) from its last
    checkpoint; returns the folder written (default ``<run folder>/export``, or
    ``<run folder>/shrunk`` with ``shrink``: the model without its dead channels, whose
    summary goes to ``log``). The row's text is checked before it builds a path or a model;
    nothing is written until the model to write is complete."""
    from sparsetrain.backends.shrink import shrink as shrink_model

    model, options, run_dir, input_shape = run_model(record, root)
    spec = {"name": record["config"]["model"], "options": options}
    if shrink:
        small = shrink_model(model, input_shape)
        log(str(small.shrink_summary))
        return export_shrunk(small, Path(to) if to else run_dir.path / "shrunk", model_spec=spec)
    to_sparse(model)  # the masked layers
    if not any(isinstance(m, SparseLayer) for m in model.modules()):
        raise UserError(f"run {record['run_id']} trained a dense model (method "
                        f"{record['config'].get('method')!r}); nothing sparse to export")
    return export_model(model, Path(to) if to else run_dir.path / "export", model_spec=spec)


def run_model(record: dict[str, Any], root: str | Path) -> tuple[nn.Module, dict[str, Any], Any, tuple[int, ...]]:
    """The model of a stored run with its last checkpoint loaded (masks as ``weight_mask``
    buffers), its model options, its `RunDir` and its input shape."""
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
    model = masked_model_from_state(model, state["model"], run_dir.last_checkpoint)
    return model, options, run_dir, tuple(data.input_shape)
