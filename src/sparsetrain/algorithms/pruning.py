"""From criterion scores to masks: the allocation modes shared by every pruning method.

- ``global``: rank every weight of every layer together; keep the top round(density · N).
- ``layer``: give each layer its count from a distribution (`sparsetrain.distributions`:
  uniform, erk, ...) and rank within the layer.
- ``ratios``: take the per-layer counts the global ranking yields, but redraw the kept
  positions uniformly at random inside each layer (the layer-wise density analysis of the
  hard-sample studies: does the criterion matter beyond the densities it picks?).

The number of kept weights is exact in every mode (ties break by layer order, then flat
index, as in `sparsetrain.sparse.topk_mask`).

With a `Grouping` (a structure from `sparsetrain.sparse.structures`, each layer's fan-in
dimension, and how per-weight scores become group scores) whole groups are ranked instead
of weights: N:M keeps the N best-scored weights of every group (the count is fixed at N/M);
block and channel keep whole groups, each layer's count rounded to whole groups
(`Structure.round_count`). A global ranking compares groups of different layers by their
score per weight (see `GROUP_SCORES`) and keeps the prefix of the ranking whose size is
nearest the budget. Example, in your own code::

    from sparsetrain.criteria import score
    from sparsetrain.algorithms.pruning import masks_from_scores, apply_masks
    scores = score("snip", model, (x, y), weights=sparsifier.weights)
    masks = masks_from_scores(scores, 0.1, allocation="global",
                              allowed={w.name: w.mask for w in sparsifier.weights})
    apply_masks(sparsifier.weights, masks, optimizer)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch

from sparsetrain.distributions import allocate
from sparsetrain.errors import UserError
from sparsetrain.sparse import SparseWeight, generator, random_scores, topk_mask
from sparsetrain.sparse.structures import NM, Structure

ALLOCATIONS = ("global", "layer", "ratios")

Masks = dict[str, torch.Tensor]


# --- structured selection ----------------------------------------------------------------
def norm_per_weight(structure: Structure, scores: torch.Tensor, fan_in_dim: int = 1) -> torch.Tensor:
    """The structure's group score (the L2 norm of the scores over the group) / sqrt(group
    size): the root mean square, which for a group of one weight is |score| and makes groups
    of different sizes (the channels of different layers) comparable."""
    size = structure.group_size(tuple(scores.shape), fan_in_dim)
    return structure.group_scores(scores, fan_in_dim) / math.sqrt(size)


def sum_per_weight(structure: Structure, scores: torch.Tensor, fan_in_dim: int = 1) -> torch.Tensor:
    """The scores summed over the group / group size: the mean saliency of its weights. The
    sum is the first-order estimate of removing the whole group for additive saliencies (SNIP's
    |g ⊙ w|, GraSP's θ ⊙ Hg, whose sign matters, SynFlow's synaptic flow)."""
    size = structure.group_size(tuple(scores.shape), fan_in_dim)
    return structure.group_sums(scores.float(), fan_in_dim) / size


GROUP_SCORES: dict[str, Callable[[Structure, torch.Tensor, int], torch.Tensor]] = {
    "norm": norm_per_weight, "sum": sum_per_weight}
"""How per-weight scores become one score per group, comparable across layers: ``fn(structure,
scores, fan_in_dim) -> 1-D group scores``. Within a layer every group has the same size, so
both rank a layer's groups as the structure's own score (norm) or the plain sum would."""


@dataclass(frozen=True)
class Grouping:
    """How a pruning step groups weights: the ``structure``, each layer's fan-in dimension
    (``fan_in``, default 1), and ``group_scores``: a name in `GROUP_SCORES` or a function
    ``(structure, scores, fan_in_dim) -> 1-D group scores`` (higher = kept)."""

    structure: Structure
    fan_in: Mapping[str, int] = field(default_factory=dict)
    group_scores: str | Callable[[Structure, torch.Tensor, int], torch.Tensor] = "norm"

    @property
    def unstructured(self) -> bool:
        return self.structure.unstructured

    @property
    def fixed(self) -> bool:
        """True for N:M: every layer holds exactly N/M, whatever the allocation asks."""
        return isinstance(self.structure, NM)

    def at_density(self, density: float) -> Grouping | None:
        """The grouping of one step of a gradual or iterative prune to ``density``: N:M goes
        there through n:M masks, n = round(density · M) clamped to [N, M] (None when that keeps
        all M; the decaying N:M masks of Kao et al. 2022), so every step's mask is exactly n:M
        and the last one N:M; any other structure is itself at every density."""
        if not self.fixed:
            return self
        m = self.structure.m
        n = min(m, max(self.structure.n, round(density * m)))
        return None if n == m else dataclasses.replace(self, structure=NM(f"{n}:{m}"))

    def fan_in_dim(self, name: str) -> int:
        """The fan-in dimension of weight ``name`` (or of its logical part ``name[i]``)."""
        return self.fan_in.get(name.partition("[")[0], 1)

    def size(self, name: str, shape: Sequence[int]) -> int:
        return self.structure.group_size(tuple(shape), self.fan_in_dim(name))

    def scores(self, name: str, scores: torch.Tensor) -> torch.Tensor:
        """One score per group of layer ``name`` (pruned positions, scored -inf by the criteria,
        count as 0; their groups are excluded by ``allowed`` anyway)."""
        fn = GROUP_SCORES[self.group_scores] if isinstance(self.group_scores, str) else self.group_scores
        clean = torch.where(torch.isneginf(scores), torch.zeros_like(scores), scores.float())
        return fn(self.structure, clean, self.fan_in_dim(name))

    def allowed_groups(self, name: str, allowed: torch.Tensor | None) -> torch.Tensor | None:
        """Per group, True when every weight of it may be kept."""
        if allowed is None:
            return None
        shape = tuple(allowed.shape)
        return self.structure.group_counts(allowed, self.fan_in_dim(name)) == self.size(name, shape)

    def round(self, name: str, count: int, shape: Sequence[int]) -> int:
        return self.structure.round_count(count, tuple(shape), self.fan_in_dim(name))

    def select(self, name: str, scores: torch.Tensor, k: int, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """The structured mask of layer ``name`` keeping ``k`` weights (whole groups, or N per
        N:M group) with the highest group scores among ``allowed``."""
        fan_in = self.fan_in_dim(name)
        if self.fixed:  # N:M ranks the weights inside each group
            return self.structure.select(scores, k, fan_in, allowed)
        size = self.size(name, scores.shape)
        if k % size:
            raise ValueError(f"{k} weights are not a whole number of {self.structure.spec} groups of {size}")
        chosen = topk_mask(self.scores(name, scores), k // size, allowed=self.allowed_groups(name, allowed))
        return self.structure.expand(chosen, tuple(scores.shape), fan_in)


def grouping_of(method: Any, group_scores: str | Callable = "norm") -> Grouping | None:
    """The `Grouping` of a sparsifier's ``structure`` over its weights (None when unstructured)."""
    if method.structure.unstructured:
        return None
    return Grouping(method.structure, method.fan_in, group_scores)


