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
from sparsetrain.sparse.optim_state import zero_optimizer_state


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

    def rewire(self, kept: torch.Tensor, grown: torch.Tensor,
               optimizer: torch.optim.Optimizer | None) -> None:
        """One topology update: keep ``kept`` (values and optimizer state), add ``grown`` at 0
        with zero optimizer state, drop every other weight. Backends with their own storage
        override this to rebuild once and move the optimizer state with the weights."""
        self.set_mask(kept)            # drop: pruned weights become 0
        self.set_mask(kept | grown)    # grow: new weights start at 0
        self.mask_grad()               # no stale gradient on a weight just dropped
        zero_optimizer_state(optimizer, self.parameter, ~kept)

    def want_dense_grad(self, flag: bool) -> None:
        """Whether the next backward must make `dense_grad` available (RigL/MEST update steps).
        A masked weight always has it; a sparse backend records what it needs only when asked."""

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


def attach(model: nn.Module, names: list[str], backend: str = "masked",
           optimizer: torch.optim.Optimizer | None = None) -> list[SparseWeight]:
    """Wrap the named parameters of ``model`` with the chosen backend.

    A factory with ``takes_optimizer = True`` (a backend that replaces parameters, like
    ``sparse``) also gets the optimizer, whose parameters and state it must swap.
    """
    factory = BACKENDS.get(backend)
    extra = {"optimizer": optimizer} if getattr(factory, "takes_optimizer", False) else {}
    return [factory(model, name, **extra) for name in names]
