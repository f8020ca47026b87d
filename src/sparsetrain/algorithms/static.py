"""Baselines: dense training and a static random sparse mask."""

from __future__ import annotations

from sparsetrain.algorithms.base import ALL_STRUCTURES, Method, Sparsifier
from sparsetrain.algorithms.registry import register_method


@register_method("dense", help="no sparsity; the baseline every sparse method is compared with")
class Dense(Method):
    """Plain dense training: `step()` is ``optimizer.step()``."""

    name = "dense"


@register_method("static", help="a random mask at the chosen layer-wise allocation, never changed")
class Static(Sparsifier):
    """Static sparse training from scratch with a random mask (e.g. at ERK densities,
    as studied by Liu et al. 2022, "The Unreasonable Effectiveness of Random Pruning")."""

    name = "static"
    structures_supported = ALL_STRUCTURES
