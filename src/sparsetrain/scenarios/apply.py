"""Challenging-data scenarios: label noise, limited data, class imbalance, hard subsets.

Each scenario is switched on by fields of the experiment config (``label_noise``,
``data_fraction``, ``imbalance_ratio``, ``subset`` ...) and applied in one place,
`apply_scenarios`, right after the dataset is loaded. Randomness comes from the run seed
and the scenario's name, so every method of a grid sees the same corrupted data. Only the
training split changes, except for a hard subset with ``subset_split: test``, which is an
evaluation scenario and replaces the test split by its hardest or easiest fraction.

A new scenario is a `Scenario` subclass registered with ``@register_scenario(name, help=...,
order=...)``; ``order`` fixes where it runs in the chain (lower first).
"""

from __future__ import annotations

from typing import Any

from sparsetrain.data import DatasetSplits
from sparsetrain.scenarios.base import SCENARIOS, ScenarioContext


def active_scenarios(config: Any) -> list[str]:
    """Names of the scenarios ``config`` switches on, in the order they are applied."""
    ordered = sorted(SCENARIOS.names(), key=lambda n: SCENARIOS.info(n)["order"])
    return [name for name in ordered if SCENARIOS.get(name)().active(config)]


def apply_scenarios(data: DatasetSplits, config: Any, context: ScenarioContext) -> DatasetSplits:
    """``data`` transformed by every scenario ``config`` switches on (hard subset, imbalance,
    limited data, then label noise, so noise hits exactly the samples that are trained on)."""
    for name in active_scenarios(config):
        data = SCENARIOS.get(name)().apply(data, config, context)
    return data


def describe(config: Any) -> str:
    """A short label of the scenarios ``config`` switches on, e.g. ``label_noise=0.4``; ``clean`` if none."""
    parts = [SCENARIOS.get(name)().label(config) for name in active_scenarios(config)]
    return ", ".join(parts) if parts else "clean"


from sparsetrain.scenarios import hard, noise, sampling  # noqa: E402,F401  (registers the scenarios)
