"""MEST: Memory-Economic Sparse Training (elastic mutation with a soft memory bound)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from sparsetrain.algorithms.dynamic import DynamicConfig, DynamicSparsifier
from sparsetrain.algorithms.registry import register_method
from sparsetrain.config import check_range, option
from sparsetrain.schedules import DecaySchedule
from sparsetrain.sparse import SparseWeight


@dataclass(frozen=True)
class MESTConfig(DynamicConfig):
    grad_coeff: float = option(1.0, "lambda in the importance score |w| + lambda * |grad|")
    memory_bound: float = option(0.1, "extra active weights allowed above the target, as a fraction "
                                      "of it; decays to 0 at stop_fraction (0 = MEST+EM without &S)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("grad_coeff", self.grad_coeff, 0)
        check_range("memory_bound", self.memory_bound, 0)


@register_method("mest", help="grow-then-prune by |w| + lambda|g| under a decaying soft memory bound (Yuan et al. 2021)")
class MEST(DynamicSparsifier):
    """Yuan et al. 2021, "MEST: Accurate and Fast Memory-Economic Sparse Training
    Framework on the Edge", NeurIPS.

    Elastic mutation scores active weights by |w| + λ|∇w| and grows at random. With the
    soft memory bound (&S) each update first grows ``drop_fraction · target`` weights at
    random among the inactive ones (starting at 0, protected until the next update), then
    prunes the old weights by score down to ``target · (1 + β_t)``; β_t decays linearly from
    ``memory_bound`` to 0 at the stop step, where a last prune restores the exact target.
    """

    name = "mest"
    config_class: ClassVar[type] = MESTConfig
    needs_dense_grad = True
    grow_from_kept_complement = False  # grow first: only weights inactive before the update

    def __init__(self, model, optimizer=None, **kwargs: Any) -> None:
        super().__init__(model, optimizer, **kwargs)
        self.bound_schedule = DecaySchedule(self.config.memory_bound, self.stop_step, "linear")

    def drop_scores(self, weight: SparseWeight, grad: torch.Tensor | None,
                    active: torch.Tensor) -> torch.Tensor:
        score = weight.active_values().abs()
        if grad is None:
            return score
        return score + self.config.grad_coeff * grad.reshape(-1)[active.to(grad.device)].abs()

    def plan(self, active: int, target: int, fraction: float, numel: int) -> tuple[int, int]:
        bound = min(numel, round(target * (1 + self.bound_schedule.at(self.step_count))))
        n_grow = min(int(fraction * target), numel - active, bound)
        return min(active, bound - n_grow), n_grow

    def step(self) -> None:
        super().step()
        # the bound is 0 at the stop step; unless a regular update just met it, prune to it
        if self.step_count == self.stop_step and not self.schedule.is_update(self.step_count):
            self.prune_to_target()

    @torch.no_grad()
    def prune_to_target(self) -> None:
        """Drop the lowest-scored weights so every group holds exactly its target (β = 0)."""
        grads = self._dense_grads()  # masked already, but exact on the active weights we rank
        for group in self._groups():
            self._rewire(group, 0.0, grads)

    def current_targets(self) -> dict[str, int]:
        if self.step_count < self.stop_step:  # under the soft bound the count moves
            return {w.name: w.active for w in self.weights}
        return super().current_targets()
