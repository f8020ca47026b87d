"""Limited data (a per-class fraction of train) and long-tailed class imbalance.

Long tail: class c keeps ``n_c = floor(n_max * ratio ** (-c / (K - 1)))`` samples, the
exponential profile of Cui et al. (CVPR 2019) and Cao et al. (LDAM, NeurIPS 2019), where
``n_max`` is the size of the smallest class before the cut (so every class can supply its
quota) and ``ratio = n_0 / n_{K-1}`` is the imbalance ratio.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sparsetrain.data import DatasetSplits
from sparsetrain.scenarios.base import Scenario, ScenarioContext, register_scenario, rng_for, subset
from sparsetrain.scenarios.noise import round_half_up


def per_class_keep(y: np.ndarray, counts: dict[int, int], rng: np.random.Generator) -> np.ndarray:
    """Sorted indices keeping ``counts[c]`` samples of each class c, drawn by ``rng``."""
    kept = [rng.permutation(np.flatnonzero(y == c))[: counts[c]] for c in sorted(counts)]
    return np.sort(np.concatenate(kept)) if kept else np.empty(0, np.int64)


def limited_counts(y: np.ndarray, fraction: float) -> dict[int, int]:
    """``round(fraction * n_c)`` (at least 1) samples for each class c present in ``y``."""
    classes, counts = np.unique(y, return_counts=True)
    return {int(c): max(1, round_half_up(fraction * int(n))) for c, n in zip(classes, counts)}


def long_tail_counts(y: np.ndarray, ratio: float, num_classes: int) -> dict[int, int]:
    """Per-class counts of the exponential profile with imbalance ratio ``ratio`` (class 0 largest)."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=num_classes)
    n_max = int(counts.min())
    steps = max(num_classes - 1, 1)
    return {c: min(int(counts[c]), max(1, math.floor(n_max * ratio ** (-c / steps))))
            for c in range(num_classes)}


@register_scenario("imbalance", order=20,
                   help="long-tailed train set: exponential per-class profile with imbalance_ratio n_max/n_min")
class Imbalance(Scenario):
    example = {"imbalance_ratio": 5.0}
    def active(self, config: Any) -> bool:
        return config.imbalance_ratio > 1

    def apply(self, data: DatasetSplits, config: Any, context: ScenarioContext) -> DatasetSplits:
        y = data.train.y.cpu().numpy()
        counts = long_tail_counts(y, config.imbalance_ratio, data.num_classes)
        keep = per_class_keep(y, counts, rng_for(context.seed, self.name))
        return self.replace(data, train=subset(data.train, keep))

    def label(self, config: Any) -> str:
        return f"imbalance_ratio={config.imbalance_ratio:g}"


@register_scenario("limited_data", order=30,
                   help="keep a fraction data_fraction of every class of the train set")
class LimitedData(Scenario):
    example = {"data_fraction": 0.5}
    def active(self, config: Any) -> bool:
        return config.data_fraction < 1

    def apply(self, data: DatasetSplits, config: Any, context: ScenarioContext) -> DatasetSplits:
        y = data.train.y.cpu().numpy()
        keep = per_class_keep(y, limited_counts(y, config.data_fraction), rng_for(context.seed, self.name))
        return self.replace(data, train=subset(data.train, keep))

    def label(self, config: Any) -> str:
        return f"data_fraction={config.data_fraction:g}"
