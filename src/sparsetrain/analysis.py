"""What a sparse model costs: per-layer densities, sparse-aware FLOPs and totals.

FLOPs are per sample for one forward pass, counting one multiply-accumulate as 2 FLOPs,
over the Linear and Conv weights only (biases, norms and activations are not counted).
A weight that is masked out costs nothing, so a layer's FLOPs are 2 · active weights ·
output positions (spatial positions for a conv, tokens for a linear layer).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from sparsetrain.sparse import prunable_layers

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


def layer_table(model: nn.Module, input_shape: tuple[int, ...]) -> list[dict[str, Any]]:
    """One row per Linear/Conv layer: name, shape, total, active, density, flops, dense_flops.

    Active weights are read from the ``weight_mask`` buffer when present (else all count).
    """
    positions = _output_positions(model, input_shape)
    rows = []
    for name, module in prunable_layers(model):
        mask = getattr(module, "weight_mask", None)
        total = module.weight.numel()
        active = int(mask.sum()) if mask is not None else total
        per_position = positions.get(name, 0)
        rows.append({
            "name": f"{name}.weight" if name else "weight",
            "shape": list(module.weight.shape),
            "total": total,
            "active": active,
            "density": active / total,
            "flops": 2 * active * per_position,
            "dense_flops": 2 * total * per_position,
        })
    return rows


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Sums over the layer table: active/total weights, overall density, FLOPs, dense FLOPs."""
    total = sum(r["total"] for r in rows)
    active = sum(r["active"] for r in rows)
    flops = sum(r["flops"] for r in rows)
    dense_flops = sum(r["dense_flops"] for r in rows)
    return {"total_weights": total, "active_weights": active,
            "density": active / total if total else 1.0, "flops": flops, "dense_flops": dense_flops,
            "flops_fraction": flops / dense_flops if dense_flops else 1.0}


def describe(rows: list[dict[str, Any]], itop_rate: float | None = None) -> str:
    """A printable per-layer table with totals, the FLOPs convention and the ITOP rate."""
    header = f"{'layer':<32} {'shape':<18} {'density':>8} {'active':>10} {'FLOPs':>12}"
    lines = [header, "-" * len(header)]
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        lines.append(f"{r['name']:<32} {shape:<18} {r['density']:>8.4f} {r['active']:>10,d} {r['flops']:>12,d}")
    t = totals(rows)
    lines.append("-" * len(header))
    lines.append(f"{'total':<32} {'':<18} {t['density']:>8.4f} {t['active_weights']:>10,d} {t['flops']:>12,d}")
    lines.append(f"({FLOPS_NOTE}; dense model: {t['dense_flops']:,d} FLOPs, "
                 f"sparse/dense = {t['flops_fraction']:.4f})")
    if itop_rate is not None and not math.isnan(itop_rate):
        lines.append(f"ITOP rate (fraction of sparsified weights ever active): {itop_rate:.4f}")
    return "\n".join(lines)
