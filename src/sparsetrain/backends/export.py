"""A truly sparse inference model on disk: safetensors for values and indices, a JSON manifest.

The folder holds ``model.safetensors`` (every tensor of the model's state: a sparse layer's
``values``, ``indptr`` and ``indices``, biases, dense layers and buffers) and
``manifest.json`` (format, the registered model and its options when known, and each
sparse layer's type, shape, active weights and convolution settings). `load_exported`
rebuilds the model with sparse layers and predicts exactly as the exported one did.

A shrunk model (`sparsetrain.backends.shrink.shrink`) is written the same way in its own
format: `export_shrunk` records the registered model, the input shape and the channel cuts;
`load_shrunk` builds the model, makes the same cuts (Torch-Pruning's dependency graph) and
loads the weights.
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
SHRUNK_FORMAT = "sparsetrain-shrunk/1"
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


def read_manifest(folder: str | Path, fmt: str = FORMAT) -> dict[str, Any]:
    """The manifest of an export folder, checked: a UserError naming the file when it is
    missing, not JSON, of another format than ``fmt`` or not shaped as `export_model` (or
    `export_shrunk`) writes it."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise UserError(f"{str(path)!r} does not exist; give the folder written by `sparsetrain export`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise UserError(f"{str(path)!r} is not a JSON manifest ({type(exc).__name__})") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{str(path)!r} must hold a JSON object; it holds a {type(manifest).__name__}")
    if manifest.get("format") != fmt:
        hint = {FORMAT: "load it with load_exported", SHRUNK_FORMAT: "load it with load_shrunk"}.get(
            manifest.get("format"), f"this reads {fmt!r}")
        raise UserError(f"{str(path)!r} has format {manifest.get('format')!r}; {hint}")
    problem = _manifest_problem(manifest) if fmt == FORMAT else _shrunk_problem(manifest)
    if problem:
        raise UserError(f"{str(path)!r} is damaged: {problem}")
    return manifest


def _manifest_problem(manifest: dict[str, Any]) -> str | None:
    """What is wrong with the fields `load_exported` reads, or None."""
    spec = manifest.get("model")
    if spec is not None:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            return "'model' must be null or an object with a string 'name'"
        if not isinstance(spec.get("options") or {}, dict):
            return "'model.options' must be an object"
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not layers:
        return "'layers' must be a non-empty list"
    for i, entry in enumerate(layers):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            return f"layer {i} must be an object with a non-empty string 'name'"
        nnz = entry.get("nnz")
        if isinstance(nnz, bool) or not isinstance(nnz, int) or nnz < 0:
            return f"layer {entry['name']!r} must give 'nnz' as a whole number >= 0"
    return None


def read_tensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a damaged file is a UserError naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{str(path)!r} does not exist; give the folder written by `sparsetrain export`")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise UserError(f"{str(path)!r} is not a readable safetensors file: {reason}") from None


def load_exported(folder: str | Path, model: nn.Module | None = None,
                  map_location: str | torch.device = "cpu") -> nn.Module:
    """The exported model, in eval mode. Pass ``model`` (the dense architecture) when the
    export did not record a registered model. Every file is checked (manifest fields, tensor
    names, shapes and dtypes, each sparse layer's CSR structure) before a kernel uses it; a
    damaged one is a UserError naming the file."""
    manifest = read_manifest(folder)
    tensors_path = Path(folder) / TENSORS
    if model is None:
        model = _registered_model(manifest, Path(folder) / MANIFEST)
    names = [e["name"] for e in manifest["layers"]]
    try:
        to_sparse(model, None, names)
    except (UserError, AttributeError, KeyError, ValueError, TypeError) as exc:
        raise UserError(f"{str(Path(folder) / MANIFEST)!r} lists layers the model does not have as "
                        f"Linear/Conv layers ({names[0]!r} ...): {exc}") from None
    tensors = read_tensors(tensors_path, map_location)
    for entry in manifest["layers"]:
        values = tensors.get(entry["name"] + ".values")
        if values is not None and values.numel() != entry["nnz"]:
            raise UserError(f"{str(tensors_path)!r} holds {values.numel()} values for layer "
                            f"{entry['name']!r}, but {str(Path(folder) / MANIFEST)!r} says {entry['nnz']}")
    load_state(model, tensors, tensors_path)
    return model.to(map_location).eval()


def load_state(model: nn.Module, state: dict[str, Any], path: str | Path) -> None:
    """``model.load_state_dict(state)`` (strict), turning any mismatch or damaged sparse layer
    into a UserError naming ``path``, the file the state came from."""
    try:
        model.load_state_dict(state)
    except UserError as exc:
        raise UserError(f"{str(path)!r} is damaged: {exc}") from None
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise UserError(f"{str(path)!r} does not match the model: {reason}") from None


def sparse_model_from_state(model: nn.Module, state: dict[str, torch.Tensor],
                            path: str | Path = "the checkpoint") -> nn.Module:
    """Load a training checkpoint's model state (masked or sparse backend) into the dense
    ``model`` and return it with sparse layers; ``path`` (the file) names it in errors."""
    model = masked_model_from_state(model, state, path)
    to_sparse(model)  # the masked layers
    return model


