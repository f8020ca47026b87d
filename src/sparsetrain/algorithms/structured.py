"""Topology updates of the dynamic methods under a structure (N:M, block, channel).

`DynamicSparsifier._rewire` hands a ranking group (one layer, or every layer for global
ranking) here when the method's ``structure`` is not ``unstructured``. The method's own
rules are kept — its `drop_scores`, `plan`, `select_kept`, grow rule, ``reinit_when_same``,
``grow_unactivated_only`` — and applied to what the structure lets change together. Every
logical part of a fused weight (q, k, v) is its own layer here, with its own target.

- **block / channel** (whole groups): the method's per-weight drop scores are aggregated
  per group (L2 norm over the group) and its counts are planned in groups: the lowest-scored
  active groups are dropped and whole groups are grown — random growth draws a uniform random
  set of groups, gradient growth takes the groups with the largest L2 norm of the dense
  gradient, score growth the largest L2 norm of `grow_scores`. Global ranking ranks the blocks
  of all layers together (all hold B x B weights); it is refused for channels, whose sizes
  differ between layers, so no exact total could be kept.
- **N:M** (exactly N in every group of M): drop as the method drops, weight by weight, over
  the whole layer (or all layers for global ranking), then regrow inside each group exactly
  as many weights as it lost, by the method's grow rule restricted to that group (a weight
  just dropped may come back, as in RigL's code), so every group keeps exactly N (a group
  holding n > N, on GraNet's way down to N:M through n:M masks, keeps its n). The count
  grown is the method's (SET/RigL: the drop fraction of the active weights; MEST: the mutation
  rate of the target); since no group may hold more than N, MEST's soft bound (growing above
  the target) becomes EM here: the grown weights replace as many pruned ones.

Positions and groups are ordered as in the (out, fan-in) matrix (see
`sparsetrain.sparse.structures`), which is where ties go to the lower one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from sparsetrain.errors import UserError
from sparsetrain.sparse import SparseWeight, generator, random_scores, topk_mask
from sparsetrain.sparse.structures import NM, top_per_group

if TYPE_CHECKING:
    from sparsetrain.algorithms.dynamic import DynamicSparsifier, Segment


@dataclass
class _Layer:
    """One logical layer of the update: a `Segment` (a whole weight, or one equal row block of a
    fused weight, rows ``part`` of ``parts``) of the ``at``-th weight of the ranking group."""

    at: int
    segment: Segment
    part: int
    parts: int
    fan_in: int

    @property
    def target(self) -> int:
        return self.segment.target

    def take(self, t: torch.Tensor) -> torch.Tensor:
        return t.chunk(self.parts)[self.part] if self.parts > 1 else t


def _layers(method: DynamicSparsifier, group: list[Segment], indices: list[int]) -> list[_Layer]:
    out = []
    for s in group:
        w = method.weights[s.index]
        parts = len(method.part_targets[w.name])
        out.append(_Layer(indices.index(s.index), s, s.lo // s.size, parts, method.fan_in[w.name]))
    return out


def _dense(method: DynamicSparsifier, index: int, w: SparseWeight, grads: dict,
           before: torch.Tensor) -> dict[str, torch.Tensor]:
    """The dense tensors (weight's shape) an update reads: mask, drop scores (0 where inactive),
    grow scores, and the ITOP map of positions ever active."""
    device = w.mask.device
    mask = w.mask.clone()
    drop = torch.zeros(w.numel, dtype=torch.float32, device=device)
    drop[before] = method.drop_scores(w, grads.get(w.name), before).float().reshape(-1).to(device)
    grad = grads.get(w.name)
    gen = generator(method.seed, method.step_count, "grow", index)
    if method.grow_rule == "random":
        grow = random_scores(w.shape, gen, device)
    elif method.grow_rule == "gradient":
        if grad is None:
            raise UserError(f"{method.name} needs gradients at the update step; call backward() before step()")
        grow = grad.detach().float().abs().to(device)
    else:
        grow = method.grow_scores(w, grad, gen).float().to(device)
    seen = mask.clone()
    seen.view(-1)[method.retired[w.name].positions().to(device)] = True
    return {"mask": mask, "drop": drop.view(w.shape), "grow": grow.reshape(w.shape), "seen": seen}


def _top_tiered(scores: torch.Tensor, n: int, allowed: torch.Tensor,
                first: torch.Tensor | None) -> torch.Tensor:
    """The ``n`` highest ``scores`` among ``allowed``; with ``first``, those allowed positions
    come before all others (all of them when too few, then the rest by score)."""
    if first is None:
        return topk_mask(scores, n, allowed=allowed)
    preferred = allowed & first
    if int(preferred.sum()) >= n:
        return topk_mask(scores, n, allowed=preferred)
    return preferred | topk_mask(scores, n - int(preferred.sum()), allowed=allowed & ~preferred)


@torch.no_grad()
def rewire_structured(method: DynamicSparsifier, group: list[Segment], fraction: float, grads: dict) -> None:
    """One structured topology update of the logical layers ``group``; the weights' other parts
    stay as they are."""
    indices = list(dict.fromkeys(s.index for s in group))
    weights = [method.weights[i] for i in indices]
    before = [w.active_index() for w in weights]
    dense = [_dense(method, i, w, grads, b) for i, w, b in zip(indices, weights, before)]
    layers = _layers(method, group, indices)
    tensors = [{key: layer.take(t) for key, t in dense[layer.at].items()} for layer in layers]
    if isinstance(method.structure, NM):
        kept, grown = _rewire_nm(method, layers, tensors, fraction)
    else:
        kept, grown = _rewire_groups(method, layers, tensors, fraction)
    for at, (w, b, d) in enumerate(zip(weights, before, dense)):
        keep_mask, grow_mask = d["mask"].clone(), torch.zeros_like(d["mask"])
        for layer, k, g in zip(layers, kept, grown):
            if layer.at == at:
                layer.take(keep_mask).copy_(k)  # a view: rows of this logical layer
                layer.take(grow_mask).copy_(g)
        if not method.config.reinit_when_same:  # dropped and regrown: kept with its value and state
            again = grow_mask & d["mask"] & ~keep_mask
            keep_mask, grow_mask = keep_mask | again, grow_mask & ~again
        keep = keep_mask.reshape(-1)[b]
        grown_at = torch.nonzero(grow_mask.reshape(-1)).reshape(-1)
        w.rewire_flat(keep, grown_at, method.optimizer)
        method._retire(w, b[~keep], grown_at)


def _rewire_groups(method: DynamicSparsifier, layers: list[_Layer], tensors: list[dict],
                   fraction: float) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Block / channel: plan, drop and grow whole groups. Returns per layer (kept, grown) masks."""
    s = method.structure
    active, drop, grow, seen, sizes, counts = [], [], [], [], [], []
    for layer, t in zip(layers, tensors):
        shape = tuple(t["mask"].shape)
        active.append(s.active_groups(t["mask"], layer.fan_in))
        drop.append(s.group_scores(t["drop"], layer.fan_in))
        grow.append(s.group_scores(t["grow"], layer.fan_in))
        seen.append(s.active_groups(t["seen"], layer.fan_in))
        sizes.append(s.group_size(shape, layer.fan_in))
        counts.append(active[-1].numel())
    active_all = torch.cat(active)
    target = sum(layer.target // size for layer, size in zip(layers, sizes))
    n_active = int(active_all.sum())
    n_keep, n_grow = method.plan(n_active, target, fraction, active_all.numel())
    keep = method.select_kept(torch.cat(drop)[active_all], n_keep, fraction)
    n_grow += n_keep - int(keep.sum())
    kept = torch.zeros_like(active_all)
    kept[torch.nonzero(active_all).reshape(-1)] = keep.to(kept.device)
    excluded = kept if method.grow_from_kept_complement else active_all
    unexplored = ~torch.cat(seen) if method.config.grow_unactivated_only else None
    grown = _top_tiered(torch.cat(grow), n_grow, ~excluded, unexplored)
    out_kept, out_grown = [], []
    for layer, t, part_kept, part_grown in zip(layers, tensors, kept.split(counts), grown.split(counts)):
        shape = tuple(t["mask"].shape)
        out_kept.append(s.expand(part_kept, shape, layer.fan_in))
        out_grown.append(s.expand(part_grown, shape, layer.fan_in))
    return out_kept, out_grown


def _rewire_nm(method: DynamicSparsifier, layers: list[_Layer], tensors: list[dict],
               fraction: float) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """N:M: drop weight by weight, regrow inside each group what it lost. Returns per layer
    (kept, grown) masks."""
    s: NM = method.structure
    grouped = [{key: s.groups(t[key], layer.fan_in) for key in t} for layer, t in zip(layers, tensors)]
    mask = torch.cat([g["mask"] for g in grouped])            # (groups, M) over all layers
    n_active = int(mask.sum())
    # every group ends with N, or keeps its n > N while GraNet prunes down to N:M through n:M masks
    per_group = mask.sum(1).clamp_min(s.n)
    target = int(per_group.sum())
    _, n_grow = method.plan(n_active, target, fraction, mask.numel())
    n_keep = target - min(n_grow, target)  # every group ends with exactly N: the grown replace pruned
    flat = mask.reshape(-1)
    positions = torch.nonzero(flat).reshape(-1)
    keep = method.select_kept(torch.cat([g["drop"] for g in grouped]).reshape(-1)[positions],
                              min(n_keep, n_active), fraction)
    kept = torch.zeros_like(flat)
    kept[positions[keep.to(positions.device)]] = True
    kept = kept.view_as(mask)
    deficit = per_group - kept.sum(1)
    allowed = ~kept
    if not method.grow_from_kept_complement:  # only positions inactive before, where they suffice
        fresh = ~mask
        allowed = torch.where((fresh.sum(1) >= deficit)[:, None], fresh, allowed)
    unexplored = ~torch.cat([g["seen"] for g in grouped]) if method.config.grow_unactivated_only else None
    grown = top_per_group(torch.cat([g["grow"] for g in grouped]), deficit, allowed, unexplored)
    out_kept, out_grown = [], []
    start = 0
    for layer, t, g in zip(layers, tensors, grouped):
        rows = g["mask"].shape[0]
        shape = tuple(t["mask"].shape)
        out_kept.append(s.ungroup(kept[start:start + rows], shape, layer.fan_in))
        out_grown.append(s.ungroup(grown[start:start + rows], shape, layer.fan_in))
        start += rows
    return out_kept, out_grown
