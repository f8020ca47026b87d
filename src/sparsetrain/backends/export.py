"""A truly sparse inference model on disk: safetensors for values and indices, a JSON manifest.

The folder holds ``model.safetensors`` (every tensor of the model's state: a sparse layer's
``values``, ``indptr`` and ``indices``, biases, dense layers and buffers) and
``manifest.json`` (format, the registered model and its options when known, and each
sparse layer's type, shape, active weights and convolution settings). `load_exported`
rebuilds the model with sparse layers and predicts exactly as the exported one did.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparsetrain.atomic import atomic_write_bytes, atomic_write_text
from sparsetrain.backends.sparse import SparseLayer, to_sparse
from sparsetrain.errors import UserError

FORMAT = "sparsetrain-sparse/1"
TENSORS, MANIFEST = "model.safetensors", "manifest.json"


def _layer_entry(name: str, layer: SparseLayer) -> dict[str, Any]:
    entry = {"name": name, "type": type(layer).__name__, "shape": list(layer.weight_shape),
             "nnz": layer.nnz, "density": layer.density, "bias": layer.bias is not None}
    for attr in ("kernel_size", "stride", "padding", "dilation"):
        if hasattr(layer, attr) and not isinstance(layer, nn.Linear):
            value = getattr(layer, attr)
            entry[attr] = value if isinstance(value, str) else list(value)
    return entry


def export_model(model: nn.Module, folder: str | Path, *, model_spec: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (its sparse layers as CSR) to ``folder``; returns the folder.

    ``model_spec`` (``{"name": ..., "options": {...}}`` of a registered model) lets
    `load_exported` rebuild the architecture without being given it.
    """
    from safetensors.torch import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layers = [_layer_entry(n, m) for n, m in model.named_modules() if isinstance(m, SparseLayer)]
    if not layers:
        raise UserError("the model has no sparse layer to export; convert it with to_sparse() first")
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write_bytes(folder / TENSORS, save(tensors))
    manifest = {"format": FORMAT, "model": model_spec, "layers": layers,
                "active_weights": sum(e["nnz"] for e in layers),
                "total_weights": sum(int(torch.tensor(e["shape"]).prod()) for e in layers)}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return folder


def read_manifest(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise UserError(f"{str(path)!r} does not exist; give the folder written by `sparsetrain export`")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT:
        raise UserError(f"{str(path)!r} has format {manifest.get('format')!r}; this version reads {FORMAT!r}")
    return manifest


def load_exported(folder: str | Path, model: nn.Module | None = None,
                  map_location: str | torch.device = "cpu") -> nn.Module:
    """The exported model, in eval mode. Pass ``model`` (the dense architecture) when the
    export did not record a registered model."""
    from safetensors.torch import load_file

    manifest = read_manifest(folder)
    if model is None:
        spec = manifest.get("model")
        if not spec:
            raise UserError("the export records no registered model; pass model= (the dense architecture)")
        from sparsetrain.models import create
        options = dict(spec.get("options") or {})
        if "input_shape" in options:
            options["input_shape"] = tuple(options["input_shape"])
        model = create(spec["name"], **options)
    to_sparse(model, None, [e["name"] for e in manifest["layers"]])
    model.load_state_dict(load_file(str(Path(folder) / TENSORS), device=str(map_location)))
    return model.to(map_location).eval()


def sparse_model_from_state(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Load a training checkpoint's model state (masked or sparse backend) into the dense
    ``model`` and return it with sparse layers."""
    state = dict(state)
    for key, value in state.items():
        if key.endswith("weight_mask"):
            module_name = key[: -len(".weight_mask")] if "." in key else ""
            module = model.get_submodule(module_name)
            module.register_buffer("weight_mask", torch.zeros_like(value))
    sparse_names = [k[: -len(".values")] for k in state if k.endswith(".values")]
    if sparse_names:
        to_sparse(model, None, sparse_names)
    model.load_state_dict(state)
    to_sparse(model)  # the masked layers
    return model


def export_run(record: dict[str, Any], root: str | Path, to: str | Path | None = None) -> Path:
    """Export the run of store row ``record`` (under results folder ``root``) from its last
    checkpoint; returns the folder written (default ``<run folder>/export``)."""
    from sparsetrain.data import load
    from sparsetrain.engine.checkpoint import load_checkpoint
    from sparsetrain.experiments.rundir import RunDir
    from sparsetrain.models import create

    config = record["config"]
    run_dir = RunDir(root, record["config_hash"], record["seed"])
    if not run_dir.last_checkpoint.is_file():
        raise UserError(f"run {record['run_id']} has no checkpoint at {str(run_dir.last_checkpoint)!r}")
    data = load(config["dataset"], seed=config["seed"], val_fraction=config["val_fraction"],
                data_dir=config.get("data_dir"), **(config.get("dataset_options") or {}))
    options = {"input_shape": tuple(data.input_shape), "num_classes": data.num_classes,
               **(config.get("model_options") or {})}
    model = create(config["model"], **options)
    state = load_checkpoint(run_dir.last_checkpoint)["model"]
    model = sparse_model_from_state(model, state)
    if not any(isinstance(m, SparseLayer) for m in model.modules()):
        raise UserError(f"run {record['run_id']} trained a dense model (method {config.get('method')!r}); "
                        "nothing sparse to export")
    return export_model(model, Path(to) if to else run_dir.path / "export",
                        model_spec={"name": config["model"], "options": options})