def _structured(grouping: Grouping | None) -> bool:
    return grouping is not None and not grouping.unstructured


def structured_counts(counts: Mapping[str, int], shapes: Mapping[str, Sequence[int]],
                      grouping: Grouping | None) -> dict[str, int]:
    """``counts`` rounded to what the structure allows in each layer (unchanged without one)."""
    if not _structured(grouping):
        return dict(counts)
    return {n: grouping.round(n, c, shapes[n]) for n, c in counts.items()}


def global_group_counts(scores: Mapping[str, torch.Tensor], k: int, grouping: Grouping,
                        allowed: Mapping[str, torch.Tensor] | None = None) -> dict[str, int]:
    """Per-layer counts of a global ranking of whole groups: every allowed group of every layer
    by its group score (ties to the earlier layer, then the lower group), keeping the prefix
    whose size is nearest ``k`` weights (a tie to the longer prefix, and at least one group when
    ``k`` > 0); all of them when ``k`` is more than they hold (an earlier round of an iterative
    prune may have rounded below this round's budget). N:M has no choice to make: each layer
    holds N/M."""
    names = list(scores)
    if grouping.fixed:
        return {n: grouping.round(n, k, scores[n].shape) for n in names}
    group_scores, sizes, owner, ok = [], [], [], []
    for i, n in enumerate(names):
        g = grouping.scores(n, scores[n]).cpu()
        group_scores.append(g)
        sizes.append(torch.full_like(g, grouping.size(n, scores[n].shape), dtype=torch.long))
        owner.append(torch.full_like(g, i, dtype=torch.long))
        allow = grouping.allowed_groups(n, None if allowed is None else allowed.get(n))
        ok.append(torch.ones_like(g, dtype=torch.bool) if allow is None else allow.cpu())
    flat, size, layer, allow = (torch.cat(t) for t in (group_scores, sizes, owner, ok))
    order = torch.nonzero(allow).reshape(-1)
    order = order[torch.argsort(flat[order], descending=True, stable=True)]
    cumulative = torch.cat([size.new_zeros(1), torch.cumsum(size[order], 0)])
    k = min(k, int(cumulative[-1]))
    distance = (cumulative - k).abs()
    best = int(torch.nonzero(distance == distance.min()).max())  # ties to the longer prefix
    if k > 0:
        best = max(best, 1)
    kept = torch.bincount(layer[order[:best]], weights=size[order[:best]].double(), minlength=len(names))
    return {n: int(kept[i]) for i, n in enumerate(names)}


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
                      grouping: Grouping | None = None, **distribution_options: Any) -> dict[str, int]:
    """How many weights each layer keeps at overall ``density`` (total = round(density · N);
    with a structured ``grouping``, each layer's count or the global prefix is rounded to whole
    groups, and N:M holds N/M of every layer)."""
    if allocation not in ALLOCATIONS:
        raise UserError(f"allocation must be one of {', '.join(ALLOCATIONS)}; got {allocation!r}")
    if not 0 < density <= 1:
        raise UserError(f"density must be in (0, 1]; got {density!r}")
    if allocation == "layer":
        shapes = {n: tuple(s.shape) for n, s in scores.items()}
        return structured_counts(allocate(distribution, shapes, density, **distribution_options), shapes, grouping)
    total = sum(s.numel() for s in scores.values())
    if _structured(grouping):
        return global_group_counts(scores, round(density * total), grouping, allowed)
    return global_counts(scores, round(density * total), allowed)


