"""Layer-adaptive density allocation by dynamic programming over output distortion.

Xu et al., ICCV 2023, "Efficient Joint Optimization of Layer-Adaptive Weight Pruning in
Deep Neural Networks". The output distortion of pruning several layers together is close
to the sum of the distortions of pruning each alone, so the allocation

    min over (k_1 .. k_L)   sum_l D_l(k_l)   subject to   sum_l k_l <= budget

separates over layers and is solved exactly by a DP over the layers. ``D_l(k)`` is the
change of the network's output on a calibration batch when only layer l is
magnitude-pruned to k active weights (all other layers unchanged): by default the
worst case over the calibration samples of the per-sample mean squared output change
(``--worst_case_curve``, used by every published command of the reference code,
Akimoto-Cris/RD_PRUNE ``tools/pruners.py`` ``gen_rd_curves``), or, with ``curve="mean"``,
the mean over all samples and outputs.

Discretisation (the DP is exact on it):
- each layer is tried at ``levels + 1`` densities j / levels (j = 0 .. levels), i.e.
  k_{l,j} = round(j / levels * n_l), capped at the layer's currently active weights;
- costs are counted in units of ``unit = ceil(N / max_units)`` weights (N = all weights
  of the pruned layers): a level costs ceil(k / unit) units and the budget is
  floor(budget / unit) units, so the true total never exceeds the budget. With the
  default ``max_units`` = 20000 the unit is 1 weight for models up to 20k weights;
- the weights the grid leaves unspent (fewer than one level per layer) are handed to
  the largest remaining magnitudes over all layers by `dp_masks`, so the active total
  equals the budget exactly.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from sparsetrain.errors import UserError
from sparsetrain.sparse import topk_mask


CURVES = ("worst", "mean")


def level_counts(numel: int, active: int, levels: int) -> list[int]:
    """Active-weight counts tried for one layer: round(j / levels * numel), capped at ``active``."""
    return [min(round(j / levels * numel), active) for j in range(levels + 1)]


@torch.no_grad()
def distortion_table(model: nn.Module, params: Mapping[str, torch.Tensor], inputs: torch.Tensor,
                     counts: Mapping[str, Sequence[int]],
                     allowed: Mapping[str, torch.Tensor] | None = None, curve: str = "worst") -> np.ndarray:
    """``table[l, j]``: distortion of ``model(inputs)`` against the unpruned output when only
    layer l (the l-th of ``params``) keeps its ``counts[l][j]`` largest-magnitude weights:
    ``curve="worst"`` the largest per-sample mean squared change (the reference's
    ``((Y - Y_hat) ** 2).mean(dim=1).max()``), ``"mean"`` the mean squared change overall.

    ``params`` maps names to the weight tensors (modified in place and restored);
    ``allowed`` restricts each layer to its currently active positions.
    """
    if curve not in CURVES:
        raise UserError(f"curve must be one of {', '.join(CURVES)}; got {curve!r}")
    was_training = model.training
    model.eval()
    reference = model(inputs).float()
    table = np.zeros((len(params), max(len(c) for c in counts.values())))
    for row, (name, weight) in enumerate(params.items()):
        original = weight.detach().clone()
        order = _magnitude_order(original, None if allowed is None else allowed[name])
        for col, k in enumerate(counts[name]):
            kept = torch.zeros(original.numel(), dtype=torch.bool, device=original.device)
            kept[order[:k]] = True
            weight.copy_(original * kept.view_as(original))
            squared = (model(inputs).float() - reference) ** 2
            table[row, col] = float(squared.flatten(1).mean(1).max() if curve == "worst" else squared.mean())
        weight.copy_(original)
        table[row, len(counts[name]):] = np.inf
    model.train(was_training)
    return table


def dp_allocate(distortion: np.ndarray | Sequence[Sequence[float]],
                costs: Sequence[Sequence[int]], budget: int) -> list[int]:
    """The level index per layer minimising sum_l distortion[l][j_l] with sum_l costs[l][j_l] <= budget.

    Exact for integer costs: ``best[b]`` is the least distortion of the layers so far with
    total cost at most b; each layer adds one level (O(layers * budget * levels)). Ties go
    to the lower level index. Raises a UserError if no choice fits the budget.
    """
    table = np.asarray(distortion, dtype=float)
    budget = int(budget)
    if budget < 0:
        raise UserError(f"the weight budget must be >= 0; got {budget}")
    best = np.zeros(budget + 1)
    choices = []
    for layer, layer_costs in enumerate(costs):
        new = np.full(budget + 1, np.inf)
        pick = np.zeros(budget + 1, dtype=np.int64)
        for j, cost in enumerate(layer_costs):
            cost = int(cost)
            if cost > budget or not np.isfinite(table[layer, j]):
                continue
            candidate = np.full(budget + 1, np.inf)
            candidate[cost:] = best[:budget + 1 - cost] + table[layer, j]
            better = candidate < new
            new[better] = candidate[better]
            pick[better] = j
        best = new
        choices.append(pick)
    if not np.isfinite(best[budget]):
        raise UserError(f"no per-layer choice fits a budget of {budget}; raise the density")
    chosen = [0] * len(choices)
    b = budget
    for layer in range(len(choices) - 1, -1, -1):
        j = int(choices[layer][b])
        chosen[layer] = j
        b -= int(costs[layer][j])
    return chosen


def dp_counts(table: np.ndarray, counts: Mapping[str, Sequence[int]], budget: int,
              max_units: int = 20_000) -> dict[str, int]:
    """Per-layer active counts chosen by `dp_allocate` on ``table`` (see the module's discretisation)."""
    total = sum(max(c) for c in counts.values()) or 1
    unit = max(1, math.ceil(total / max_units))
    unit_costs = [[math.ceil(k / unit) for k in c] for c in counts.values()]
    chosen = dp_allocate(table, unit_costs, budget // unit)
    return {name: c[j] for (name, c), j in zip(counts.items(), chosen)}


def dp_masks(values: Mapping[str, torch.Tensor], counts: Mapping[str, int], budget: int,
             allowed: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Keep the top ``counts[name]`` magnitudes per layer, then the budget's remaining weights
    by global magnitude among the allowed positions not yet kept (the total is ``budget``)."""
    masks = {n: topk_mask(v.abs(), counts[n], None if allowed is None else allowed[n])
             for n, v in values.items()}
    spare = budget - sum(int(m.sum()) for m in masks.values())
    if spare > 0:
        names = list(values)
        scores = torch.cat([values[n].abs().reshape(-1).float() for n in names])
        free = torch.cat([(~masks[n] if allowed is None else allowed[n] & ~masks[n]).reshape(-1)
                          for n in names])
        extra = topk_mask(scores, min(spare, int(free.sum())), allowed=free)
        for n, part in zip(names, extra.split([values[n].numel() for n in names])):
            masks[n] = masks[n] | part.view_as(masks[n])
    return masks


def _magnitude_order(weight: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """Flat indices by decreasing |weight| (ties by position); disallowed positions last."""
    scores = weight.abs().reshape(-1).float()
    if allowed is not None:
        scores = torch.where(allowed.reshape(-1), scores, torch.full_like(scores, -1.0))
    return torch.argsort(scores, descending=True, stable=True)
