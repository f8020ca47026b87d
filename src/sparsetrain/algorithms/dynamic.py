"""Dynamic sparse training: drop and grow weights on a schedule while training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from sparsetrain.algorithms.base import Sparsifier, SparsityConfig
from sparsetrain.config import check_range, option
from sparsetrain.errors import UserError
from sparsetrain.schedules import ANNEALING, DecaySchedule, UpdateSchedule
from sparsetrain.sparse import SparseWeight, generator, random_scores, topk_mask


@dataclass(frozen=True)
class DynamicConfig(SparsityConfig):
    """When and how much a dynamic method rewires."""

    update_interval: int = option(100, "steps (or epochs, see interval_unit) between topology updates")
    interval_unit: str = option("steps", "unit of update_interval", choices=("steps", "epochs"))
    drop_fraction: float = option(0.3, "fraction of active weights dropped at the first update, in [0, 1]")
    anneal: str = option("cosine", "how the drop fraction decays to 0 at stop_fraction", choices=ANNEALING)
    stop_fraction: float = option(0.75, "fraction of training after which the topology is frozen, in (0, 1]")
    ranking: str = option("layer", "rank weights within each layer or across all layers",
                          choices=("layer", "global"))
    grow_unactivated_only: bool = option(False, "grow only weights that were never active (ITOP exploration)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("update_interval", self.update_interval, 1)
        check_range("drop_fraction", self.drop_fraction, 0, 1)
        check_range("stop_fraction", self.stop_fraction, 0, 1, low_open=True)


class DynamicSparsifier(Sparsifier):
    """Drop the lowest `drop_scores` among active weights and grow the highest `grow_scores`.

    Order after each optimizer step that is an update step: read the drop fraction from
    the schedule, score, keep the top (active − k) by drop score, grow the top k by grow
    score among positions not kept (a weight just dropped may come back, as in RigL's
    reference code), set grown weights to 0, and zero optimizer state of every position
    that is not kept. Subclasses override only the scores (and, for MEST, the counts).
    """

    config_class: ClassVar[type] = DynamicConfig
    needs_dense_grad: ClassVar[bool] = False

    def __init__(self, model, optimizer=None, **kwargs: Any) -> None:
        super().__init__(model, optimizer, **kwargs)
        cfg = self.config
        if self.total_steps is None or self.total_steps < 1:
            raise UserError(f"{self.name} needs total_steps (the number of optimizer steps in training)")
        interval = cfg.update_interval
        if cfg.interval_unit == "epochs":
            if not self.steps_per_epoch:
                raise UserError("interval_unit=epochs needs steps_per_epoch")
            interval *= self.steps_per_epoch
        self.stop_step = int(cfg.stop_fraction * self.total_steps)
        self.schedule = UpdateSchedule(interval=interval, stop=self.stop_step)
        self.drop_schedule = DecaySchedule(cfg.drop_fraction, self.stop_step, cfg.anneal)
        self._arm_dense_grads()

    # --- what a method overrides -------------------------------------------------------
    def drop_scores(self, weight: SparseWeight, grad: torch.Tensor | None) -> torch.Tensor:
        """Higher = more worth keeping. Default: weight magnitude."""
        return weight.values.abs()

    def grow_scores(self, weight: SparseWeight, grad: torch.Tensor | None,
                    gen: torch.Generator) -> torch.Tensor:
        """Higher = grown first. Default: uniformly random."""
        return random_scores(weight.shape, gen, weight.mask.device)

    def plan(self, active: int, target: int, fraction: float, numel: int) -> tuple[int, int]:
        """(weights kept, weights grown) for a group with ``active`` weights now."""
        n_drop = int(fraction * active)
        return active - n_drop, n_drop

    grow_from_kept_complement: ClassVar[bool] = True
    """Grow among positions not kept (True) or only among positions inactive before the update."""

    # --- the fixed order of operations ------------------------------------------------------
    def step(self) -> None:
        due = self.schedule.is_update(self.step_count + 1)
        grads = self._dense_grads() if due and self.needs_dense_grad else {}
        super().step()
        if due:
            self.update_topology(grads)
        self._arm_dense_grads()

    def _arm_dense_grads(self) -> None:
        """Tell each weight whether the coming backward feeds an update that reads the dense
        gradient, so a sparse backend records it only then (one step ahead)."""
        wanted = self.needs_dense_grad and self.schedule.is_update(self.step_count + 1)
        for w in self.weights:
            w.want_dense_grad(wanted)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._arm_dense_grads()

    def _dense_grads(self) -> dict[str, torch.Tensor | None]:
        return {w.name: None if (g := w.dense_grad()) is None else g.clone() for w in self.weights}

    def _groups(self) -> list[list[int]]:
        indices = list(range(len(self.weights)))
        return [indices] if self.config.ranking == "global" else [[i] for i in indices]

    @torch.no_grad()
    def update_topology(self, grads: dict[str, torch.Tensor | None]) -> None:
        """Rewire every group once, using the drop fraction of the current step."""
        fraction = self.drop_schedule.at(self.step_count)
        for group in self._groups():
            self._rewire(group, fraction, grads)
        self._record_active()

    def _rewire(self, group: list[int], fraction: float, grads: dict) -> None:
        weights = [self.weights[i] for i in group]
        cat = lambda parts: torch.cat([p.reshape(-1) for p in parts])  # noqa: E731
        mask = cat([w.mask for w in weights])
        active = int(mask.sum())
        target = sum(self.targets[w.name] for w in weights)
        n_keep, n_grow = self.plan(active, target, fraction, mask.numel())
        drop = cat([self.drop_scores(w, grads.get(w.name)).float() for w in weights])
        keep = topk_mask(drop, n_keep, allowed=mask)
        candidates = ~keep if self.grow_from_kept_complement else ~mask
        if self.config.grow_unactivated_only:
            fresh = candidates & ~cat([self.ever_active[w.name] for w in weights])
            if int(fresh.sum()) >= n_grow:  # once everything was explored, fall back
                candidates = fresh
        grow_parts = [self.grow_scores(w, grads.get(w.name),
                                       generator(self.seed, self.step_count, "grow", i)).float()
                      for i, w in zip(group, weights)]
        grow = topk_mask(cat(grow_parts), n_grow, allowed=candidates)
        sizes = [w.numel for w in weights]
        for w, kept, grown in zip(weights, keep.split(sizes), grow.split(sizes)):
            w.rewire(kept.view(w.shape), grown.view(w.shape), self.optimizer)

    def current_targets(self) -> dict[str, int]:
        if self.config.ranking == "global":  # only the total is fixed; layers may trade weights
            return {w.name: w.active for w in self.weights}
        return dict(self.targets)
