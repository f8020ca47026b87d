"""What a sparse model costs: per-layer densities, sparse-aware FLOPs and totals.

FLOPs are per sample for one forward pass, counting one multiply-accumulate as 2 FLOPs,
over the Linear and Conv weights only (biases, norms and activations are not counted).
A weight that is masked out costs nothing, so a layer's FLOPs are 2 · active weights ·
output positions (spatial positions for a conv, tokens for a linear layer). The shrunk
FLOPs are those of the smaller dense model `sparsetrain.backends.shrink.shrink` makes by
removing dead channels, run dense (every weight of a kept channel costs, masked or not).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from sparsetrain.sparse import prunable_layers, registered_weights, tied_names

FLOPS_NOTE = "FLOPs per sample, forward pass; 1 multiply-accumulate = 2 FLOPs; Linear/Conv weights only"


def _output_positions(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Number of output positions each Linear/Conv layer computes for one sample."""
    positions: dict[str, int] = {}
    hooks = []
    for name, module in prunable_layers(model):
        def record(mod: nn.Module, _inp: Any, out: torch.Tensor, name: str = name) -> None:
            channels = mod.out_features if isinstance(mod, nn.Linear) else mod.out_channels
            positions[name] = out.numel() // channels
        hooks.append(module.register_forward_hook(record))
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return positions


def layer_table(model: nn.Module, input_shape: tuple[int, ...], structure: str | None = None) -> list[dict[str, Any]]:
    """One row per Linear/Conv layer: name, shape, structure, total, active, density, channels,
    active_channels, flops, dense_flops and shrunk_flops.

    Active weights are read from the ``weight_mask`` buffer when present (else all count).
    ``structure`` is the run's structure option (a layer with a mask has it, "unstructured"
    when None; a layer without one is "dense"). Active channels are the output channels with
    any active weight. ``shrunk_flops`` is what the layer costs, run dense, in the model
    `sparsetrain.backends.shrink.shrink` would make (the dead channels removed); None when
    shrink cannot handle the model (no Conv layer, or one its dependency graph cannot trace).
    """
    positions = _output_positions(model, input_shape)
    kept = _shrunk_channels(model, input_shape)
    rows = []
    for name, module in prunable_layers(model):
        mask = getattr(module, "weight_mask", None)
        weight = module.weight
        total = weight.numel()
        active = int(mask.sum()) if mask is not None else total
        per_position = positions.get(name, 0)
        out = weight.shape[0]
        live = int(mask.reshape(out, -1).any(dim=1).sum()) if mask is not None else out
        rows.append({
            "name": f"{name}.weight" if name else "weight",
            "shape": list(weight.shape),
            "structure": (structure or "unstructured") if mask is not None else "dense",
            "total": total,
            "active": active,
            "density": active / total,
            "channels": out,
            "active_channels": live,
            "flops": 2 * active * per_position,
            "dense_flops": 2 * total * per_position,
            "shrunk_flops": None if kept is None else 2 * _shrunk_size(module, *kept[name]) * per_position,
        })
    return rows


def _shrunk_channels(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, tuple[int, int]] | None:
    from sparsetrain.backends.shrink import shrunk_channels

    return shrunk_channels(model, input_shape)


