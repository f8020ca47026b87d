"""SET: Sparse Evolutionary Training."""

from __future__ import annotations

from sparsetrain.algorithms.dynamic import DynamicSparsifier
from sparsetrain.algorithms.registry import register_method


@register_method("set", help="drop smallest magnitudes, grow at random (Mocanu et al. 2018)")
class SET(DynamicSparsifier):
    """Mocanu et al. 2018, "Scalable training of artificial neural networks with adaptive
    sparse connectivity inspired by network science", Nature Communications.

    Drops the smallest-magnitude active weights and regrows as many at random positions,
    with new weights starting at 0. Magnitude drop and random growth are the base-class
    defaults, so SET overrides nothing.
    """

    name = "set"
