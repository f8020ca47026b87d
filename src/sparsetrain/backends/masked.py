"""Masked backend: a dense weight times a boolean mask buffer; runs on any device."""

from __future__ import annotations

import torch
from torch import nn

from sparsetrain.sparse.weights import BACKENDS, SparseWeight

MASK_SUFFIX = "_mask"


class MaskedWeight(SparseWeight):
    """A dense parameter whose inactive entries are held at exactly 0.

    The mask is registered as a buffer ``<param>_mask`` on the owning module, so it is
    saved with the model's ``state_dict`` and broadcast by DDP.
    """

    def __init__(self, model: nn.Module, name: str) -> None:
        module_name, _, param_name = name.rpartition(".")
        self.name = name
        self.module = model.get_submodule(module_name) if module_name else model
        self.param_name = param_name
        buffer_name = param_name + MASK_SUFFIX
        param = self.parameter
        if getattr(self.module, buffer_name, None) is None:
            self.module.register_buffer(buffer_name, torch.ones_like(param, dtype=torch.bool))
        self.buffer_name = buffer_name

    @property
    def mask(self) -> torch.Tensor:
        return getattr(self.module, self.buffer_name)

    @property
    def parameter(self) -> torch.Tensor:
        return getattr(self.module, self.param_name)

    @property
    def values(self) -> torch.Tensor:
        return self.parameter.detach()

    def dense_grad(self) -> torch.Tensor | None:
        grad = self.parameter.grad
        return None if grad is None else grad.detach()

    @torch.no_grad()
    def set_mask(self, mask: torch.Tensor) -> None:
        mask = mask.to(device=self.mask.device, dtype=torch.bool)
        grown = mask & ~self.mask
        self.mask.copy_(mask)
        self.parameter.masked_fill_(grown | ~mask, 0)

    @torch.no_grad()
    def mask_grad(self) -> None:
        grad = self.parameter.grad
        if grad is not None:
            grad.masked_fill_(~self.mask, 0)

    @torch.no_grad()
    def apply_mask(self) -> None:
        self.parameter.masked_fill_(~self.mask, 0)


BACKENDS.register("masked", help="dense weights times a boolean mask buffer; any device")(MaskedWeight)
