"""GraNet: gradual pruning plus zero-cost neuroregeneration."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from sparsetrain.algorithms.base import ALL_STRUCTURES
from sparsetrain.algorithms.dynamic import DynamicConfig, DynamicSparsifier
from sparsetrain.algorithms.gmp import GradualConfig, GradualPruning
from sparsetrain.algorithms.pruning import ALLOCATIONS
from sparsetrain.algorithms.registry import register_method
from sparsetrain.config import option
from sparsetrain.schedules import ANNEALING


@dataclass(frozen=True)
class GraNetConfig(GradualConfig, DynamicConfig):
    """GraNet has two schedules: the gradual pruning cut (``prune_ranking`` until
    ``prune_stop_fraction``) and the regrowth (``ranking`` until ``stop_fraction``, as in RigL)."""

    renamed: ClassVar[dict[str, str]] = {"allocation": "prune_ranking", "end_fraction": "prune_stop_fraction"}
    prune_keys: ClassVar[tuple[str, str]] = ("prune_ranking", "prune_stop_fraction")
    initial_density: float = option(0.5, "density before pruning starts (0.5 = the reference's sparse "
                                    "init; 1 = start dense)")
    prune_ranking: str = option("global", "how each gradual pruning step allocates its cut "
                                "(global magnitude in the reference)", choices=ALLOCATIONS)
    prune_stop_fraction: float = option(0.5, "fraction of training by which `density` is reached, no "
                                        "pruning after it (the reference scripts: epoch 80 of 160 on CIFAR, "
                                        "30 of 100 on ImageNet)")
    ranking: str = option("layer", "regrowth: rank weights within each layer or across all layers",
                          choices=("layer", "global"))
    drop_fraction: float = option(0.5, "fraction of each layer's active weights dropped and regrown at "
                                  "the first update (the reference's prune rate)")
    anneal: str = option("cosine", "how the regrowth fraction decays to anneal_floor at stop_fraction",
                         choices=ANNEALING)
    anneal_floor: float = option(0.005, "the regrowth fraction at stop_fraction (the reference's "
                                 "CosineDecay eta_min)")
    stop_fraction: float = option(1.0, "fraction of training after which the topology is frozen")


@register_method("granet", help="gradual pruning + magnitude drop / gradient regrowth (Liu et al. 2021)")
class GraNet(GradualPruning, DynamicSparsifier):
    """Liu et al. 2021, "Sparse Training via Boosting Pruning Plasticity with
    Neuroregeneration", NeurIPS.

    At every update step (every ``update_interval`` steps) two things happen, in the order
    of the reference code (VITA-Group/GraNet, ``CIFAR/sparselearning/core.py``
    ``Masking.step``): first gradual pruning, a global magnitude cut to the cubic schedule's
    density (as GMP; until ``prune_stop_fraction``, 0.5 as the CIFAR scripts' epoch 80 of 160); then
    zero-cost neuroregeneration: in each layer drop ⌈r_t · active⌉ of the smallest
    magnitudes and regrow as many where the dense gradient is largest, with r_t decaying
    from ``drop_fraction`` (0.5) by cosine over training to ``anneal_floor`` (the reference's
    eta_min 0.005). New weights start at 0 with zeroed optimizer state; a weight dropped and
    regrown in the same update keeps its value and state, as in the reference. Starts from a
    random ERK mask at ``initial_density`` (0.5, the reference default) or dense with
    ``initial_density=1``.

    Matched from the reference: pruning before regrowth at the same step, global magnitude
    gradual pruning, per-layer ⌈rate · nonzeros⌉ drop counts, gradient growth among all
    positions not kept, cosine decay over the whole run with its floor. Differences (see
    docs/fidelity.md): the regrowth runs from the first update step rather than from the
    start of pruning (the same with ``start_fraction=0``), and the last pruning step reaches
    ``density`` (the reference's last step stops one step short, at
    d_f + (d_i − d_f) / n³ for n pruning steps).

    With a ``structure`` both halves keep it: the pruning cut as GMP's (`GradualPruning`:
    whole groups; N:M through n:M masks down to N) and the regrowth as the dynamic methods'
    (`sparsetrain.algorithms.structured`: whole groups; N:M regrows inside each group what it
    lost, so a group keeps its n while the pruning decays it).
    """

    name = "granet"
    config_class: ClassVar[type] = GraNetConfig
    structures_supported = ALL_STRUCTURES
    needs_dense_grad = True
    grow_rule = "gradient"

    def __init__(self, model, optimizer=None, **kwargs: Any) -> None:
        super().__init__(model, optimizer, **kwargs)
        self.pruning = self._gradual_schedule()

    def plan(self, active: int, target: int, fraction: float, numel: int) -> tuple[int, int]:
        n_drop = min(active, math.ceil(fraction * active - 1e-9))
        return active - n_drop, n_drop

    def update_topology(self, grads: dict[str, torch.Tensor | None]) -> None:
        self.gradual_prune_if_due()  # the reference prunes first, then regenerates
        super().update_topology(grads)
