"""Untrained GNN tickets (UGTs): edge-popup with a global ranking and a gradually rising sparsity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from sparsetrain.algorithms.registry import register_method
from sparsetrain.algorithms.supermask import INITS, EdgePopup, SupermaskConfig
from sparsetrain.config import check_range, option
from sparsetrain.errors import UserError
from sparsetrain.sparse import SparseWeight, topk_mask


@dataclass(frozen=True)
class UGTsConfig(SupermaskConfig):
    """UGTs' options; the defaults are those of the reference's README commands (``--sparse_decay``)."""

    init: str = option("kaiming_uniform", "the frozen weights (the reference's --init_mode default: "
                       "kaiming_uniform, U(±sqrt(6/fan_in)))", choices=INITS)
    ranking: str = option("global", "global: one top-k of the raw scores over all sparse layers (the "
                          "reference's single percentile threshold); layer: a top-k per layer at "
                          "`distribution`", choices=("global", "layer"))
    decay_fraction: float = option(0.5, "the sparsity rises linearly from 0 to 1 - density over this "
                                   "fraction of training, then stays (reference --sparse_decay: the "
                                   "first half of the epochs); 0 = the target from the start")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("decay_fraction", self.decay_fraction, 0, 1)


def ugts_density(step: int, total_steps: int, density: float, decay_fraction: float) -> float:
    """The density the masks of step ``step`` use: ``1 - (1 - density) * step / (decay_fraction *
    total_steps)`` until that fraction of training, then ``density`` (reference ``get_sparsity``:
    sparsity_e = s * e / (E/2) for epoch e < E/2, one full-graph step per epoch)."""
    end = decay_fraction * total_steps
    if end <= 0 or step >= end:
        return density
    return 1.0 - (1.0 - density) * step / end


@register_method("ugts", help="untrained GNN tickets: edge-popup with one global top-k of raw scores and a "
                 "sparsity rising over the first half of training (Huang et al. 2022)")
class UGTs(EdgePopup):
    """Huang et al. 2022, "You Can Have Better Graph Neural Networks by Not Training Weights at
    All: Finding Untrained GNNs Tickets", LoG (reference: TianjinYellow/UGTs-LoG, ``UGTs_GNN/``:
    ``models/networks/sparse_modules.py`` ``SparseLinear``/``GetSubnet``, ``models/networks/GCN.py``
    ``get_threshold``, ``models/supervised_learning.py`` ``get_sparsity``).

    Edge-popup's search (frozen weights, a score per weight, straight-through gradient, only the
    scores trained) with what the reference does differently:

    * one ranking over all sparse layers of the *raw* scores (not |score|): the mask keeps the
      ``round(d_t * N)`` highest scores of the whole network, so the score gradient is
      ``dL/dw_eff * init`` (no sign factor);
    * the density ``d_t`` of step t falls linearly from 1 (dense) to ``density`` over the first
      ``decay_fraction`` of training (`ugts_density`), counts interpolated exactly:
      ``N - round((N - K) * min(1, t / (decay_fraction * total_steps)))``;
    * weights and scores both Kaiming-uniform (fan_in, ReLU gain), bound sqrt(6 / fan_in).

    ``ranking=layer`` ranks each layer alone at its `distribution` target on the same schedule.
    """

    name = "ugts"
    config_class: ClassVar[type] = UGTsConfig

    def init_scores(self, scores: torch.Tensor, gen: torch.Generator) -> None:
        """Kaiming-uniform (fan_in, ReLU), as the reference's ``init_mode_mask`` default."""
        nn.init.kaiming_uniform_(scores, mode="fan_in", nonlinearity="relu", generator=gen)

    def ranking(self, w: SparseWeight) -> torch.Tensor:
        return self.scores(w)

    def score_grad(self, w: SparseWeight, grad: torch.Tensor) -> torch.Tensor:
        return grad * self.frozen(w)

    def _progress(self) -> float:
        """How far the sparsity has risen, in [0, 1]."""
        if self.config.decay_fraction == 0:
            return 1.0
        if not self.total_steps:
            raise UserError("ugts raises its sparsity over decay_fraction of training: pass total_steps "
                            "(or set decay_fraction=0)")
        return min(1.0, self.step_count / (self.config.decay_fraction * self.total_steps))

    def _count(self, n: int, target: int) -> int:
        return n - round((n - target) * self._progress())

    def select(self) -> None:
        if self.config.ranking == "layer":
            for w in self.weights:
                self._set_mask(w, topk_mask(self.scores(w), self._count(w.numel, self.targets[w.name])))
            return
        total = sum(w.numel for w in self.weights)
        keep = topk_mask(torch.cat([self.scores(w).reshape(-1).float().cpu() for w in self.weights]),
                         self._count(total, round(self.config.density * total)))
        for w, part in zip(self.weights, keep.split([w.numel for w in self.weights])):
            self._set_mask(w, part.view(w.shape))

    def current_targets(self) -> dict[str, int]:
        if self.config.ranking == "layer":
            return {w.name: self._count(w.numel, self.targets[w.name]) for w in self.weights}
        return {w.name: w.active for w in self.weights}  # global: only the total is fixed
