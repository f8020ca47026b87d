"""DSN: dynamic sparse training of wide 1D kernels, each channel group inside its own receptive field."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from sparsetrain.algorithms.dynamic import DynamicConfig, DynamicSparsifier
from sparsetrain.algorithms.registry import register_method
from sparsetrain.config import check_range, option
from sparsetrain.errors import UserError
from sparsetrain.schedules import ANNEALING
from sparsetrain.sparse import generator, random_scores, topk_mask


@dataclass(frozen=True)
class DSNConfig(DynamicConfig):
    """The reference's defaults (QiaoXiao7282/DSN, ``trainer_DSN.py``, ``sparselearning/core_kernel.py``)."""

    density: float = option(0.2, "density inside each group's region (0.2 for UCR, 0.1 for UEA in the paper)")
    distribution: str = option("dsn", "DSN's own allocation: in every wide kernel, group g keeps "
                               "int(density * its weights in its region)", choices=("dsn",))
    groups: int = option(3, "channel groups per wide kernel; group g sees the first (g+1)*(kernel//groups) taps "
                         "(--c_size)")
    min_kernel: int = option(5, "Conv1d layers with at least this many taps are sparse; smaller ones stay dense")
    init: str = option("sorted", "initial connections: sorted (the first taps of each region, the reference's "
                       "remain_sort) or random (uniform inside the region, remain_random)", choices=("sorted", "random"))
    growth: str = option("random", "regrowth inside the region: random or by |gradient|", choices=("random", "gradient"))
    update_interval: int = option(5, "epochs (see interval_unit) between updates (--update_frequency)")
    interval_unit: str = option("epochs", "unit of update_interval", choices=("steps", "epochs"))
    drop_fraction: float = option(0.5, "fraction of each group's active weights dropped and regrown at the first "
                                  "update (--death-rate)")
    anneal: str = option("cosine", "how that fraction decays until stop_fraction", choices=ANNEALING)
    stop_fraction: float = option(0.8, "fraction of training after which the topology is frozen (the reference "
                                  "drops its rate to 0.001 there)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("groups", self.groups, 1)
        check_range("min_kernel", self.min_kernel, 1)


def regions(kernel: int, groups: int) -> list[int]:
    """Taps each group may use: (g + 1) * (kernel // groups), e.g. 13, 26, 39 for 39 taps, 3 groups."""
    step = kernel // groups
    return [step * (g + 1) for g in range(groups)]


@register_method("dsn", help="dynamic sparse 1D kernels, each channel group inside its receptive field "
                 "(Xiao et al. 2022)")
class DSN(DynamicSparsifier):
    """Xiao et al. 2022, "Dynamic Sparse Network for Time Series Classification: Learning What to
    'See'", NeurIPS (reference: QiaoXiao7282/DSN, ``sparselearning/core_kernel.py`` ``Masking``).

    Sparse layers are the Conv1d weights with at least ``min_kernel`` taps. Their output
    channels are split into ``groups`` equal chunks (``torch.chunk``); chunk g may connect only
    to the first ``regions(kernel, groups)[g]`` taps and keeps ``int(density * in-region weights)``
    of them. Every ``update_interval`` epochs, in each chunk, the ``ceil(rate * active)``
    smallest magnitudes are dropped and as many are grown among the in-region positions not
    kept (at random, or by |gradient|; outside the region only if the region is full, as
    the reference's +10 bias does), the rate decaying by cosine from ``drop_fraction``.
    Grown weights start at 0 with zeroed optimizer state. Train with Adam at 3e-4 and cosine
    decay to 1e-4, as the reference does.
    """

    name = "dsn"
    config_class: ClassVar[type] = DSNConfig
    density_of_all_weights: ClassVar[bool] = False

    def before_attach(self, names: list[str]) -> None:
        """Keep only the wide Conv1d kernels (the reference masks every conv with >= 5 taps)."""
        wide = [n for n in names if self._is_wide(n)]
        if not wide:
            raise UserError(f"dsn needs Conv1d layers with at least {self.config.min_kernel} taps "
                            "(e.g. --model dsn); this model has none")
        names[:] = wide

    def _is_wide(self, name: str) -> bool:
        module = self.model.get_submodule(name.rpartition(".")[0])
        return isinstance(module, nn.Conv1d) and module.kernel_size[0] >= self.config.min_kernel

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, **kwargs: Any) -> None:
        super().__init__(model, optimizer, **kwargs)
        self.needs_dense_grad = self.config.growth == "gradient"
        self._arm_dense_grads()

    # --- structure ------------------------------------------------------------------
    def chunks(self, shape: torch.Size) -> list[tuple[int, int, int]]:
        """(first output channel, end, region taps) of each group, as ``torch.chunk`` splits."""
        out, kernel = shape[0], shape[-1]
        size = math.ceil(out / self.config.groups)
        taps = regions(kernel, self.config.groups)
        return [(lo, min(lo + size, out), taps[g]) for g, lo in enumerate(range(0, out, size))]

    def region_mask(self, shape: torch.Size) -> torch.Tensor:
        """True where a connection is allowed (group g: taps below its region)."""
        allowed = torch.zeros(shape, dtype=torch.bool)
        for lo, hi, taps in self.chunks(shape):
            allowed[lo:hi, :, :taps] = True
        return allowed

    def _allocate(self) -> dict[str, int]:
        return {w.name: sum(int(((hi - lo) * w.shape[1] * taps) * self.config.density)
                            for lo, hi, taps in self.chunks(w.shape)) for w in self.weights}

    def init_masks(self) -> None:
        for index, w in enumerate(self.weights):
            mask = torch.zeros(w.shape, dtype=torch.bool)
            for g, (lo, hi, taps) in enumerate(self.chunks(w.shape)):
                k = int((hi - lo) * w.shape[1] * taps * self.config.density)
                if self.config.init == "sorted":  # tap-major order: all (out, in) pairs of tap 0, then tap 1, ...
                    flat = torch.zeros(w.shape[2] * (hi - lo) * w.shape[1], dtype=torch.bool)
                    flat[:k] = True
                    mask[lo:hi] = flat.view(w.shape[2], hi - lo, w.shape[1]).permute(1, 2, 0)
                else:
                    scores = random_scores(mask[lo:hi, :, :taps].shape, generator(self.seed, 0, "init", index, g), "cpu")
                    mask[lo:hi, :, :taps] = topk_mask(scores, k)
            w.set_mask(mask.to(w.mask.device))

    # --- one update ------------------------------------------------------------------
    def plan(self, active: int, target: int, fraction: float, numel: int) -> tuple[int, int]:
        n_drop = min(active, math.ceil(fraction * active - 1e-9))
        return active - n_drop, n_drop

    @torch.no_grad()
    def update_topology(self, grads: dict[str, torch.Tensor | None]) -> None:
        fraction = self.drop_schedule.at(self.step_count)
        before = self._active_indices()
        for index, w in enumerate(self.weights):
            mask = w.mask.cpu()
            values = w.values.detach().abs().float().cpu()
            grad = grads.get(w.name)
            kept = torch.zeros_like(mask)
            grown = torch.zeros_like(mask)
            for g, (lo, hi, taps) in enumerate(self.chunks(w.shape)):
                active = mask[lo:hi]
                n_keep, n_grow = self.plan(int(active.sum()), 0, fraction, active.numel())
                keep = topk_mask(values[lo:hi], n_keep, allowed=active)
                if self.config.growth == "gradient":
                    if grad is None:
                        raise UserError("dsn growth=gradient needs gradients at the update step; call backward() "
                                        "before step()")
                    scores = grad[lo:hi].abs().float().cpu()
                else:
                    scores = random_scores(active.shape, generator(self.seed, self.step_count, "grow", index, g), "cpu")
                scores = scores / (scores.max() + 1) if scores.numel() else scores  # below the region bonus
                scores[:, :, :taps] += 1.0  # in-region positions first, as the reference's +10
                kept[lo:hi] = keep
                grown[lo:hi] = topk_mask(scores, n_grow, allowed=~keep)  # a weight just dropped may return
            w.rewire(kept.to(w.mask.device), grown.to(w.mask.device), self.optimizer)
        self._record_active(before)
