"""The scenario registry, the context a scenario runs in, and training data with clean labels."""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import nn

from sparsetrain.data import DatasetSplits, TensorData
from sparsetrain.registry import Registry

SCENARIOS: Registry[type["Scenario"]] = Registry("scenario")


def register_scenario(name: str, help: str, order: int) -> Callable[[type], type]:
    """Class decorator adding a scenario; ``order`` is its place in `apply_scenarios` (lower first)."""
    def add(cls: type) -> type:
        cls.name = name
        return SCENARIOS.register(name, help=help, order=order)(cls)
    return add


@dataclass(frozen=True)
class NoisyData(TensorData):
    """Training data whose labels ``y`` were corrupted; ``y_clean`` keeps the true labels."""

    y_clean: torch.Tensor | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.y_clean is not None and self.y_clean.shape != self.y.shape:
            raise ValueError(f"y_clean has shape {tuple(self.y_clean.shape)}, y {tuple(self.y.shape)}")


@dataclass(frozen=True)
class ScenarioContext:
    """What a scenario may need beyond the data: the run seed and, for scores from short
    dense runs, a model factory, the optimizer settings and a cache folder."""

    seed: int = 0
    dataset: str = ""
    make_model: Callable[[], nn.Module] | None = None
    batch_size: int = 128
    lr: float = 0.1
    device: str = "cpu"
    cache_dir: Path | None = None
    identity: dict[str, Any] = dataclasses.field(default_factory=dict)


def rng_for(seed: int, name: str) -> np.random.Generator:
    """A numpy generator drawn from the run seed and a scenario name (stable across processes)."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def subset(data: TensorData, index: np.ndarray) -> TensorData:
    """Rows ``index`` of ``data`` (keeping ``y_clean`` if it has one)."""
    idx = torch.as_tensor(np.asarray(index, dtype=np.int64))
    if isinstance(data, NoisyData) and data.y_clean is not None:
        return NoisyData(data.x[idx], data.y[idx], data.y_clean[idx])
    return TensorData(data.x[idx], data.y[idx])


class Scenario:
    """Turns a dataset into a harder one; `active` reads the config fields that switch it on."""

    name: ClassVar[str] = "scenario"
    example: ClassVar[dict[str, Any]] = {}
    """Config values that switch the scenario on (used by the conformance tests)."""

    def active(self, config: Any) -> bool:
        raise NotImplementedError

    def apply(self, data: DatasetSplits, config: Any, context: ScenarioContext) -> DatasetSplits:
        raise NotImplementedError

    def label(self, config: Any) -> str:
        raise NotImplementedError

    @staticmethod
    def replace(data: DatasetSplits, **splits: TensorData) -> DatasetSplits:
        return dataclasses.replace(data, **splits)
