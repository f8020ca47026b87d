"""Dynamic sparse training: drop and grow weights on a schedule while training."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from sparsetrain.algorithms.base import Sparsifier, SparsityConfig, warn_few_updates
from sparsetrain.algorithms.structured import rewire_structured
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
        if self.ranking == "global" and self.structure == "channel":
            raise UserError("ranking=global cannot keep structure=channel with exact counts (channels differ "
                            "in size between layers); use ranking=layer")


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

    def segments(self) -> list[Segment]:
        """Every logical layer in weight order: a whole weight, or each equal row block of a fused
        weight (q/k/v of ``in_proj_weight``, an LSTM's gates), which keeps its own count."""
        out = []
        for index, w in enumerate(self.weights):
            parts = len(self.part_targets[w.name])
            size = w.numel // parts
            for part, target in enumerate(self.part_targets[w.name]):
                out.append(Segment(index, part * size, (part + 1) * size, target,
                                   str(index) if parts == 1 else f"{index}.{part}"))
        return out

    def _groups(self) -> list[list[Segment]]:
        """The logical layers ranked together: each alone, or all at once (``ranking=global``)."""
        segments = self.segments()
        return [segments] if self.config.ranking == "global" else [[s] for s in segments]

    @torch.no_grad()
    def update_topology(self, grads: dict[str, torch.Tensor | None]) -> None:
        """Rewire every group once, using the drop fraction of the current step."""
        fraction = self.drop_schedule.at(self.step_count)
        for group in self._groups():
            self._rewire(group, fraction, grads)

    def _rewire(self, group: list[Segment], fraction: float, grads: dict) -> None:
        """Drop and grow in one group of logical layers (one, or all of them for global ranking).

        Positions are flat indices into the group's segments laid end to end, so the selection
        is the same as one over the concatenated dense tensors (ties to the lower position).
        Under a structure the update keeps it (see `sparsetrain.algorithms.structured`)."""
        if not self.structure.unstructured:
            return rewire_structured(self, group, fraction, grads)
        full = {s.index: self.weights[s.index].active_index() for s in group}
        scores_of = {i: self.drop_scores(self.weights[i], grads.get(self.weights[i].name), b).float().reshape(-1)
                     for i, b in full.items()}
        bounds = [s.bounds_in(full[s.index]) for s in group]  # each segment's slice of its weight's actives
        offsets, before, scores = [0], [], []
        for s, (lo, hi) in zip(group, bounds):
            before.append(full[s.index][lo:hi] - s.lo if s.lo else full[s.index][lo:hi])
            scores.append(scores_of[s.index][lo:hi])
            offsets.append(offsets[-1] + s.size)
        active_flat = _cat([b + off if off else b for b, off in zip(before, offsets)])
        active = active_flat.numel()
        n_keep, n_grow = self.plan(active, sum(s.target for s in group), fraction, offsets[-1])
        keep = self.select_kept(_cat(scores), n_keep, fraction)  # one bool per active weight
        n_grow += n_keep - int(keep.sum())  # a rule that keeps fewer grows more, to the same count
        kept, dropped = _split(active_flat, keep)
        excluded = kept if self.grow_from_kept_complement else active_flat
        first = active_flat.new_zeros(0)
        if self.config.grow_unactivated_only:
            retired = _cat([_slice(self.retired[self.weights[s.index].name].positions().to(active_flat.device),
                                   s.lo, s.hi) - s.lo + off for s, off in zip(group, offsets)])
            explored = torch.sort(torch.cat([active_flat, retired])).values
            if offsets[-1] - explored.numel() >= n_grow:
                excluded = explored
            else:  # too few never-active positions: grow all of them, then the rest as usual (ITOP)
                unexplored = torch.ones(offsets[-1], dtype=torch.bool, device=explored.device)
                unexplored[explored] = False
                first = torch.nonzero(unexplored).reshape(-1)
                excluded = torch.sort(torch.cat([excluded, first])).values
        grown = self._grow(group, grads, excluded, n_grow - first.numel(), offsets[-1])
        if first.numel():
            grown = torch.sort(torch.cat([first, grown])).values
        if not self.config.reinit_when_same and dropped.numel() and grown.numel():
            keep, dropped, grown = _keep_regrown(active_flat, keep, dropped, grown)
        self._apply_rewire(group, full, bounds, offsets, keep, grown, dropped)

    def _apply_rewire(self, group: list[Segment], full: dict[int, torch.Tensor], bounds: list[tuple[int, int]],
                      offsets: list[int], keep: torch.Tensor, grown: torch.Tensor, dropped: torch.Tensor) -> None:
        """Rewire each weight of ``group`` once: its segments' decisions (group positions) mapped
        back to the weight's own flat positions; active weights outside the group stay."""
        per_weight: dict[int, tuple[torch.Tensor, list, list]] = {}
        start = 0
        for s, (first, last), lo, hi in zip(group, bounds, offsets, offsets[1:]):
            keep_s = keep[start:start + last - first]
            start += last - first
            if len(group) > 1:
                grown_s, dropped_s = _slice(grown, lo, hi) - lo, _slice(dropped, lo, hi) - lo
            else:
                grown_s, dropped_s = grown, dropped
            if s.index not in per_weight:
                per_weight[s.index] = (torch.ones(full[s.index].numel(), dtype=torch.bool,
                                                  device=keep.device), [], [])
            keep_w, grown_w, dropped_w = per_weight[s.index]
            keep_w[first:last] = keep_s
            grown_w.append(grown_s + s.lo if s.lo else grown_s)
            dropped_w.append(dropped_s + s.lo if s.lo else dropped_s)
        for index, (keep_w, grown_w, dropped_w) in per_weight.items():
            w = self.weights[index]
            grown_all, dropped_all = _cat(grown_w), _cat(dropped_w)
            w.rewire_flat(keep_w, grown_all, self.optimizer)
            self._retire(w, dropped_all, grown_all)

    def _grow(self, group: list[Segment], grads: dict, excluded: torch.Tensor, n: int,
              total: int) -> torch.Tensor:
        """Ascending positions of the ``n`` weights to grow outside ``excluded`` (ascending)."""
        device = excluded.device
        if n == 0:
            return excluded.new_zeros(0)
        if self.grow_rule == "random":
            from sparsetrain.sparse.select import sample_excluding  # numba: imported on first use
            gen = generator(self.seed, self.step_count, "grow", *(s.key for s in group))
            return torch.from_numpy(sample_excluding(total, n, excluded.cpu().numpy(), gen)).to(device)
        if self.grow_rule == "gradient":
            parts = []
            for s in group:
                g = grads.get(self.weights[s.index].name)
                if g is None:
                    raise UserError(f"{self.name} needs gradients at the update step; call backward() before step()")
                parts.append(g.reshape(-1)[s.lo:s.hi])
            flat = _cat(parts).float()
            if flat.device.type == "cpu":
                from sparsetrain.sparse.select import top_abs_excluding  # numba: imported on first use
                # the collecting pass split over torch's threads: 1.4x faster at 2 (OpenMP layer)
                chosen, available = top_abs_excluding(flat.contiguous().numpy(), n, excluded.numpy(),
                                                      torch.get_num_threads())
                if available >= 0:  # -1: a NaN gradient, which the sort below orders as largest
                    if n > available:
                        raise ValueError(f"cannot choose {n} positions out of {available}")
                    return torch.from_numpy(chosen)
            scores = flat.abs()
        else:
            dense = {i: self.grow_scores(self.weights[i], grads.get(self.weights[i].name),
                                         generator(self.seed, self.step_count, "grow", i)).float().reshape(-1)
                     for i in dict.fromkeys(s.index for s in group)}  # once per weight, sliced per part
            scores = _cat([dense[s.index][s.lo:s.hi] for s in group])
        allowed = torch.ones(total, dtype=torch.bool, device=scores.device)
        allowed[excluded.to(scores.device)] = False
        return torch.nonzero(topk_mask(scores, n, allowed=allowed)).reshape(-1).to(device)

    def current_targets(self) -> dict[str, int]:
        if self.config.ranking == "global":  # only the total is fixed; layers may trade weights
            return {w.name: w.active for w in self.weights}
        return dict(self.targets)


@dataclass(frozen=True)
class Segment:
    """One logical layer of a dynamic update: flat positions [lo, hi) of weight ``index`` (the
    whole weight, or one equal row block of a fused weight) holding ``target`` active weights.
    ``key`` names it in seeds (the weight index alone for a whole weight, as before parts)."""

    index: int
    lo: int
    hi: int
    target: int
    key: str

    @property
    def size(self) -> int:
        return self.hi - self.lo

    def bounds_in(self, active: torch.Tensor) -> tuple[int, int]:
        """The slice of the weight's ascending active positions ``active`` inside this segment."""
        if self.lo == 0 and (active.numel() == 0 or int(active[-1]) < self.hi):
            return 0, active.numel()
        bounds = torch.searchsorted(active, torch.tensor([self.lo, self.hi], device=active.device))
        return int(bounds[0]), int(bounds[1])


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