def select_masks(scores: Mapping[str, torch.Tensor], counts: Mapping[str, int], *,
                 allocation: str = "global", allowed: Mapping[str, torch.Tensor] | None = None,
                 seed: int = 0, step: int = 0, grouping: Grouping | None = None) -> Masks:
    """Keep ``counts[name]`` weights per layer: the highest scores, or (``ratios``) random
    positions drawn from a generator seeded by (seed, step, layer index); with a structured
    ``grouping``, whole groups by their group scores (N:M: the best N of every group)."""
    masks: Masks = {}
    for index, (name, s) in enumerate(scores.items()):
        allow = None if allowed is None else allowed.get(name)
        available = _available(name, s.shape, allowed)
        if counts[name] > available:
            raise UserError(f"layer {name!r} should keep {counts[name]} weights but only "
                            f"{available} can be kept")
        if allocation == "ratios":
            s = random_scores(s.shape, generator(seed, step, "ratios", index), s.device)
        if _structured(grouping):
            try:
                masks[name] = grouping.select(name, s, counts[name], allow)
            except ValueError as exc:  # too few whole groups left among the allowed positions
                raise UserError(f"layer {name!r} cannot keep {counts[name]} weights in structure "
                                f"{grouping.structure.spec}: {exc}") from None
        else:
            masks[name] = topk_mask(s, counts[name], allowed=allow)
    return masks


def masks_from_scores(scores: Mapping[str, torch.Tensor], density: float, *,
                      allocation: str = "global", distribution: str = "uniform",
                      allowed: Mapping[str, torch.Tensor] | None = None, seed: int = 0,
                      step: int = 0, grouping: Grouping | None = None,
                      **distribution_options: Any) -> Masks:
    """Boolean masks keeping round(density · N) weights in total, allocated as ``allocation``.

    ``distribution`` and ``distribution_options`` (e.g. ``power`` for erk, ``densities`` for
    custom) are used by ``allocation="layer"`` only; ``allowed`` restricts what can be kept
    (e.g. the current masks, so pruning never regrows); ``grouping`` keeps whole groups of a
    structure (the total is then rounded to them, see the module docstring).
    """
    counts = allocation_counts(scores, density, allocation=allocation, distribution=distribution,
                               allowed=allowed, grouping=grouping, **distribution_options)
    return select_masks(scores, counts, allocation=allocation, allowed=allowed, seed=seed, step=step,
                        grouping=grouping)


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
