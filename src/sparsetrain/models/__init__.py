"""Our own model definitions, registered by name (no torchvision/timm).

    model = sparsetrain.models.create("resnet20", num_classes=10)

Every builder has the signature ``builder(*, input_shape, num_classes, **opts) -> nn.Module``;
the default of its ``input_shape`` parameter is the model's natural input (batch dim excluded),
and its other keyword parameters are the options that ``create`` accepts.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from sparsetrain.errors import UserError
from sparsetrain.registry import Registry

Builder = Callable[..., nn.Module]

MODELS: Registry[Builder] = Registry("model")

_FIXED = ("input_shape", "num_classes")


def register_model(name: str, help: str) -> Callable[[Builder], Builder]:
    """Decorator adding a model builder under ``name`` with a one-line ``help``."""
    return MODELS.register(name, help=help)


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return MODELS.names()


def model_options(name: str) -> dict[str, Any]:
    """The options ``name`` accepts, mapped to their defaults."""
    return MODELS.options(name, fixed=_FIXED)


def default_input_shape(name: str) -> tuple[int, ...]:
    """The input shape (batch dim excluded) that ``name`` is built for when none is given."""
    return tuple(MODELS.options(name)["input_shape"])


def create(
    name: str,
    *,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int = 10,
    **opts: Any,
) -> nn.Module:
    """Build the model registered as ``name`` for inputs of ``input_shape`` (batch dim excluded)."""
    builder = MODELS.get(name)
    MODELS.check_options(name, opts, fixed=_FIXED)
    if num_classes < 1:
        raise UserError(f"num_classes must be at least 1, got {num_classes}")
    shape = default_input_shape(name) if input_shape is None else tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise UserError(f"input_shape must be positive sizes without the batch dim, got {shape}")
    check_size(name, shape, num_classes, opts)
    return builder(input_shape=shape, num_classes=num_classes, **opts)


MAX_PARAMETERS = 1_000_000_000
"""The largest model `create` builds (4 GB of float32 weights, before gradients and state)."""


def check_size(name: str, input_shape: tuple[int, ...], num_classes: int, opts: dict[str, Any]) -> int:
    """Build ``name`` on the meta device (no memory) and return its parameter count; options
    that cannot build a model, or a model over `MAX_PARAMETERS`, are a UserError."""
    import torch

    shown = ", ".join(f"{k}={v!r}" for k, v in opts.items()) or "defaults"
    try:
        with torch.device("meta"):
            probe = MODELS.get(name)(input_shape=input_shape, num_classes=num_classes, **opts)
    except UserError:
        raise
    except NotImplementedError:  # an operation without a meta kernel: build for real instead
        return -1
    except (TypeError, ValueError, RuntimeError, OverflowError, IndexError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"model {name!r} cannot be built with model_options {shown} "
                        f"and input shape {input_shape}: {reason[:200]}") from None
    count = sum(p.numel() for p in probe.parameters())
    if count > MAX_PARAMETERS:
        raise UserError(f"model {name!r} with model_options {shown} has {count:.3g} parameters; "
                        f"at most 1e9 are allowed (choose smaller widths/channels)")
    return count


# Importing the model modules registers them; they import register_model from above.
from sparsetrain.models import (  # noqa: E402, F401
    cnn1d,
    dsn,
    gcn,
    imagenet_resnet,
    slak,
    lenet,
    mlp,
    preactresnet,
    resnet,
    transformer,
    vgg,
    wrn,
)

__all__ = [
    "MODELS",
    "create",
    "default_input_shape",
    "list_models",
    "model_options",
    "register_model",
]
