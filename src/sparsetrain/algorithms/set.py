"""SET: Sparse Evolutionary Training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from sparsetrain.algorithms.base import ALL_STRUCTURES
from sparsetrain.algorithms.dynamic import DynamicConfig, DynamicSparsifier
from sparsetrain.algorithms.registry import register_method
from sparsetrain.config import option
from sparsetrain.errors import UserError
from sparsetrain.schedules import ANNEALING
from sparsetrain.sparse import SparseWeight, topk_mask


@dataclass(frozen=True)
class SETConfig(DynamicConfig):
    drop_rule: str = option("magnitude", "magnitude: drop the smallest |w| among the active weights (the SET "
                            "of the RigL/ITOP code bases); signed: Mocanu et al.'s rule, drop the fraction of "
                            "the smallest positive and, separately, of the largest negative weights",
                            choices=("magnitude", "signed"))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.drop_rule == "signed" and self.structure != "unstructured":
            raise UserError(f"drop_rule=signed ranks single weights by sign and cannot keep "
                            f"structure={self.structure}; use drop_rule=magnitude")


@register_method("set", help="drop smallest magnitudes, grow at random (Mocanu et al. 2018, as in the "
                             "RigL/ITOP code; set-mocanu: the original rule)")
class SET(DynamicSparsifier):
    """Mocanu et al. 2018, "Scalable training of artificial neural networks with adaptive
    sparse connectivity inspired by network science", Nature Communications.

    ``set`` is the SET of the RigL and ITOP code bases (google-research/rigl
    ``SparseSETOptimizer``; Shiweiliuiiiiiii/In-Time-Over-Parameterization
    ``sparselearning/core.py``): at every update drop the given fraction of the active
    weights with the smallest magnitude (cosine decay, frozen at ``stop_fraction``) and
    regrow as many at random positions, new weights starting at 0. Magnitude drop and
    random growth are the base-class defaults.

    ``drop_rule="signed"`` is the rule of Mocanu's own code
    (dcmocanu/sparse-evolutionary-artificial-neural-networks, ``rewireMask``): of the
    active weights, remove the fraction zeta of the negative ones closest to 0 and,
    separately, of the positive ones closest to 0 (exactly as the reference counts them:
    N − ⌊(1 − zeta) N⌋ negatives and ⌊zeta P⌋ + 1 positives; active weights at exactly 0
    go too), then grow random weights back to the layer's count. `SETMocanu`
    (``set-mocanu``) is that rule with the reference's schedule.
    """

    name = "set"
    config_class: ClassVar[type] = SETConfig
    structures_supported = ALL_STRUCTURES

    def _signed(self) -> bool:
        return getattr(self.config, "drop_rule", "magnitude") == "signed"  # RigL has no drop_rule

    def drop_scores(self, weight: SparseWeight, grad: torch.Tensor | None,
                    active: torch.Tensor) -> torch.Tensor:
        values = weight.active_values()
        return values if self._signed() else values.abs()

    def select_kept(self, scores: torch.Tensor, n_keep: int, fraction: float) -> torch.Tensor:
        if not self._signed():
            return super().select_kept(scores, n_keep, fraction)
        negative, positive = scores < 0, scores > 0
        n_neg, n_pos = int(negative.sum()), int(positive.sum())
        keep_neg = int((1 - fraction) * n_neg)
        keep_pos = max(0, n_pos - int(fraction * n_pos) - 1)
        return topk_mask(-scores, keep_neg, allowed=negative) | topk_mask(scores, keep_pos, allowed=positive)


@dataclass(frozen=True)
class SETMocanuConfig(SETConfig):
    drop_rule: str = option("signed", "see set", choices=("magnitude", "signed"))
    drop_fraction: float = option(0.3, "zeta: the fraction of the positive and of the negative weights removed")
    anneal: str = option("constant", "how zeta decays (constant in the reference)", choices=ANNEALING)
    stop_fraction: float = option(1.0, "fraction of training after which the topology is frozen")
    update_interval: int = option(1, "epochs (or steps, see interval_unit) between topology updates")
    interval_unit: str = option("epochs", "unit of update_interval", choices=("steps", "epochs"))
    reinit_when_same: bool = option(True, "a weight removed and regrown at once restarts at 0 (the reference "
                                          "zeroes removed weights before it grows)")


@register_method("set-mocanu", help="SET as in Mocanu et al.'s code: signed drop of zeta = 0.3 after every "
                                    "epoch, for the whole run, random regrowth")
class SETMocanu(SET):
    """`SET` with the defaults of Mocanu et al.'s released code
    (dcmocanu/sparse-evolutionary-artificial-neural-networks, ``set_mlp_keras_cifar10.py``):
    the signed drop rule with zeta = 0.3, constant, after every epoch for the whole run."""

    name = "set-mocanu"
    config_class: ClassVar[type] = SETMocanuConfig
