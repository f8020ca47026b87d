"""Fully connected networks: a configurable MLP and LeNet-300-100."""

from __future__ import annotations

import math
from typing import Sequence

from torch import Tensor, nn

from sparsetrain.errors import UserError
from sparsetrain.models import register_model


class MLP(nn.Module):
    """Flatten, then Linear-ReLU hidden layers of ``widths``, then a Linear classifier.

    With ``widths=(300, 100)`` this is LeNet-300-100 (LeCun et al., "Gradient-based
    learning applied to document recognition", Proc. IEEE 1998), the usual fully
    connected benchmark of pruning papers (Han et al. 2015; Frankle & Carbin 2019).
    """

    def __init__(self, in_features: int, widths: Sequence[int], num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_features
        for width in widths:
            layers += [nn.Linear(prev, width), nn.ReLU(inplace=True)]
            prev = width
        layers.append(nn.Linear(prev, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@register_model("mlp", help="multilayer perceptron with ReLU hidden layers of the given widths")
def mlp(
    *,
    input_shape: tuple[int, ...] = (1, 28, 28),
    num_classes: int,
    widths: Sequence[int] = (256, 128),
) -> nn.Module:
    """MLP over the flattened input (see `MLP`)."""
    widths = tuple(int(w) for w in widths)
    if any(w < 1 for w in widths):
        raise UserError(f"mlp option widths must be positive integers, got {widths}")
    return MLP(math.prod(input_shape), widths, num_classes)


@register_model("lenet300", help="LeNet-300-100 (LeCun et al. 1998): flatten, 300, 100, classes")
def lenet300(*, input_shape: tuple[int, ...] = (1, 28, 28), num_classes: int) -> nn.Module:
    """LeNet-300-100 (LeCun et al. 1998): the MLP with hidden widths 300 and 100."""
    return MLP(math.prod(input_shape), (300, 100), num_classes)
