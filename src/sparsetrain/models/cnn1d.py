"""The small 1D CNN used for MNIST-1D."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from sparsetrain.errors import UserError
from sparsetrain.models import register_model


class CNN1d(nn.Module):
    """1D CNN for MNIST-1D (Greydanus, "Scaling down deep learning", 2020).

    Three Conv1d layers (kernel 5, stride 2, padding 2, ReLU), each halving the length,
    then flatten and one Linear classifier. Inputs are (batch, C, L) or (batch, L).
    """

    def __init__(
        self, input_shape: tuple[int, int], channels: Sequence[int], num_classes: int
    ) -> None:
        super().__init__()
        in_channels, _ = input_shape
        layers: list[nn.Module] = []
        prev = in_channels
        for ch in channels:
            layers += [nn.Conv1d(prev, ch, 5, stride=2, padding=2), nn.ReLU(inplace=True)]
            prev = ch
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *input_shape)).shape[1]
        self.classifier = nn.Linear(flat, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:  # (batch, L): one channel
            x = x.unsqueeze(1)
        return self.classifier(self.features(x))


@register_model("cnn1d", help="1D CNN for MNIST-1D (Greydanus 2020): 3 strided Conv1d + Linear")
def cnn1d(
    *,
    input_shape: tuple[int, ...] = (1, 40),
    num_classes: int,
    channels: Sequence[int] = (32, 64, 128),
) -> nn.Module:
    """1D CNN (see `CNN1d`); a 1-D ``input_shape`` (L,) means one channel."""
    if len(input_shape) == 1:
        input_shape = (1, *input_shape)
    if len(input_shape) != 2:
        raise UserError(f"cnn1d needs an input_shape of (C, L) or (L,), got {input_shape}")
    channels = tuple(int(c) for c in channels)
    if not channels or any(c < 1 for c in channels):
        raise UserError(f"cnn1d option channels must be positive integers, got {channels}")
    return CNN1d(input_shape, channels, num_classes)  # type: ignore[arg-type]