def masked_model_from_state(model: nn.Module, state: dict[str, torch.Tensor],
                            path: str | Path = "the checkpoint") -> nn.Module:
    """Load a training checkpoint's model state into the dense ``model``: masked layers get
    their ``weight_mask`` buffers, sparse-backend layers stay sparse; ``path`` names it in errors."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise UserError(f"{str(path)!r} is damaged: its model state is not a mapping of names to tensors")
    state = dict(state)
    try:
        for key, value in state.items():
            if key.endswith("weight_mask"):
                module_name = key[: -len(".weight_mask")] if "." in key else ""
                module = model.get_submodule(module_name)
                if tuple(value.shape) != tuple(module.weight.shape):
                    raise ValueError(f"{key} has shape {tuple(value.shape)}, the weight {tuple(module.weight.shape)}")
                module.register_buffer("weight_mask", torch.zeros_like(value))
        sparse_names = [k[: -len(".values")] for k in state if k.endswith(".values")]
        if sparse_names:
            to_sparse(model, None, sparse_names)
    except (UserError, AttributeError, KeyError, ValueError, TypeError) as exc:
        raise UserError(f"{str(path)!r} does not match the model: {exc}") from None
    load_state(model, state, path)
    return model


def export_shrunk(small: nn.Module, folder: str | Path, *, model_spec: dict[str, Any] | None = None) -> Path:
    """Write a model made by `shrink` to ``folder`` (``model.safetensors`` and ``manifest.json``:
    the registered model, the input shape and the cuts that rebuild its architecture, each
    layer's channels, the tensors' SHA-256); returns the folder. The tensors are written first and
    the manifest last, each atomically: a folder is only readable once both match."""
    import hashlib

    from safetensors.torch import save

    summary = getattr(small, "shrink_summary", None)
    if summary is None:
        raise UserError("export_shrunk writes a model made by st.shrink; this one has no shrink_summary")
    data = save({k: v.detach().cpu().contiguous().clone() for k, v in small.state_dict().items()})
    manifest = {"format": SHRUNK_FORMAT, "model": model_spec, "input_shape": list(summary.input_shape),
                "cuts": [[root, bool(out), list(idxs)] for root, out, idxs in summary.history],
                "layers": [{"name": r.name, "out": [r.out_before, r.out_after], "in": [r.in_before, r.in_after]}
                           for r in summary.layers],
                "parameters": [summary.params_before, summary.params_after],
                "sha256": hashlib.sha256(data).hexdigest()}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / TENSORS, data)
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return folder


def load_shrunk(folder: str | Path, model: nn.Module | None = None,
                map_location: str | torch.device = "cpu") -> nn.Module:
    """The shrunk model `export_shrunk` wrote, in eval mode: the registered model is built
    (or ``model``, the unshrunk architecture, is used), cut as the manifest says and loaded
    with the weights. A damaged or mismatched folder is a UserError naming the file."""
    import hashlib

    from sparsetrain.backends.shrink import rebuild

    manifest = read_manifest(folder, SHRUNK_FORMAT)
    manifest_path, tensors_path = Path(folder) / MANIFEST, Path(folder) / TENSORS
    if model is None:
        model = _registered_model(manifest, manifest_path)
    if tensors_path.is_file() and hashlib.sha256(tensors_path.read_bytes()).hexdigest() != manifest["sha256"]:
        raise UserError(f"{str(tensors_path)!r} does not belong to {str(manifest_path)!r} (its SHA-256 differs); "
                        "export again")
    try:
        rebuild(model, manifest["cuts"], manifest["input_shape"])
    except UserError:
        raise
    except (AttributeError, IndexError, KeyError, RuntimeError, TypeError, ValueError) as exc:
        raise UserError(f"{str(manifest_path)!r} lists cuts the model does not have: "
                        f"{(str(exc).splitlines() or [type(exc).__name__])[0][:200]}") from None
    load_state(model, read_tensors(tensors_path, map_location), tensors_path)
    return model.to(map_location).eval()


def _registered_model(manifest: dict[str, Any], manifest_path: Path) -> nn.Module:
    """The registered model a manifest names, built with its options."""
    spec = manifest.get("model")
    if not spec:
        raise UserError("the export records no registered model; pass model= (the dense architecture)")
    from sparsetrain.models import create

    options = dict(spec.get("options") or {})
    if "input_shape" in options:
        options["input_shape"] = tuple(options["input_shape"])
    try:
        return create(spec["name"], **options)
    except UserError as exc:
        raise UserError(f"{str(manifest_path)!r} names a model that cannot be built: {exc}") from None
    except (TypeError, ValueError, RuntimeError) as exc:
        raise UserError(f"{str(manifest_path)!r} names a model that cannot be built: "
                        f"{(str(exc).splitlines() or [''])[0][:200]}") from None


def _shrunk_problem(manifest: dict[str, Any]) -> str | None:
    """What is wrong with the fields `load_shrunk` reads, or None."""
    spec = manifest.get("model")
    if spec is not None and (not isinstance(spec, dict) or not isinstance(spec.get("name"), str)
                             or not isinstance(spec.get("options") or {}, dict)):
        return "'model' must be null or an object with a string 'name' and an object 'options'"
    shape = manifest.get("input_shape")
    if not isinstance(shape, list) or not shape or not all(type(s) is int and s > 0 for s in shape):
        return "'input_shape' must be a list of positive whole numbers"
    cuts = manifest.get("cuts")
    if not isinstance(cuts, list) or not all(
            isinstance(c, list) and len(c) == 3 and isinstance(c[0], str) and isinstance(c[1], bool)
            and isinstance(c[2], list) and all(type(i) is int and i >= 0 for i in c[2]) for c in cuts):
        return "'cuts' must be a list of [layer name, true/false, [channel indices]]"
    if not isinstance(manifest.get("sha256"), str):
        return "'sha256' must be the tensors file's SHA-256 as text"
    return None
