"""Dynamic sparse training: drop and grow weights on a schedule while training."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from sparsetrain.algorithms.base import Sparsifier, SparsityConfig, warn_few_updates
from sparsetrain.config import check_range, option
from sparsetrain.schedules import ANNEALING, DecaySchedule, UpdateSchedule
from sparsetrain.errors import UserError
from sparsetrain.sparse import SparseWeight, generator, random_scores, topk_mask


@dataclass(frozen=True)
class DynamicConfig(SparsityConfig):
    """When and how much a dynamic method rewires."""

    update_interval: int = option(100, "steps (or epochs, see interval_unit) between topology updates")
    interval_unit: str = option("steps", "unit of update_interval", choices=("steps", "epochs"))
    drop_fraction: float = option(0.3, "fraction of active weights dropped at the first update, in [0, 1]")
    anneal: str = option("cosine", "how the drop fraction decays to anneal_floor at stop_fraction "
                         "(step: halved at 3/4 of it, MEST's scripts)", choices=ANNEALING)
    anneal_floor: float = option(0.0, "the drop fraction reached at stop_fraction by cosine/linear decay "
                                 "(frozen afterwards; at most drop_fraction)")
    stop_fraction: float = option(0.75, "fraction of training after which the topology is frozen, in (0, 1]")
    ranking: str = option("layer", "rank weights within each layer or across all layers",
                          choices=("layer", "global"))
    grow_unactivated_only: bool = option(False, "grow only weights that were never active (ITOP exploration; "
                                         "when fewer remain than are needed, all of them and the rest as usual)")
    reinit_when_same: bool = option(False, "a weight dropped and regrown in the same update restarts at 0 "
                                    "with zeroed optimizer state (False: it keeps its value and state, "
                                    "as RigL's reinit_when_same=False and the ITOP/GraNet code)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("update_interval", self.update_interval, 1)
        check_range("drop_fraction", self.drop_fraction, 0, 1)
        check_range("stop_fraction", self.stop_fraction, 0, 1, low_open=True)
        check_range("anneal_floor", self.anneal_floor, 0, 1)


class DynamicSparsifier(Sparsifier):
    """Drop the lowest `drop_scores` among active weights and grow by `grow_rule`.

    Order after each optimizer step that is an update step: read the drop fraction from
    the schedule, score the active weights, keep the top (active − k) by drop score (ties to
    the lower position), grow k among the positions not kept (a weight just dropped may come
    back, as in RigL's reference code) — uniformly at random, at the largest |dense
    gradient|, or at the largest `grow_scores` — set newly grown weights to 0, and zero
    optimizer state of every position that is not kept. A weight dropped and regrown in the
    same update keeps its value and optimizer state (google-research/rigl
    ``sparse_optimizers_base.py``, ``reinit_when_same=False``) unless ``reinit_when_same``.
    Subclasses override only the scores (and, for MEST, the counts).

    The update works on the sorted flat positions of the active weights (the sparse
    backend's CSR order), so apart from RigL's one pass over the dense gradient it costs
    O(active + grown), not O(dense size), on every backend.
    """

    config_class: ClassVar[type] = DynamicConfig
    needs_dense_grad: ClassVar[bool] = False
    grow_rule: ClassVar[str] = "random"
    """"random": a uniformly random set among the candidates (SET); "gradient": the largest
    |dense gradient| (RigL); "scores": the largest `grow_scores`."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass that defines `grow_scores` grows by them (unless it sets ``grow_rule``);
        one whose `drop_scores` takes only (weight, grad) returns dense scores, read here at
        the active positions."""
        super().__init_subclass__(**kwargs)
        if "grow_scores" in cls.__dict__ and "grow_rule" not in cls.__dict__:
            cls.grow_rule = "scores"
        dense = cls.__dict__.get("drop_scores")
        if dense is not None and len(inspect.signature(dense).parameters) == 3:
            def drop_scores(self, weight, grad, active, _dense=dense):  # noqa: ANN001
                scores = _dense(self, weight, grad).reshape(-1)
                return scores[active.to(scores.device)]
            drop_scores.__doc__ = dense.__doc__
            cls.drop_scores = drop_scores

    def __init__(self, model, optimizer=None, **kwargs: Any) -> None:
        super().__init__(model, optimizer, **kwargs)
        cfg = self.config
        interval = self.interval_steps(cfg.update_interval, cfg.interval_unit)
        self.stop_step = int(cfg.stop_fraction * self.total_steps)
        self.schedule = UpdateSchedule(interval=interval, stop=self.stop_step)
        self.drop_schedule = DecaySchedule(cfg.drop_fraction, self.stop_step, cfg.anneal,
                                           min(cfg.anneal_floor, cfg.drop_fraction))  # never above the start
        self._arm_dense_grads()
        warn_few_updates(self.name, "topology update", self.scheduled_updates(), interval,
                         self.stop_step, self.total_steps, "stop_fraction")

    # --- what a method overrides -------------------------------------------------------
    def scheduled_updates(self) -> int:
        """How many topology updates the schedule gives the whole run."""
        return self.schedule.stop // self.schedule.interval

    def drop_scores(self, weight: SparseWeight, grad: torch.Tensor | None,
                    active: torch.Tensor) -> torch.Tensor:
        """One score per active weight, in the order of ``active`` (its ascending flat positions,
        `SparseWeight.active_index`); higher = more worth keeping. Default: weight magnitude.
        ``grad`` is the dense gradient (weight's shape) or None."""
        return weight.active_values().abs()

    def grow_scores(self, weight: SparseWeight, grad: torch.Tensor | None,
                    gen: torch.Generator) -> torch.Tensor:
        """For ``grow_rule = "scores"``: a dense score per position, higher = grown first."""
        return random_scores(weight.shape, gen, weight.mask.device)

    def plan(self, active: int, target: int, fraction: float, numel: int) -> tuple[int, int]:
        """(weights kept, weights grown) for a group with ``active`` weights now."""
        n_drop = int(fraction * active)
        return active - n_drop, n_drop

    def select_kept(self, scores: torch.Tensor, n_keep: int, fraction: float) -> torch.Tensor:
        """One bool per active weight (in the order of ``scores``), True for those that stay:
        by default the ``n_keep`` highest scores (ties to the lower position)."""
        return topk_mask(scores, n_keep)

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
        """Each weight's dense gradient, copied where it is the parameter's own ``.grad`` (which
        the step masks in place); a backend that forms it afresh (sparse) is not copied."""
        out = {}
        for w in self.weights:
            g = w.dense_grad()
            own = w.parameter.grad
            shared = g is not None and own is not None and g.untyped_storage().data_ptr() == \
                own.untyped_storage().data_ptr()
            out[w.name] = g.clone() if shared else g
        return out

    def _groups(self) -> list[list[int]]:
        indices = list(range(len(self.weights)))
        return [indices] if self.config.ranking == "global" else [[i] for i in indices]

    @torch.no_grad()
    def update_topology(self, grads: dict[str, torch.Tensor | None]) -> None:
        """Rewire every group once, using the drop fraction of the current step."""
        fraction = self.drop_schedule.at(self.step_count)
        for group in self._groups():
            self._rewire(group, fraction, grads)

    def _rewire(self, group: list[int], fraction: float, grads: dict) -> None:
        """Drop and grow in one group of layers (one layer, or all of them for global ranking).

        Positions are flat indices into the group's layers laid end to end, so the selection
        is the same as one over the concatenated dense tensors (ties to the lower position)."""
        weights = [self.weights[i] for i in group]
        offsets = [0]
        for w in weights:
            offsets.append(offsets[-1] + w.numel)
        before = [w.active_index() for w in weights]
        active_flat = _cat([b + off if off else b for b, off in zip(before, offsets)])
        active = active_flat.numel()
        target = sum(self.targets[w.name] for w in weights)
        n_keep, n_grow = self.plan(active, target, fraction, offsets[-1])
        scores = _cat([self.drop_scores(w, grads.get(w.name), b).float().reshape(-1)
                       for w, b in zip(weights, before)])
        keep = self.select_kept(scores, n_keep, fraction)  # one bool per active weight
        n_grow += n_keep - int(keep.sum())  # a rule that keeps fewer grows more, to the same count
        kept, dropped = _split(active_flat, keep)
        excluded = kept if self.grow_from_kept_complement else active_flat
        first = active_flat.new_zeros(0)
        if self.config.grow_unactivated_only:
            retired = _cat([self.retired[w.name].positions().to(active_flat.device) + off
                            for w, off in zip(weights, offsets)])
            explored = torch.sort(torch.cat([active_flat, retired])).values
            if offsets[-1] - explored.numel() >= n_grow:
                excluded = explored
            else:  # too few never-active positions: grow all of them, then the rest as usual (ITOP)
                unexplored = torch.ones(offsets[-1], dtype=torch.bool, device=explored.device)
                unexplored[explored] = False
                first = torch.nonzero(unexplored).reshape(-1)
                excluded = torch.sort(torch.cat([excluded, first])).values
        grown = self._grow(group, weights, grads, excluded, n_grow - first.numel(), offsets[-1])
        if first.numel():
            grown = torch.sort(torch.cat([first, grown])).values
        if not self.config.reinit_when_same and dropped.numel() and grown.numel():
            keep, dropped, grown = _keep_regrown(active_flat, keep, dropped, grown)
        start = 0
        for w, b, lo, hi in zip(weights, before, offsets, offsets[1:]):
            keep_w = keep[start:start + b.numel()]
            start += b.numel()
            if len(weights) > 1:
                grown_w, dropped_w = _slice(grown, lo, hi) - lo, _slice(dropped, lo, hi) - lo
            else:
                grown_w, dropped_w = grown, dropped
            w.rewire_flat(keep_w, grown_w, self.optimizer)
            self._retire(w, dropped_w, grown_w)

    def _grow(self, group: list[int], weights: list[SparseWeight], grads: dict,
              excluded: torch.Tensor, n: int, total: int) -> torch.Tensor:
        """Ascending positions of the ``n`` weights to grow outside ``excluded`` (ascending)."""
        device = excluded.device
        if n == 0:
            return excluded.new_zeros(0)
        if self.grow_rule == "random":
            from sparsetrain.sparse.select import sample_excluding  # numba: imported on first use
            gen = generator(self.seed, self.step_count, "grow", *group)
            return torch.from_numpy(sample_excluding(total, n, excluded.cpu().numpy(), gen)).to(device)
        if self.grow_rule == "gradient":
            parts = []
            for w in weights:
                g = grads.get(w.name)
                if g is None:
                    raise UserError(f"{self.name} needs gradients at the update step; call backward() before step()")
                parts.append(g.reshape(-1))
            flat = _cat(parts).float()
            if flat.device.type == "cpu":
                from sparsetrain.sparse.select import top_abs_excluding  # numba: imported on first use
                # the collecting pass split over torch's threads: 1.4x faster at 2 (OpenMP layer)
                chosen, available = top_abs_excluding(flat.numpy(), n, excluded.numpy(), torch.get_num_threads())
                if available >= 0:  # -1: a NaN gradient, which the sort below orders as largest
                    if n > available:
                        raise ValueError(f"cannot choose {n} positions out of {available}")
                    return torch.from_numpy(chosen)
            scores = flat.abs()
        else:
            scores = _cat([self.grow_scores(w, grads.get(w.name), generator(self.seed, self.step_count, "grow", i))
                           .float().reshape(-1) for i, w in zip(group, weights)])
        allowed = torch.ones(total, dtype=torch.bool, device=scores.device)
        allowed[excluded.to(scores.device)] = False
        return torch.nonzero(topk_mask(scores, n, allowed=allowed)).reshape(-1).to(device)

    def current_targets(self) -> dict[str, int]:
        if self.config.ranking == "global":  # only the total is fixed; layers may trade weights
            return {w.name: w.active for w in self.weights}
        return dict(self.targets)


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _slice(positions: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """The entries of the ascending ``positions`` in [lo, hi)."""
    if lo == 0 and (positions.numel() == 0 or int(positions[-1]) < hi):
        return positions
    bounds = torch.searchsorted(positions, torch.tensor([lo, hi], device=positions.device))
    return positions[int(bounds[0]):int(bounds[1])]


def _keep_regrown(active: torch.Tensor, keep: torch.Tensor, dropped: torch.Tensor,
                  grown: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Treat the grown positions that were just dropped as kept, so they keep their value and
    optimizer state: the new (keep, dropped, grown), position lists ascending."""
    again = torch.isin(grown, dropped)
    if not bool(again.any()):
        return keep, dropped, grown
    back = grown[again]
    return keep | torch.isin(active, back), dropped[~torch.isin(dropped, back)], grown[~again]


def _split(positions: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(``positions[keep]``, ``positions[~keep]``)."""
    if positions.device.type == "cpu":
        from sparsetrain.sparse.select import split  # numba: imported on first use
        kept, dropped = split(positions.numpy(), keep.numpy())
        return torch.from_numpy(kept), torch.from_numpy(dropped)
    return positions[keep], positions[~keep]
