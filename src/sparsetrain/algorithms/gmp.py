"""Gradual magnitude pruning during training (Zhu & Gupta 2017) and the shared gradual machinery."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from sparsetrain.algorithms.base import ALL_STRUCTURES, Sparsifier, SparsityConfig, warn_few_updates
from sparsetrain.algorithms.pruning import (
    ALLOCATIONS, Grouping, allocation_counts, apply_masks, distribution_options, grouping_of, select_masks,
    structured_counts,
)
from sparsetrain.algorithms.registry import register_method
from sparsetrain.config import check_range, option
from sparsetrain.criteria import lamp_groups, score
from sparsetrain.distributions import allocate
from sparsetrain.errors import ConfigError, UserError
from sparsetrain.schedules import CubicSchedule
from sparsetrain.sparse import generator, random_scores, topk_mask
from sparsetrain.sparse.structures import Structure, Unstructured

DATA_FREE_CRITERIA = ("magnitude", "lamp", "random")


@dataclass(frozen=True)
class GradualConfig(SparsityConfig):
    """The cubic density schedule and how each pruning step allocates its cut."""

    renamed: ClassVar[dict[str, str]] = {"allocation": "ranking", "end_fraction": "stop_fraction"}
    initial_density: float = option(1.0, "density before pruning starts; 1 = dense, below 1 starts "
                                    "from a random mask at `distribution`")
    start_fraction: float = option(0.0, "fraction of training after which pruning starts (t0)")
    stop_fraction: float = option(0.75, "fraction of training by which `density` is reached (t0 + n*interval); "
                                  "no pruning after it")
    update_interval: int = option(100, "steps (or epochs, see interval_unit) between pruning steps")
    interval_unit: str = option("steps", "unit of update_interval", choices=("steps", "epochs"))
    ranking: str = option("layer", "global ranking, layer-wise at `distribution`, or the global "
                             "ranking's per-layer ratios with random positions", choices=ALLOCATIONS)
    criterion: str = option("magnitude", "what each pruning step ranks by", choices=DATA_FREE_CRITERIA)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("initial_density", self.initial_density, 0, 1, low_open=True)
        check_range("start_fraction", self.start_fraction, 0, 1, high_open=True)
        check_range(self.prune_keys[1], self.prune_stop, 0, 1, low_open=True)
        check_range("update_interval", self.update_interval, 1)
        if self.initial_density < self.density:
            raise ConfigError(f"initial_density ({self.initial_density:g}) must be at least density "
                              f"({self.density:g}): gradual pruning only removes weights")
        if self.prune_stop <= self.start_fraction:
            raise ConfigError(f"{self.prune_keys[1]} must be greater than start_fraction")

    prune_keys: ClassVar[tuple[str, str]] = ("ranking", "stop_fraction")
    """The fields holding the pruning cut's ranking and the end of the pruning schedule."""

    @property
    def prune_ranking(self) -> str:
        return getattr(self, self.prune_keys[0])

    @property
    def prune_stop(self) -> float:
        return getattr(self, self.prune_keys[1])


