"""RigL: Rigging the Lottery."""

from __future__ import annotations

from sparsetrain.algorithms.registry import register_method
from sparsetrain.algorithms.set import SET


@register_method("rigl", help="drop smallest magnitudes, grow largest |dense gradient| (Evci et al. 2020)")
class RigL(SET):
    """Evci et al. 2020, "Rigging the Lottery: Making All Tickets Winners", ICML.

    SET with one change: grow where the dense gradient (read at the update step, before
    masking) is largest in magnitude. New weights start at 0.
    """

    name = "rigl"
    needs_dense_grad = True
    grow_rule = "gradient"
