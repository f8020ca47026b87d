"""From criterion scores to masks: the allocation modes shared by every pruning method.

- ``global``: rank every weight of every layer together; keep the top round(density · N).
- ``layer``: give each layer its count from a distribution (`sparsetrain.distributions`:
  uniform, erk, ...) and rank within the layer.
- ``ratios``: take the per-layer counts the global ranking yields, but redraw the kept
  positions uniformly at random inside each layer (the layer-wise density analysis of the
  hard-sample studies: does the criterion matter beyond the densities it picks?).

The number of kept weights is exact in every mode (ties break by layer order, then flat
index, as in `sparsetrain.sparse.topk_mask`). Example, in your own code::

    from sparsetrain.criteria import score
    from sparsetrain.algorithms.pruning import masks_from_scores, apply_masks
    scores = score("snip", model, (x, y), weights=sparsifier.weights)
    masks = masks_from_scores(scores, 0.1, allocation="global",
                              allowed={w.name: w.mask for w in sparsifier.weights})
    apply_masks(sparsifier.weights, masks, optimizer)
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from sparsetrain.distributions import allocate
from sparsetrain.errors import UserError
from sparsetrain.sparse import SparseWeight, generator, random_scores, topk_mask

ALLOCATIONS = ("global", "layer", "ratios")

Masks = dict[str, torch.Tensor]


def _available(name: str, shape: torch.Size, allowed: Mapping[str, torch.Tensor] | None) -> int:
    if allowed is None or name not in allowed:
        return int(torch.Size(shape).numel())
    return int(allowed[name].sum())


def global_counts(scores: Mapping[str, torch.Tensor], k: int,
                  allowed: Mapping[str, torch.Tensor] | None = None) -> dict[str, int]:
    """Per-layer counts of the ``k`` globally highest scores among the ``allowed`` positions."""
    names = list(scores)
    flat = torch.cat([scores[n].detach().reshape(-1).float().cpu() for n in names])
    allow = None
    if allowed is not None:
        allow = torch.cat([(allowed[n] if n in allowed else torch.ones_like(scores[n], dtype=torch.bool))
                           .reshape(-1).cpu() for n in names])
    available = flat.numel() if allow is None else int(allow.sum())
    if not 0 <= k <= available:
        raise UserError(f"cannot keep {k} weights: only {available} can be kept")
    keep = topk_mask(flat, k, allowed=allow)
    sizes = [scores[n].numel() for n in names]
    return {n: int(part.sum()) for n, part in zip(names, keep.split(sizes))}


def allocation_counts(scores: Mapping[str, torch.Tensor], density: float, *,
                      allocation: str = "global", distribution: str = "uniform",
                      allowed: Mapping[str, torch.Tensor] | None = None,
                      **distribution_options: Any) -> dict[str, int]:
    """How many weights each layer keeps at overall ``density`` (total = round(density · N))."""
    if allocation not in ALLOCATIONS:
        raise UserError(f"allocation must be one of {', '.join(ALLOCATIONS)}; got {allocation!r}")
    if not 0 < density <= 1:
        raise UserError(f"density must be in (0, 1]; got {density!r}")
    if allocation == "layer":
        shapes = {n: tuple(s.shape) for n, s in scores.items()}
        return allocate(distribution, shapes, density, **distribution_options)
    total = sum(s.numel() for s in scores.values())
    return global_counts(scores, round(density * total), allowed)


def select_masks(scores: Mapping[str, torch.Tensor], counts: Mapping[str, int], *,
                 allocation: str = "global", allowed: Mapping[str, torch.Tensor] | None = None,
                 seed: int = 0, step: int = 0) -> Masks:
    """Keep ``counts[name]`` weights per layer: the highest scores, or (``ratios``) random
    positions drawn from a generator seeded by (seed, step, layer index)."""
    masks: Masks = {}
    for index, (name, s) in enumerate(scores.items()):
        allow = None if allowed is None else allowed.get(name)
        available = _available(name, s.shape, allowed)
        if counts[name] > available:
            raise UserError(f"layer {name!r} should keep {counts[name]} weights but only "
                            f"{available} can be kept")
        if allocation == "ratios":
            s = random_scores(s.shape, generator(seed, step, "ratios", index), s.device)
        masks[name] = topk_mask(s, counts[name], allowed=allow)
    return masks


def masks_from_scores(scores: Mapping[str, torch.Tensor], density: float, *,
                      allocation: str = "global", distribution: str = "uniform",
                      allowed: Mapping[str, torch.Tensor] | None = None, seed: int = 0,
                      step: int = 0, **distribution_options: Any) -> Masks:
    """Boolean masks keeping round(density · N) weights in total, allocated as ``allocation``.

    ``distribution`` and ``distribution_options`` (e.g. ``power`` for erk, ``densities`` for
    custom) are used by ``allocation="layer"`` only; ``allowed`` restricts what can be kept
    (e.g. the current masks, so pruning never regrows).
    """
    counts = allocation_counts(scores, density, allocation=allocation, distribution=distribution,
                               allowed=allowed, **distribution_options)
    return select_masks(scores, counts, allocation=allocation, allowed=allowed, seed=seed, step=step)


def distribution_options(config: Any, scores: Mapping[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """The options `allocate` needs for a `SparsityConfig`'s distribution (power, densities,
    or for ``distribution=scores`` the criterion's scores)."""
    if config.distribution in ("er", "erk"):
        return {"power": config.erk_power}
    if config.distribution == "custom":
        return {"densities": config.layer_densities}
    if config.distribution == "scores":
        return {"scores": scores}
    return {}


@torch.no_grad()
def apply_masks(weights: Sequence[SparseWeight], masks: Mapping[str, torch.Tensor],
                optimizer: torch.optim.Optimizer | None = None) -> None:
    """Install ``masks``: removed weights and their optimizer state become 0, and their
    gradients too (so an optimizer step right after cannot move them).

    One `SparseWeight.rewire` per layer (kept = mask ∩ active, grown = the rest of the mask,
    starting at 0 with zero state), so a backend with its own storage (sparse) rebuilds once
    and survivors keep their value and optimizer state in their new slots."""
    for w in weights:
        if w.name not in masks:
            continue
        mask = masks[w.name].to(device=w.mask.device, dtype=torch.bool)
        active = w.mask.clone()
        w.rewire(mask & active, mask & ~active, optimizer)