class GradualPruning:
    """Mixin for a `Sparsifier`: prune to the cubic schedule's density after its update steps.

    Each pruning step ranks the active weights by ``criterion`` and keeps round(d_t · N)
    of them, allocated as ``ranking``; pruned weights and their optimizer state become 0.

    With a ``structure``, every step keeps whole groups (block, channel: ranked by the L2 norm
    of their magnitudes, or Torch-Pruning's group LAMP for ``criterion="lamp"``; each layer's
    count, or the global prefix, rounded to whole groups). N:M is pruned gradually in the count
    per group: the step at density d_t keeps the n_t = round(d_t · M) largest of every M
    (clamped to [N, M]), so every mask is exactly n_t:M and the last one exactly N:M (the
    decaying N:M masks of Kao et al. 2022); the schedule then ends at N/M.
    """

    weights: list
    config: Any

    def _gradual_schedule(self) -> CubicSchedule:
        cfg = self.config
        interval = self.interval_steps(cfg.update_interval, cfg.interval_unit)
        start = int(cfg.start_fraction * self.total_steps)
        end = int(cfg.prune_stop * self.total_steps)
        if start + interval > self.total_steps:
            raise UserError(f"{self.name}: update_interval ({interval} steps) leaves no pruning step "
                            f"between start ({start}) and the end of training ({self.total_steps})")
        rounds = max(1, (end - start) // interval)
        warn_few_updates(self.name, "pruning step", rounds, interval, start + rounds * interval,
                         self.total_steps, "stop_fraction")
        return CubicSchedule(cfg.initial_density, cfg.density, start, interval, rounds)

    def _grouping_at(self, density: float) -> Grouping | None | bool:
        """The grouping of a pruning step to ``density``: None when unstructured, the
        structure's otherwise (for N:M the n_t:M of the step); False when N:M keeps all M."""
        grouping = grouping_of(self, lamp_groups if self.config.criterion == "lamp" else "norm")
        if grouping is None:
            return None
        step = grouping.at_density(density)
        return False if step is None else step

    def init_masks(self) -> None:
        """Dense, or a random mask at ``initial_density`` spread by ``distribution`` (whole
        random groups of the structure; for N:M, n_0 random weights of every M)."""
        cfg = self.config
        grouping = self._grouping_at(cfg.initial_density)
        if cfg.initial_density >= 1 or grouping is False:
            for w in self.weights:
                w.set_mask(torch.ones_like(w.mask))
            return
        magnitudes = self.by_part({w.name: w.values.abs() for w in self.weights})
        shapes = {key: tuple(m.shape) for key, m in magnitudes.items()}
        counts = structured_counts(allocate(cfg.distribution, shapes, cfg.initial_density,
                                            **self._distribution_options(magnitudes)), shapes, grouping)
        for index, w in enumerate(self.weights):
            scores = random_scores(w.shape, generator(self.seed, 0, "init", index), w.mask.device)
            parts = self.by_part({w.name: scores})
            w.set_mask(self.join_parts({key: topk_mask(s, counts[key]) if grouping is None
                                        else grouping.select(key, s, counts[key])
                                        for key, s in parts.items()})[w.name])

    def _distribution_options(self, scores: dict[str, torch.Tensor]) -> dict[str, Any]:
        """`distribution_options` for scores keyed by logical layer (`by_part`)."""
        options = distribution_options(self.config, scores)
        if "densities" in options:
            options["densities"] = self.part_densities(options["densities"])
        return options

    @torch.no_grad()
    def prune_to(self, density: float) -> None:
        """Keep round(density · N) of the active weights (never more than are active); with a
        structure, whole groups (see the class docstring)."""
        cfg = self.config
        grouping = self._grouping_at(density)
        if grouping is False:  # N:M at this density keeps every weight
            return
        before = self._active_indices()
        allowed = {w.name: w.mask.clone() for w in self.weights}
        criterion = "magnitude" if grouping is not None and cfg.criterion == "lamp" else cfg.criterion
        scores = score(criterion, self.model, None, weights=self.weights,
                       seed=self.seed * 100_003 + self.step_count)
        n_of_m = grouping is not None and grouping.fixed  # n_t of every M, in every layer
        layerwise = cfg.prune_ranking == "layer" or n_of_m
        if layerwise:  # each logical layer (q, k, v of a fused weight) on its own
            scores, allowed = self.by_part(scores), self.by_part(allowed)
            shapes = {n: tuple(s.shape) for n, s in scores.items()}
        if n_of_m:
            counts = {n: grouping.round(n, 0, shapes[n]) for n in shapes}
        elif layerwise:
            wanted = structured_counts(allocate(cfg.distribution, shapes, density,
                                                **self._distribution_options(scores)), shapes, grouping)
            final = self.part_target_counts()
            active = {n: int(a.sum()) for n, a in allowed.items()}
            # never grow, never go below the final target (rounding can differ by one weight)
            counts = {n: max(min(wanted[n], active[n]), min(final[n], active[n])) for n in wanted}
        else:
            k_density = min(density, sum(w.active for w in self.weights) / sum(w.numel for w in self.weights))
            counts = allocation_counts(scores, k_density, allocation=cfg.prune_ranking, allowed=allowed,
                                       grouping=grouping)
        masks = select_masks(scores, counts, allocation=cfg.prune_ranking, allowed=allowed,
                             seed=self.seed, step=self.step_count, grouping=grouping)
        if layerwise:
            masks = self.join_parts(masks)
        apply_masks(self.weights, masks, self.optimizer)
        self._record_active(before)

    def mask_structure(self) -> Structure:
        """N:M: the n:M of the last pruning step so far (of ``initial_density`` before the
        first; unstructured while that is dense); any other structure: itself."""
        grouping = grouping_of(self)
        if grouping is None or not grouping.fixed:
            return self.structure
        schedule, t = self.pruning, self.step_count
        last = schedule.start + (min(t, schedule.end) - schedule.start) // schedule.interval * schedule.interval
        step = grouping.at_density(schedule.at(last) if t >= schedule.start else self.config.initial_density)
        return Unstructured() if step is None else step.structure

    def gradual_prune_if_due(self) -> None:
        """Prune once if the step just taken is a pruning step of the schedule."""
        t = self.step_count
        if self.pruning.is_update(t) and getattr(self, "_pruned_at", None) != t:
            self.prune_to(self.pruning.at(t))
            self._pruned_at = t

    def step(self) -> None:
        super().step()
        self.gradual_prune_if_due()

    def current_targets(self) -> dict[str, int]:
        layerwise = self.config.prune_ranking == "layer" and getattr(self.config, "ranking", "layer") == "layer"
        if layerwise and self.step_count >= self.pruning.end:
            return dict(self.targets)
        return {w.name: w.active for w in self.weights}  # the total moves until the schedule ends


@dataclass(frozen=True)
class GMPConfig(GradualConfig):
    distribution: str = option("uniform", "layer-wise density allocation (ranking=layer)",
                               choices=("uniform", "er", "erk", "scores", "custom"))


@register_method("gmp", help="gradual magnitude pruning on the cubic schedule (Zhu & Gupta 2017)")
class GMP(GradualPruning, Sparsifier):
    """Zhu & Gupta 2017, "To prune, or not to prune: exploring the efficacy of pruning for
    model compression".

    Starting at ``initial_density`` (dense by default), after every ``update_interval``
    steps from t0 the smallest-magnitude active weights are removed so the density follows
    d_t = d_f + (d_i − d_f)(1 − (t − t0)/(nΔt))³ until it reaches ``density`` at
    t0 + nΔt (n = ⌊(end − start)/Δt⌋). Layer-wise at ``distribution`` (uniform, as in the
    paper) or globally ranked (``ranking``). Pruned weights never come back.
    """

    name = "gmp"
    config_class: ClassVar[type] = GMPConfig
    structures_supported = ALL_STRUCTURES

    def __init__(self, model, optimizer=None, **kwargs: Any) -> None:
        super().__init__(model, optimizer, **kwargs)
        self.pruning = self._gradual_schedule()
