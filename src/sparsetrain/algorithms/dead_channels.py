"""A masked channel outputs exactly 0: its bias and batch-norm entries are held at 0.

Under ``structure="channel"`` a method masks whole output channels (filters). A channel whose
weights are all masked still adds its bias, and the batch norm after it adds its beta, so it
outputs a constant (``relu(beta)``) that the next layer reads; `st.shrink` cannot remove such a
channel without changing the outputs. `DeadChannels` holds the bias entry and the batch-norm
weight and bias of every dead channel (its mask row all zero) at 0, with their optimizer state,
so the masked network computes what the shrunk one does. A channel that comes back (a dynamic
method regrew it) restarts its batch norm at its initial values (weight 1, bias 0, running mean
0, running variance 1) with zeroed optimizer state, so it can learn again.

This is sparsetrain's own rule, not a paper's: the structured methods' papers mask weights only
(docs/fidelity.md, Structures). Chase holds its removed channels at 0 the same way
(`zero_channels`), after its reference's ``merge_filters``.
"""

from __future__ import annotations

import weakref
from typing import Callable, Sequence

import torch
from torch import nn

from sparsetrain.sparse import zero_optimizer_state
from sparsetrain.sparse.coupling import ChannelParams, channel_params


@torch.no_grad()
def zero_channels(model: nn.Module, optimizer: torch.optim.Optimizer | None, bias: str | None,
                  norms: Sequence[str], dead: torch.Tensor) -> None:
    """Set the entries ``dead`` (one bool per channel) of the parameter ``bias`` and of the
    weight and bias of every batch norm in ``norms`` (module names) to 0, with their optimizer
    state."""
    names = ([bias] if bias else []) + [f"{n}.{p}" for n in norms for p in ("weight", "bias")]
    for name in names:
        param = model.get_parameter(name)
        mask = dead.to(param.device)
        param.masked_fill_(mask, 0)
        zero_optimizer_state(optimizer, param, mask)


@torch.no_grad()
def reset_norms(model: nn.Module, optimizer: torch.optim.Optimizer | None, norms: Sequence[str],
                channels: torch.Tensor) -> None:
    """Put the entries ``channels`` (one bool per channel) of every batch norm in ``norms`` back
    to their initial values: weight 1, bias 0, running mean 0, running variance 1; the optimizer
    state of weight and bias there is zeroed."""
    for name in norms:
        norm = model.get_submodule(name)
        mask = channels.to(norm.weight.device)
        for param, value in ((norm.weight, 1.0), (norm.bias, 0.0)):
            param.masked_fill_(mask, value)
            zero_optimizer_state(optimizer, param, mask)
        if norm.running_mean is not None:
            norm.running_mean.masked_fill_(mask, 0.0)
            norm.running_var.masked_fill_(mask, 1.0)


class DeadChannels:
    """Holds the dead channels of ``model`` at exactly 0 output (see the module docstring).

    ``dead()`` gives, per weight name, one bool per output channel: True where the channel is
    dead now; ``optimizer()`` the optimizer whose state goes with the parameters (a method's
    optimizer may be replaced, e.g. by Lightning). Which bias and batch norms belong to each channel is traced once, at the model's
    first forward pass (`channel_params`, on one sample); that pass also applies the rule to the
    masks as they are then. Call `update` after every change of the masks (the Sparsifier does
    after every step). It keeps no state worth saving: the dead set it compares with is the one
    it last saw, and after `forget` (a loaded checkpoint) the next `update` takes the current
    masks as they are."""

    def __init__(self, model: nn.Module, optimizer: Callable[[], torch.optim.Optimizer | None],
                 dead: Callable[[], dict[str, torch.Tensor]]) -> None:
        self.model = model
        self.optimizer = optimizer
        self.dead = dead
        self.params: dict[str, ChannelParams] | None = None
        """Weight name -> its bias and batch norms, found at the first forward pass."""
        self.previous: dict[str, torch.Tensor] | None = None
        trace = weakref.WeakMethod(self._trace)  # a deep copy of the model does not copy the method
        self._hook = model.register_forward_pre_hook(
            lambda module, args, kwargs: trace() and trace()(module, args, kwargs), with_kwargs=True)

    def _trace(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self._hook is None:
            return
        self._hook.remove()
        self._hook = None
        one = tuple(a[:1] if torch.is_tensor(a) and a.dim() else a for a in args)
        self.params = channel_params(module, *one, **kwargs)
        self.update()

    def forget(self) -> None:
        """Forget the dead set last seen (call after loading masks): the next `update` revives nothing."""
        self.previous = None

    def update(self) -> None:
        """Zero the bias and batch-norm entries of the channels dead now; reset the batch norm of
        those dead at the last update and alive now. Does nothing before the first forward pass."""
        if self.params is None:
            return
        dead, optimizer = self.dead(), self.optimizer()
        for name, now in dead.items():
            params = self.params.get(name)
            if params is None:
                continue
            if self.previous is not None and name in self.previous:
                reset_norms(self.model, optimizer, params.norms, self.previous[name] & ~now)
            zero_channels(self.model, optimizer, params.bias, params.norms, now)
        self.previous = dead
