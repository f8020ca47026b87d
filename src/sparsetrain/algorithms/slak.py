"""SLaK's sparse training: SNIP layer ratios with random positions, then magnitude drop / random growth."""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import islice
from typing import ClassVar, Iterable

import torch
import torch.nn.functional as F

from sparsetrain.algorithms.dynamic import DynamicConfig, DynamicSparsifier
from sparsetrain.algorithms.pai import PrunesBeforeTraining
from sparsetrain.algorithms.pruning import apply_masks, masks_from_scores
from sparsetrain.algorithms.registry import register_method
from sparsetrain.config import check_range, option
from sparsetrain.criteria import score
from sparsetrain.errors import UserError
from sparsetrain.schedules import ANNEALING


@dataclass(frozen=True)
class SLaKConfig(DynamicConfig):
    """The reference's ImageNet settings (VITA-Group/SLaK README: --sparsity 0.4 --sparse_init snip
    --prune_rate 0.5 --growth random -u 2000)."""

    density: float = option(0.6, "fraction of the large kernels' weights that stay active (--sparsity 0.4)")
    min_kernel: int = option(7, "Conv weights with a side of at least this many taps are sparse (the k x s and "
                             "s x k branches; the 5x5 square and the 1x1 layers stay dense); 1 = every Linear/Conv")
    update_interval: int = option(2000, "steps (or epochs, see interval_unit) between topology updates (-u)")
    drop_fraction: float = option(0.5, "fraction of each layer's active weights dropped and regrown at the first "
                                  "update (--prune_rate)")
    anneal: str = option("cosine", "how that fraction decays over training", choices=ANNEALING)
    stop_fraction: float = option(1.0, "fraction of training after which the topology is frozen")
    prune_batches: int = option(1, "training batches joined into the one batch SNIP reads at initialization")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("min_kernel", self.min_kernel, 1)
        check_range("prune_batches", self.prune_batches, 1)


@register_method("slak", help="SLaK: SNIP layer ratios at random positions on the large kernels, then magnitude "
                 "drop / random regrowth (Liu et al. 2023)")
class SLaK(PrunesBeforeTraining, DynamicSparsifier):
    """Liu et al. 2023, "More ConvNets in the 2020s: Scaling up Kernels Beyond 51x51 using
    Sparsity", ICLR (reference: VITA-Group/SLaK, ``sparse_core.py`` ``Masking``; pair it with
    the ``slak-small`` model).

    Sparse layers are the Conv weights with a side of at least ``min_kernel`` taps (SLaK's
    large k x s and s x k kernels). `prepare(batches)` scores them with SNIP (|g * w| on one
    batch), takes each layer's share of the global top ``density`` as its density, and places
    that many active weights at random (the reference's ``--sparse_init snip``). Then, every
    ``update_interval`` steps, each layer drops the ``ceil(rate * active)`` smallest magnitudes and
    regrows as many at random, the rate decaying by cosine from ``drop_fraction``.
    """

    name = "slak"
    config_class: ClassVar[type] = SLaKConfig

    def before_attach(self, names: list[str]) -> None:
        """Keep only the large kernels."""
        large = [n for n in names if max(getattr(self.model.get_submodule(n.rpartition(".")[0]), "kernel_size",
                                                 (1,))) >= self.config.min_kernel]
        if not large:
            raise UserError(f"slak needs Conv layers with a kernel side of at least {self.config.min_kernel} "
                            "(e.g. --model slak-small), or a smaller min_kernel")
        names[:] = large

    def plan(self, active: int, target: int, fraction: float, numel: int) -> tuple[int, int]:
        n_drop = min(active, math.ceil(fraction * active - 1e-9))
        return active - n_drop, n_drop

    def prepare(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        if self.prepared:
            return
        taken = list(islice(iter(batches), self.config.prune_batches)) if batches is not None else []
        if not taken:
            raise UserError("slak scores the network with SNIP before training: call prepare(batches) with "
                            "training batches (the Trainer does this)")
        batch = torch.cat([x for x, _ in taken]), torch.cat([y for _, y in taken])
        scores = score("snip", self.model, batch, weights=self.weights, loss_fn=F.cross_entropy, seed=self.seed)
        masks = masks_from_scores(scores, self.config.density, allocation="ratios", seed=self.seed, step=0)
        apply_masks(self.weights, masks, self.optimizer)
        self._finish_prepare()
