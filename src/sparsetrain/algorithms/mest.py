"""MEST: Memory-Economic Sparse Training (elastic mutation with a soft memory bound)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from sparsetrain.algorithms.base import ALL_STRUCTURES
from sparsetrain.algorithms.dynamic import DynamicConfig, DynamicSparsifier
from sparsetrain.algorithms.registry import register_method
from sparsetrain.config import check_range, option
from sparsetrain.schedules import ANNEALING
from sparsetrain.sparse import SparseWeight


@dataclass(frozen=True)
class MESTConfig(DynamicConfig):
    distribution: str = option("uniform", "layer-wise density allocation (uniform in the released profiles)",
                               choices=("uniform", "er", "erk", "scores", "custom"))
    dense_first: bool = option(True, "keep the first Linear/Conv layer dense (the released profiles do)")
    dense_last: bool = option(True, "keep the last Linear/Conv layer (the classifier) dense, as released")
    update_interval: int = option(5, "epochs (or steps, see interval_unit) between mutations; the first "
                                     "one is at the start of training")
    interval_unit: str = option("epochs", "unit of update_interval", choices=("steps", "epochs"))
    drop_fraction: float = option(0.5, "mutation rate: weights grown at random at each update, as a fraction "
                                       "of each layer's target (the EM&S scripts grow sparsity 0.9 to 0.85: 0.5)")
    anneal: str = option("step", "how the mutation rate decays (step: halved at 3/4 of stop_fraction, as the "
                                 "scripts' epochs 90 and 120 of 160)", choices=ANNEALING)
    stop_fraction: float = option(0.75, "fraction of training after which the topology is frozen at the target")
    grad_coeff: float = option(0.0, "lambda in the importance |w| + lambda |grad|: the paper's formula; the "
                                    "released code's --sp-lmd defaults to 0 and no script sets it")
    soft_bound: bool = option(True, "EM&S: prune to the target, then grow on top of it (the grown weights are "
                                    "the only excess, pruned at the next update); False: EM, prune below the "
                                    "target by the mutation rate and grow back to it")
    reinit_when_same: bool = option(True, "a weight pruned and regrown in the same update restarts at 0 (the "
                                          "reference zeroes pruned weights before it grows)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("grad_coeff", self.grad_coeff, 0)


@register_method("mest", help="prune to target by |w|, then grow at random above it; the excess is "
                              "pruned at the next update (Yuan et al. 2021)")
class MEST(DynamicSparsifier):
    """Yuan et al. 2021, "MEST: Accurate and Fast Memory-Economic Sparse Training
    Framework on the Edge", NeurIPS; reference code boone891214/MEST
    (``prune_utils/retrain.py`` ``update_mask``, ``scripts/resnet32/EM_S``).

    Elastic mutation with the soft memory bound (EM&S), as released: at the start of
    training and then every ``update_interval`` epochs, each layer is pruned to exactly its
    target by importance |w| + λ|∇w| (λ = 0 as in the released code), then
    ``drop_fraction · target`` weights are grown at random among the inactive positions
    (a weight just pruned may come back, at 0), starting at 0 with zeroed optimizer state.
    The grown weights are the only excess over the target until the next update. The rate
    is halved at 3/4 of ``stop_fraction`` and is 0 from ``stop_fraction`` (epochs 90 and
    120 of 160), where the last update leaves exactly the target. With ``soft_bound=False``
    (EM) each update prunes to ``target · (1 − rate)`` and grows back to the target.
    Uniform allocation with the first and the last layer dense, as the released profiles.
    """

    name = "mest"
    config_class: ClassVar[type] = MESTConfig
    structures_supported = ALL_STRUCTURES

    def __init__(self, model, optimizer=None, **kwargs: Any) -> None:
        super().__init__(model, optimizer, **kwargs)
        self.update_topology({})  # the reference mutates at epoch 0 too

    def scheduled_updates(self) -> int:
        return super().scheduled_updates() + 1  # and the one at the start

    @property
    def needs_dense_grad(self) -> bool:  # type: ignore[override]
        return self.config.grad_coeff > 0

    def drop_scores(self, weight: SparseWeight, grad: torch.Tensor | None,
                    active: torch.Tensor) -> torch.Tensor:
        score = weight.active_values().abs()
        if grad is None or self.config.grad_coeff == 0:
            return score
        return score + self.config.grad_coeff * grad.reshape(-1)[active.to(grad.device)].abs()

    def plan(self, active: int, target: int, fraction: float, numel: int) -> tuple[int, int]:
        n_mutate = int(fraction * target)
        n_keep = min(active, target if self.config.soft_bound else target - n_mutate)
        n_grow = n_mutate if self.config.soft_bound else target - n_keep
        return n_keep, min(n_grow, numel - n_keep)

    def step(self) -> None:
        super().step()
        # the rate is 0 at the stop step; unless a regular update just pruned to target, do it
        if self.step_count == self.stop_step and not self.schedule.is_update(self.step_count):
            self.prune_to_target()

    @torch.no_grad()
    def prune_to_target(self) -> None:
        """Drop the lowest-scored weights so every group holds exactly its target."""
        grads = self._dense_grads() if self.needs_dense_grad else {}
        for group in self._groups():
            self._rewire(group, 0.0, grads)

    def current_targets(self) -> dict[str, int]:
        if self.step_count < self.stop_step:  # the grown excess moves with the rate
            return {w.name: w.active for w in self.weights}
        return super().current_targets()
