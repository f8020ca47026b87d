"""Sparse-aware initialization: rescale a layer's initial weights to the fan-in it really has.

A dense initializer (PyTorch's default, Kaiming, Glorot) sets the variance of a weight from
the layer's dense fan-in. Once most weights are masked, each unit sums over far fewer
inputs and its pre-activations shrink by about sqrt(density): a 10% dense network starts
with signals three times too small in every layer, which slows or stalls early training.

Two rescalings of the weights the model already has (so the model's own initializer,
uniform or normal, keeps its shape):

- ``layer``: multiply the layer by 1/sqrt(layer density), the variance of a dense
  initializer with the fan-in times the layer's density (google-research/rigl,
  ``rigl_tf2/init_utils.py`` ``layer_scaled_init``; the ``init_method='sparse'``
  initializers of its ResNet code).
- ``unit``: multiply each output unit (row of a Linear weight, filter of a convolution) by
  sqrt(dense fan-in / active fan-in of that unit), i.e. the initializer's variance with the
  unit's own number of active inputs (rigl ``unit_scaled_init`` in ``fanin`` mode; rigl-torch
  ``sparse_kaiming_*`` / ``sparse_torch_init``, which read the fan-in of each neuron from the
  mask). A unit with no active input is left as it is.

An embedding is a lookup, not a sum over inputs: its weights are never rescaled.
"""

from __future__ import annotations

import torch

SPARSE_INITS = ("none", "layer", "unit")


def init_scale(mask: torch.Tensor, mode: str, fan_in_dim: int = 1) -> torch.Tensor:
    """The factor (broadcastable to ``mask``'s shape) that rescales a dense-initialized weight
    with active set ``mask`` (bool) for sparse-aware init ``mode``. ``fan_in_dim`` is the
    weight's input dimension: 1 for (out, in, *kernel) layers, 0 for a weight stored
    (in, out) such as transformers' ``Conv1D``."""
    if mode == "unit" and fan_in_dim == 0:
        return init_scale(mask.transpose(0, 1), mode).transpose(0, 1)
    if mode == "none" or mask.numel() == 0:
        return torch.ones((), device=mask.device)
    if mode == "layer":
        active = int(mask.sum())
        return torch.tensor((mask.numel() / active) ** 0.5 if active else 1.0, device=mask.device)
    if mode == "unit":
        rows = mask.reshape(mask.shape[0], -1)
        fan_in = rows.sum(dim=1).double()
        scale = torch.where(fan_in > 0, (rows.shape[1] / fan_in.clamp(min=1)).sqrt(), torch.ones_like(fan_in))
        return scale.float().reshape((-1,) + (1,) * (mask.dim() - 1))
    raise ValueError(f"sparse_init must be one of {', '.join(SPARSE_INITS)}; got {mode!r}")