def _shrunk_size(module: nn.Module, out: int, inp: int) -> int:
    """Weights of ``module`` with ``out`` output and ``inp`` input channels (a grouped conv's
    filters see one group of inputs each; a depthwise one keeps one input per filter)."""
    weight = module.weight
    if isinstance(module, nn.Linear):
        return out * inp
    per_filter = weight[0].numel()
    groups = getattr(module, "groups", 1)
    if groups > 1:
        return out * per_filter
    return out * inp * (per_filter // weight.shape[1])


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Sums over the layer table: active/total weights, overall density, FLOPs, dense FLOPs."""
    total = sum(r["total"] for r in rows)
    active = sum(r["active"] for r in rows)
    flops = sum(r["flops"] for r in rows)
    dense_flops = sum(r["dense_flops"] for r in rows)
    shrunk = [r.get("shrunk_flops") for r in rows]
    return {"total_weights": total, "active_weights": active,
            "density": active / total if total else 1.0, "flops": flops, "dense_flops": dense_flops,
            "flops_fraction": flops / dense_flops if dense_flops else 1.0,
            "shrunk_flops": sum(shrunk) if shrunk and None not in shrunk else None}


def describe(rows: list[dict[str, Any]], itop_rate: float | None = None) -> str:
    """A printable per-layer table with totals, the FLOPs convention and the ITOP rate; with the
    structure, active / total output channels and the shrunk model's FLOPs when the rows hold
    them (rows stored before those columns existed print without them)."""
    channels = all("active_channels" in r for r in rows)
    header = f"{'layer':<32} {'shape':<18} {'density':>8} {'active':>10} {'FLOPs':>12}"
    if channels:
        header += f"  {'structure':<12} {'channels':>11} {'shrunk FLOPs':>13}"
    lines = [header, "-" * len(header)]
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        line = f"{r['name']:<32} {shape:<18} {r['density']:>8.4f} {r['active']:>10,d} {r['flops']:>12,d}"
        if channels:
            line += (f"  {str(r.get('structure')):<12} {r['active_channels']:>5,d}/{r['channels']:<5,d} "
                     f"{_count(r.get('shrunk_flops')):>13}")
        lines.append(line)
    t = totals(rows)
    lines.append("-" * len(header))
    lines.append(f"{'total':<32} {'':<18} {t['density']:>8.4f} {t['active_weights']:>10,d} {t['flops']:>12,d}")
    lines.append(f"({FLOPS_NOTE}; dense model: {t['dense_flops']:,d} FLOPs, "
                 f"sparse/dense = {t['flops_fraction']:.4f})")
    if channels and t["shrunk_flops"] is not None and t["shrunk_flops"] < t["dense_flops"]:
        lines.append(f"shrunk model (st.shrink, dead channels removed, run dense): {t['shrunk_flops']:,d} FLOPs, "
                     f"shrunk/dense = {t['shrunk_flops'] / t['dense_flops']:.4f}")
    if itop_rate is not None and not math.isnan(itop_rate):
        lines.append(f"ITOP rate (fraction of sparsified weights ever active): {itop_rate:.4f}")
    return "\n".join(lines)


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,d}"


class Summary(list):
    """`summary`'s rows (dicts); ``str()`` prints them as a table with a total line."""

    def __str__(self) -> str:
        header = f"{'weight':<40} {'type':<12} {'shape':<14} {'active':>10} {'total':>10} {'density':>8}  state"
        lines = [header, "-" * len(header)]
        for r in self:
            shape = "x".join(map(str, r["shape"]))
            lines.append(f"{r['name']:<40} {r['type']:<12} {shape:<14} {r['active']:>10,d} {r['total']:>10,d} "
                         f"{r['density']:>8.4f}  {r['state']}")
        sparse = [r for r in self if r["state"].startswith("sparse")]
        total, active = sum(r["total"] for r in sparse), sum(r["active"] for r in sparse)
        lines.append("-" * len(header))
        lines.append(f"{len(sparse)} of {len(self)} registered weights sparse; "
                     f"density of the sparse ones {active / total if total else 1.0:.4f}")
        return "\n".join(lines)


def summary(model: nn.Module) -> Summary:
    """One row per weight of a registered layer type (see `sparsetrain.sparse.register_layer`):
    name, type, shape, total, active, density, and state ("sparse", or "dense" with the
    parameter it is tied to). A weight is sparse when it has a mask: the masked backend's
    ``<weight>_mask`` buffer, or a sparse-backend layer."""
    ties = tied_names(model)
    rows = Summary()
    candidates = {(id(c.module), c.param): c for c in registered_weights(model)}
    masks = {id(getattr(c.module, c.param)): getattr(c.module, c.param + "_mask") for c in candidates.values()
             if getattr(c.module, c.param + "_mask", None) is not None}  # one mask serves every tied name
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        if hasattr(module, "nnz") and hasattr(module, "weight_mask"):  # a sparse-backend layer
            mask = module.weight_mask
            rows.append(_row(prefix + "weight", type(module).__name__, mask, "sparse (sparse backend)"))
            continue
        for (key, param), c in candidates.items():
            if key != id(module):
                continue
            weight = getattr(module, param)
            mask = masks.get(id(weight))
            name = prefix + param
            tied = ties.get(name)
            state = "sparse" if mask is not None else "dense"
            if tied:
                state += f" (tied to {', '.join(tied)})"
            rows.append(_row(name, c.kind.name, mask if mask is not None else weight, state, dense=mask is None))
    return rows


def _row(name: str, kind: str, mask: torch.Tensor, state: str, dense: bool = False) -> dict[str, Any]:
    total = mask.numel()
    active = total if dense else int(mask.sum())
    return {"name": name, "type": kind, "shape": list(mask.shape), "total": total, "active": active,
            "density": active / total if total else 1.0, "state": state}
