"""Label noise: symmetric (uniform over the other classes) and asymmetric (class-pair flips).

Symmetric noise at rate r flips exactly ``round(r * n)`` labels, chosen uniformly, each to a
class drawn uniformly from the K - 1 other classes (the "symmetric"/"uniform" noise of
Patrini et al., CVPR 2017, without the flips that land on the true class). Asymmetric noise
flips exactly ``round(r * n_c)`` samples of every class c that has a partner: on CIFAR-10 the
map of Patrini et al. (truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog),
on other datasets the cyclic map c -> c + 1 mod K. The clean labels are kept in
`NoisyData.y_clean`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from sparsetrain.data import DatasetSplits
from sparsetrain.scenarios.base import NoisyData, Scenario, ScenarioContext, register_scenario, rng_for

# CIFAR-10 classes: 0 airplane, 1 automobile, 2 bird, 3 cat, 4 deer, 5 dog, 6 frog, 7 horse, 8 ship, 9 truck
CIFAR10_ASYMMETRIC = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
ASYMMETRIC_MAPS: dict[str, dict[int, int]] = {"cifar10": CIFAR10_ASYMMETRIC}


def round_half_up(value: float) -> int:
    """``round`` that sends .5 up (Python's `round` sends it to the even neighbour)."""
    return int(math.floor(value + 0.5))


def symmetric_noise(y: np.ndarray, rate: float, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """A copy of ``y`` with exactly ``round(rate * n)`` labels moved to a uniformly drawn other class."""
    y = np.asarray(y, dtype=np.int64)
    noisy = y.copy()
    k = round_half_up(rate * len(y))
    if k and num_classes < 2:
        raise ValueError("symmetric label noise needs at least 2 classes")
    flip = rng.permutation(len(y))[:k]
    # adding 1..K-1 modulo K reaches each other class exactly once: uniform, never the own class
    noisy[flip] = (y[flip] + rng.integers(1, num_classes, size=k)) % num_classes
    return noisy


def cyclic_map(num_classes: int) -> dict[int, int]:
    """The map c -> c + 1 mod K."""
    return {c: (c + 1) % num_classes for c in range(num_classes)}


def asymmetric_noise(y: np.ndarray, rate: float, mapping: dict[int, int],
                     rng: np.random.Generator) -> np.ndarray:
    """A copy of ``y`` where exactly ``round(rate * n_c)`` samples of each mapped class c become ``mapping[c]``."""
    y = np.asarray(y, dtype=np.int64)
    noisy = y.copy()
    for source in sorted(mapping):
        members = np.flatnonzero(y == source)
        k = round_half_up(rate * len(members))
        noisy[rng.permutation(members)[:k]] = mapping[source]
    return noisy


def noise_map(dataset: str, num_classes: int) -> dict[int, int]:
    """The asymmetric map used for ``dataset``: its own if it has one, else the cyclic map."""
    return ASYMMETRIC_MAPS.get(dataset, cyclic_map(num_classes))


@register_scenario("label_noise", order=40,
                   help="flip a fraction label_noise of the training labels (noise_type symmetric or asymmetric)")
class LabelNoise(Scenario):
    example = {"label_noise": 0.3}
    def active(self, config: Any) -> bool:
        return config.label_noise > 0

    def apply(self, data: DatasetSplits, config: Any, context: ScenarioContext) -> DatasetSplits:
        y = data.train.y.cpu().numpy()
        y_clean = getattr(data.train, "y_clean", None)
        rng = rng_for(context.seed, self.name)
        if config.noise_type == "symmetric":
            noisy = symmetric_noise(y, config.label_noise, data.num_classes, rng)
        else:
            noisy = asymmetric_noise(y, config.label_noise, noise_map(context.dataset, data.num_classes), rng)
        train = NoisyData(data.train.x, torch.from_numpy(noisy),
                          data.train.y.clone() if y_clean is None else y_clean)
        return self.replace(data, train=train)

    def label(self, config: Any) -> str:
        kind = "" if config.noise_type == "symmetric" else " asym"
        return f"label_noise={config.label_noise:g}{kind}"
