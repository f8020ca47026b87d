"""2:4 (semi-structured) sparse inference on NVIDIA GPUs.

A Linear layer whose mask keeps at most 2 of every 4 consecutive weights along the fan-in
(an N:M mask with N=2, M=4 holds exactly 2) can store its weight as torch's
``SparseSemiStructuredTensor`` (``torch.sparse.to_sparse_semi_structured``), which multiplies
with the sparse tensor cores of Ampere and newer GPUs (cuSPARSELt or CUTLASS kernels; Mishra et
al. 2021, "Accelerating Sparse Deep Neural Networks"). Inference only: the converted weight
is frozen, and the model should no longer be trained by a sparsity method.

    model = model.cuda().half().eval()
    converted = st.semi_structured(model)   # names of the layers now running 2:4 kernels
"""

from __future__ import annotations

import torch
from torch import nn

from sparsetrain.backends.masked import MASK_SUFFIX
from sparsetrain.errors import UserError

DTYPES = (torch.float16, torch.bfloat16)
"""Weight types both of torch's kernels (cuSPARSELt and CUTLASS) take in floating point."""
MULTIPLE = (32, 64)
"""(out, in) features must be multiples of these: the larger of the two kernels' minimum
sparse block shapes for fp16/bf16 (CUTLASS 32 x 64, cuSPARSELt 16 x 16)."""
MIN_CAPABILITY = (8, 0)


def weight_mask(module: nn.Module) -> torch.Tensor:
    """The layer's mask buffer (masked backend), else the pattern of its non-zero weights."""
    mask = getattr(module, "weight" + MASK_SUFFIX, None)
    return mask.bool() if mask is not None else module.weight.detach() != 0


def is_2_4(mask: torch.Tensor) -> bool:
    """True when every group of 4 consecutive entries along the last dimension (the fan-in of
    a Linear weight) holds at most 2 active entries."""
    if mask.dim() != 2 or mask.shape[1] % 4:
        return False
    return bool((mask.reshape(mask.shape[0], -1, 4).sum(-1) <= 2).all())


def eligibility(model: nn.Module) -> dict[str, str | None]:
    """``{module name: None if the Linear layer can run 2:4 kernels, else why not}`` for every
    ``nn.Linear`` of ``model`` (pure: reads masks and shapes only, on any device)."""
    found: dict[str, str | None] = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or isinstance(module.weight, torch.sparse.SparseSemiStructuredTensor):
            continue
        rows, cols = module.weight.shape
        if rows % MULTIPLE[0] or cols % MULTIPLE[1]:
            found[name] = (f"shape {rows}x{cols}: out and in features must be multiples of "
                           f"{MULTIPLE[0]} and {MULTIPLE[1]}")
        elif not is_2_4(weight_mask(module)):
            found[name] = "mask is not 2:4 (more than 2 active weights in some group of 4 along the fan-in)"
        else:
            found[name] = None
    return found


def check_cuda(model: nn.Module) -> None:
    """Refuse (UserError) a machine or model that cannot run semi-structured kernels."""
    if not torch.cuda.is_available():
        raise UserError("2:4 semi-structured sparsity needs a CUDA GPU (compute capability 8.0 or newer, "
                        "e.g. A100, H100); this machine has none, so keep the masked or sparse backend")
    param = next(model.parameters(), None)
    if param is None or param.device.type != "cuda":
        raise UserError("2:4 semi-structured sparsity runs on the GPU: move the model there first "
                        "(model.cuda()) before calling semi_structured")
    capability = torch.cuda.get_device_capability(param.device)
    if capability < MIN_CAPABILITY:
        raise UserError(f"2:4 semi-structured sparsity needs compute capability 8.0 or newer; "
                        f"{torch.cuda.get_device_name(param.device)} has {capability[0]}.{capability[1]}")
    if param.dtype not in DTYPES:
        raise UserError(f"2:4 semi-structured kernels take float16 or bfloat16 weights; the model is "
                        f"{param.dtype}: call model.half() (or .bfloat16()) first")


@torch.no_grad()
def semi_structured(model: nn.Module) -> list[str]:
    """Store the weight of every eligible Linear layer of ``model`` (see `eligibility`) as a
    semi-structured sparse tensor, in place, for inference; returns the converted layers' names.
    The model must be on a CUDA GPU in float16 or bfloat16 (a clear error otherwise)."""
    check_cuda(model)
    converted = []
    for name, why in eligibility(model).items():
        if why is not None:
            continue
        module = model.get_submodule(name)
        weight = module.weight.detach().masked_fill(~weight_mask(module), 0).contiguous()
        module.weight = nn.Parameter(torch.sparse.to_sparse_semi_structured(weight), requires_grad=False)
        converted.append(name)
    return converted
