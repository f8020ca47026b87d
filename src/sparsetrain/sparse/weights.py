"""The protocol through which algorithms read and change sparse weights.

Algorithms never touch a concrete storage format: they see a list of `SparseWeight`
objects (one per sparsified parameter) made by a backend from the `BACKENDS` registry.
The masked backend (any device) keeps a dense weight and a boolean mask buffer; a truly
sparse backend can implement the same methods over its own storage.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from sparsetrain.registry import Registry


class SparseWeight(ABC):
    """One sparsified parameter: its mask, values and gradient, and how to change its mask."""

    name: str

    @property
    @abstractmethod
    def mask(self) -> torch.Tensor:
        """Boolean tensor of the weight's shape; True where the weight is active."""

    @property
    @abstractmethod
    def values(self) -> torch.Tensor:
        """The weight as a dense tensor (zeros where inactive), for scoring."""

    @property
    @abstractmethod
    def parameter(self) -> torch.Tensor:
        """The tensor the optimizer updates (its state is keyed by it)."""

    @abstractmethod
    def dense_grad(self) -> torch.Tensor | None:
        """The gradient at every position, active or not (None before the first backward)."""

    @abstractmethod
    def set_mask(self, mask: torch.Tensor) -> None:
        """Install ``mask``: inactive weights become 0 and newly activated ones start at 0."""

    @abstractmethod
    def mask_grad(self) -> None:
        """Zero the gradient of inactive weights so the optimizer cannot move them."""

    @abstractmethod
    def apply_mask(self) -> None:
        """Force inactive weights to exactly 0."""

    @property
    def shape(self) -> torch.Size:
        return self.mask.shape

    @property
    def numel(self) -> int:
        return self.mask.numel()

    @property
    def active(self) -> int:
        return int(self.mask.sum())


BACKENDS: Registry = Registry("backend")
"""Backend name -> ``factory(model, parameter_name) -> SparseWeight``."""


def attach(model: nn.Module, names: list[str], backend: str = "masked") -> list[SparseWeight]:
    """Wrap the named parameters of ``model`` with the chosen backend."""
    factory = BACKENDS.get(backend)
    return [factory(model, name) for name in names]
