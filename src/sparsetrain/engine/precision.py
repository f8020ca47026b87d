"""Mixed precision and the speed options of the Trainer: autocast, GradScaler, channels-last
memory format and torch.compile, each usable on the masked backend.

With ``fp16`` the optimizer is stepped through a ``torch.amp.GradScaler``: the sparsity
method runs from the optimizer's step hook (`algorithms.base.Method.hook_optimizer`), so a
step the scaler skips (inf/NaN gradients) skips the method too: masks, weights, optimizer
state and the method's step counter are left exactly as they were.
"""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager

import torch
from torch import nn

from sparsetrain.errors import UserError

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

COMPILE_BACKEND = "inductor"
"""The torch.compile backend of ``compile=True`` (tests use ``aot_eager``: same graph capture,
no C++ code generation)."""


def check_backend(method: Any, *, precision: str, channels_last: bool, compile: bool) -> None:
    """Refuse (UserError) a speed or precision option the method's sparse weights do not support:
    every option here needs the masked backend (dense weights, masks as buffers)."""
    from sparsetrain.backends.masked import MaskedWeight  # engine sits above backends

    wanted = [name for name, on in (("precision=" + precision, precision != "fp32"),
                                    ("channels_last", channels_last), ("compile", compile)) if on]
    foreign = [w for w in getattr(method, "weights", ()) if not isinstance(w, MaskedWeight)]
    if precision == "fp16" and not getattr(method, "runs_from_hook", True):
        raise UserError(f"precision=fp16 needs a method that runs from the optimizer's step hook (a step the "
                        f"GradScaler skips must skip the method); {method.name} acts before the update: "
                        "use precision=bf16 or fp32")
    if wanted and foreign:
        raise UserError(f"{wanted[0]} needs backend=masked: the sparse backend's CSR kernels compute in "
                        f"float32 with their own layout and cannot be compiled (layer {foreign[0].name})")


class Precision:
    """Autocast and (for fp16) loss scaling for one device.

    Use as::

        with precision.autocast():
            loss = criterion(model(x), y)
        precision.backward(loss)      # scaled for fp16
        precision.unscale(optimizer)  # gradients are true gradients from here on
        precision.step(method, optimizer)
    """

    def __init__(self, name: str, device: torch.device) -> None:
        if name not in PRECISIONS:
            raise UserError(f"precision must be one of {', '.join(PRECISIONS)}; got {name!r}")
        self.name = name
        self.device = torch.device(device)
        self.scaler = torch.amp.GradScaler(self.device.type) if name == "fp16" else None

    def autocast(self) -> ContextManager[Any]:
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.name])

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler:
            self.scaler.unscale_(optimizer)

    def step(self, method: Any, optimizer: torch.optim.Optimizer) -> bool:
        """One optimizer step with the method; False when the scaler skipped it."""
        if self.scaler is None:
            method.step()
            return True
        before = method.step_count
        self.scaler.step(optimizer)  # runs the method through the optimizer's step hook, or skips both
        self.scaler.update()
        return method.step_count != before

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler and state:
            self.scaler.load_state_dict(state)


def to_channels_last(model: nn.Module) -> bool:
    """Convert ``model``'s 4-D weights (and its 4-D inputs, by a forward pre-hook) to the
    channels-last memory format. Returns False, changing nothing, when the model has no
    4-D parameter (nothing to gain: 1-D convolutions and Linear layers have no such format)."""
    if not any(p.dim() == 4 for p in model.parameters()):
        return False
    model.to(memory_format=torch.channels_last)

    def inputs_channels_last(module: nn.Module, args: tuple) -> tuple:
        return tuple(a.contiguous(memory_format=torch.channels_last)
                     if isinstance(a, torch.Tensor) and a.dim() == 4 else a for a in args)

    model.register_forward_pre_hook(inputs_channels_last)
    return True


def compile_model(model: nn.Module, backend: str | None = None) -> nn.Module:
    """Compile ``model`` in place (`nn.Module.compile`): its state dict, parameters and mask
    buffers stay the same objects, so a method's in-place mask updates reach the compiled
    forward (parameters and buffers are graph inputs, not constants)."""
    model.compile(backend=backend or COMPILE_BACKEND)
    return model


def apply_speed_options(model: nn.Module, method: Any, config: Any) -> None:
    """The Trainer's ``channels_last`` and ``compile`` options (and a check of ``precision``)
    applied to ``model`` once ``method`` has attached its sparse weights."""
    from sparsetrain.config import note_once

    check_backend(method, precision=config.precision, channels_last=config.channels_last, compile=config.compile)
    if config.channels_last and not to_channels_last(model):
        note_once("channels_last has no effect on this model: it has no 4-D (Conv2d) weights")
    if config.compile:
        compile_model(model)
