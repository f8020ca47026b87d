"""Zeroing optimizer state (SGD momentum, Adam moments) at pruned and newly grown positions."""

from __future__ import annotations

import torch


def zero_optimizer_state(optimizer: torch.optim.Optimizer | None, param: torch.Tensor,
                         positions: torch.Tensor) -> None:
    """Set every per-weight state tensor of ``param`` to 0 where ``positions`` is True.

    Covers any optimizer whose state holds tensors of the parameter's shape
    (``momentum_buffer``, ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq`` ...).
    Scalar entries such as Adam's ``step`` are left alone.
    """
    if optimizer is None:
        return
    state = optimizer.state.get(param)
    if not state:
        return
    for value in state.values():
        if isinstance(value, torch.Tensor) and value.shape == param.shape:
            value.masked_fill_(positions, 0)
