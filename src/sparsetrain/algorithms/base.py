"""The base classes every sparsity method builds on.

A method wraps a model and its optimizer and replaces ``optimizer.step()`` with
``method.step()``; it therefore works in any training loop, and the Trainer is just one
client. `Sparsifier` owns the order of operations (allocation -> masks -> optimizer step
-> masks re-applied); `DynamicSparsifier` adds schedule -> scores -> top-k -> masks ->
optimizer-state reset, so a method only says how it scores weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from sparsetrain.config import check_range, from_dict, option, validate_choices
from sparsetrain.distributions import allocate
from sparsetrain.errors import UserError
from sparsetrain.sparse import (
    SparseWeight, attach, generator, random_scores, select_weights, topk_mask,
)


@dataclass(frozen=True)
class MethodConfig:
    """Options shared by every method (none so far; dense training needs none)."""

    def __post_init__(self) -> None:
        validate_choices(self)


class Method:
    """A training-loop hook: call `step()` where you would call ``optimizer.step()``."""

    name: ClassVar[str] = "method"
    config_class: ClassVar[type] = MethodConfig

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
                 total_steps: int | None = None, steps_per_epoch: int | None = None,
                 seed: int = 0, config: Any = None, **options: Any) -> None:
        if config is not None and options:
            raise TypeError("pass either config= or keyword options, not both")
        self.config = config if config is not None else from_dict(
            self.config_class, options, where=f"{self.name} option")
        self.model = model
        self.optimizer = optimizer
        self.total_steps = total_steps
        self.steps_per_epoch = steps_per_epoch
        self.seed = seed
        self.step_count = 0
        self.weights: list[SparseWeight] = []

    def step(self) -> None:
        """One optimizer step (plus whatever the method does around it)."""
        if self.optimizer is not None:
            self.optimizer.step()
        self.step_count += 1

    def itop_rate(self) -> float:
        """Fraction of the sparsifiable weights that have ever been active (Liu et al. 2021)."""
        return 1.0

    def density(self) -> float:
        """Active fraction of the sparsified weights (1.0 when nothing is sparsified)."""
        total = sum(w.numel for w in self.weights)
        return sum(w.active for w in self.weights) / total if total else 1.0

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step"])


@dataclass(frozen=True)
class SparsityConfig(MethodConfig):
    """Which weights are sparse and how the density is spread over layers."""

    density: float = option(0.1, "fraction of the sparsified weights that stay active, in (0, 1]")
    distribution: str = option("erk", "layer-wise density allocation",
                               choices=("uniform", "er", "erk", "scores", "custom"))
    erk_power: float = option(1.0, "exponent of the ER/ERK raw densities (1 = as in the paper)")
    dense_first: bool = option(False, "keep the first Linear/Conv layer dense")
    dense_last: bool = option(False, "keep the last Linear/Conv layer dense")
    include: tuple[str, ...] = option((), "glob patterns of parameter names to sparsify (default: all Linear/Conv weights)")
    exclude: tuple[str, ...] = option((), "glob patterns of parameter names to keep dense")
    layer_densities: dict | None = option(None, "per-layer densities for distribution=custom, {parameter name: density}")
    backend: str = option("masked", "how sparse weights are stored (see `sparsetrain list`)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("density", self.density, 0, 1, low_open=True)
        check_range("erk_power", self.erk_power, 0, low_open=True)
        if self.distribution == "custom" and not self.layer_densities:
            raise UserError("distribution=custom needs layer_densities, a {parameter name: density} map")


class Sparsifier(Method):
    """A fixed random mask at the chosen allocation; the base of every sparse method."""

    config_class: ClassVar[type] = SparsityConfig

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                 **kwargs: Any) -> None:
        super().__init__(model, optimizer, **kwargs)
        cfg = self.config
        names = select_weights(model, dense_first=cfg.dense_first, dense_last=cfg.dense_last,
                               include=cfg.include, exclude=cfg.exclude)
        self.weights = attach(model, names, cfg.backend, optimizer)
        self.targets = self._allocate()
        self.ever_active = {w.name: torch.zeros_like(w.mask) for w in self.weights}
        self.init_masks()
        self._record_active()

    def _allocate(self) -> dict[str, int]:
        cfg = self.config
        shapes = {w.name: tuple(w.shape) for w in self.weights}
        options: dict[str, Any] = {}
        if cfg.distribution in ("er", "erk"):
            options["power"] = cfg.erk_power
        elif cfg.distribution == "custom":
            options["densities"] = cfg.layer_densities
        elif cfg.distribution == "scores":
            options["scores"] = {w.name: self.initial_scores(w) for w in self.weights}
        return allocate(cfg.distribution, shapes, cfg.density, **options)

    def initial_scores(self, weight: SparseWeight) -> torch.Tensor:
        """Scores for distribution='scores' (magnitude of the initial weights by default)."""
        return weight.values.abs()

    def init_masks(self) -> None:
        """A uniformly random mask with exactly ``targets[name]`` active weights per layer."""
        for index, w in enumerate(self.weights):
            scores = random_scores(w.shape, generator(self.seed, 0, "init", index), w.mask.device)
            w.set_mask(topk_mask(scores, self.targets[w.name]))

    def step(self) -> None:
        for w in self.weights:
            w.mask_grad()
        super().step()
        for w in self.weights:
            w.apply_mask()

    def _record_active(self) -> None:
        for w in self.weights:
            self.ever_active[w.name] |= w.mask

    def current_targets(self) -> dict[str, int]:
        """The number of active weights each layer must hold right now."""
        return dict(self.targets)

    def itop_rate(self) -> float:
        total = sum(w.numel for w in self.weights)
        return sum(int(e.sum()) for e in self.ever_active.values()) / total

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step_count,
                "ever_active": {k: v.clone() for k, v in self.ever_active.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        for name, value in state["ever_active"].items():
            self.ever_active[name].copy_(value)
