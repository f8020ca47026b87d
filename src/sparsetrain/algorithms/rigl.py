"""RigL: Rigging the Lottery."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from sparsetrain.algorithms.base import ALL_STRUCTURES
from sparsetrain.algorithms.dynamic import DynamicConfig
from sparsetrain.algorithms.registry import register_method
from sparsetrain.algorithms.set import SET
from sparsetrain.config import option


@dataclass(frozen=True)
class RigLConfig(DynamicConfig):
    skip_step_on_update: bool = option(True, "on update iterations only rewire, without the optimizer step "
                                       "(as RigL's reference code); False: step, then rewire")


@register_method("rigl", help="drop smallest magnitudes, grow largest |dense gradient| (Evci et al. 2020)")
class RigL(SET):
    """Evci et al. 2020, "Rigging the Lottery: Making All Tickets Winners", ICML; reference
    code google-research/rigl (``rigl/sparse_optimizers_base.py``) and rigl-torch.

    SET with one change: grow where the dense gradient (read at the update step, before
    masking) is largest in magnitude. As in the reference, newly grown weights start at 0
    with zeroed optimizer state, a weight dropped and regrown in the same update keeps its
    value and momentum (``reinit_when_same=False``), and an update iteration only rewires:
    the optimizer step is skipped (``skip_step_on_update``).
    """

    name = "rigl"
    config_class: ClassVar[type] = RigLConfig
    structures_supported = ALL_STRUCTURES
    needs_dense_grad = True
    grow_rule = "gradient"

    def skips_optimizer_step(self) -> bool:
        return self.config.skip_step_on_update and self.schedule.is_update(self.step_count + 1)
