"""The protocol through which algorithms read and change sparse weights.

Algorithms never touch a concrete storage format: they see a list of `SparseWeight`
objects (one per sparsified parameter) made by a backend from the `BACKENDS` registry.
The masked backend (any device) keeps a dense weight and a boolean mask buffer; a truly
sparse backend can implement the same methods over its own storage.
"""

from __future__ import annotations

import copy
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

    def clear_inactive_state(self, optimizer: torch.optim.Optimizer | None) -> None:
        """Zero the optimizer state of inactive weights (after an update from unmasked gradients).
        A backend that stores only the active weights has none to clear."""
        if self.parameter.shape == self.shape:
            zero_optimizer_state(optimizer, self.parameter, ~self.mask)

    def active_index(self) -> torch.Tensor:
        """Row-major flat positions of the active weights, ascending (int64, on the weight's
        device). Backends that store the active set override it to avoid a dense pass."""
        return torch.nonzero(self.mask.reshape(-1)).reshape(-1)

    def active_values(self) -> torch.Tensor:
        """The active weights in the order of `active_index`."""
        return self.values.reshape(-1)[self.active_index()]

    def rewire_flat(self, keep: torch.Tensor, grown: torch.Tensor,
                    optimizer: torch.optim.Optimizer | None) -> None:
        """`rewire` in the terms of the active list: ``keep`` is one bool per active weight (in
        `active_index` order), True for those that stay with their value and optimizer state;
        ``grown`` holds the ascending flat positions (int64) of new weights, none of them kept,
        which start at 0 with zero state; every other weight is dropped. The default builds the
        two masks and calls `rewire`; a backend storing the active set merges the lists."""
        device = self.mask.device
        kept_mask = torch.zeros(self.numel, dtype=torch.bool, device=device)
        grown_mask = torch.zeros(self.numel, dtype=torch.bool, device=device)
        kept_mask[self.active_index()[keep.to(device)]] = True
        grown_mask[grown.to(device)] = True
        self.rewire(kept_mask.view(self.shape), grown_mask.view(self.shape), optimizer)

    def want_dense_grad(self, flag: bool) -> None:
        """Whether the next backward must make `dense_grad` available (RigL/MEST update steps).
        A masked weight always has it; a sparse backend records what it needs only when asked."""

    def densify(self, twin: nn.Module) -> None:
        """Make this weight an ordinary dense ``nn.Parameter`` named ``self.name`` in ``twin``,
        a deep copy of its model, holding `values`. A masked weight already is one; a backend
        that replaces layers swaps the copy's layer for a dense one (see `dense_twin`)."""

    @torch.no_grad()
    def load_dense(self, tensor: torch.Tensor) -> None:
        """Set the active weights to the entries of the dense ``tensor`` (the weight's shape) at
        their positions; inactive weights stay 0. Backends with their own storage override it."""
        param = self.parameter
        param.copy_(tensor.to(device=param.device, dtype=param.dtype) * self.mask)

    @property
    def shape(self) -> torch.Size:
        return self.mask.shape

    @property
    def numel(self) -> int:
        return self.mask.numel()

    @property
    def active(self) -> int:
        return int(self.mask.sum())


def dense_twin(model: nn.Module, weights: list[SparseWeight]) -> nn.Module:
    """A deep copy of ``model`` in which every weight of ``weights`` is an ordinary dense
    parameter under its name, equal to its `values` (zeros where inactive).

    For criteria that run their own forward and backward passes (SNIP, GraSP's Hessian-vector
    product, SynFlow's |θ| network, prune-dp's distortion table): on the copy they see the
    same function as the masked network, on any backend. The copy holds one dense weight
    per layer for as long as it lives.
    """
    # tensors a layer keeps from its last backward (a sparse layer's captured activations) may
    # be graph nodes, which deepcopy refuses: the copy gets them detached, uncopied
    memo = {id(t): t.detach() for module in model.modules() for value in vars(module).values()
            for t in (value if isinstance(value, (tuple, list)) else (value,))
            if isinstance(t, torch.Tensor) and not t.is_leaf}
    twin = copy.deepcopy(model, memo)
    for w in weights:
        w.densify(twin)
    return twin


def dense_model(model: nn.Module, weights: list[SparseWeight]) -> nn.Module:
    """``model`` itself when every weight of ``weights`` is a dense parameter of it (masked
    backend), else its `dense_twin` (e.g. the sparse backend's CSR layers)."""
    for w in weights:
        try:
            model.get_parameter(w.name)
        except AttributeError:
            return dense_twin(model, weights)
    return model


BACKENDS: Registry = Registry("backend", provider="sparsetrain.backends")
"""Backend name -> ``factory(model, parameter_name) -> SparseWeight``. A factory whose
backend saves layers in its own state-dict format also has ``dense_state(state, shapes)``
(see `dense_state`)."""


def dense_state(state: dict[str, torch.Tensor], shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """``state`` (a model state_dict) in the dense format of a plain or masked model: every layer
    a backend saved in its own format (the sparse backend's ``values``/``indices``/``indptr``)
    whose weight name is in ``shapes`` (weight name -> dense shape) becomes ``<weight>`` plus
    its boolean ``<weight>_mask``. Other entries pass through unchanged."""
    for name in BACKENDS.names():
        convert = getattr(BACKENDS.get(name), "dense_state", None)
        if convert is not None:
            state = convert(state, shapes)
    return state


def attach(model: nn.Module, names: list[str], backend: str = "masked",
           optimizer: torch.optim.Optimizer | None = None) -> list[SparseWeight]:
    """Wrap the named parameters of ``model`` with the chosen backend.

    A factory with a ``check(model, name)`` method refuses what it cannot hold before anything
    changes. A factory with ``takes_optimizer = True`` (a backend that replaces parameters, like
    ``sparse``) also gets the optimizer, whose parameters and state it must swap.
    """
    factory = BACKENDS.get(backend)
    check = getattr(factory, "check", None)
    if check is not None:  # refuse before any layer is converted, so a refusal leaves the model as it was
        for name in names:
            check(model, name)
    extra = {"optimizer": optimizer} if getattr(factory, "takes_optimizer", False) else {}
    return [factory(model, name, **extra) for name in names]
