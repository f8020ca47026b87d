"""LeNet-5, adapted to any 2D input size."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sparsetrain.errors import UserError
from sparsetrain.models import register_model


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al., "Gradient-based learning applied to document recognition",
    Proc. IEEE 1998) in its modern form: ReLU and max pooling.

    conv 6@5x5 (padding 2, so 28x28 keeps its size as in the classic 32x32 input), pool,
    conv 16@5x5, pool, fc 120, fc 84, classifier. On inputs too small for an unpadded
    second conv (e.g. 8x8 digits) that conv is padded to keep its size instead.
    """

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        channels, height, width = input_shape
        if min(height, width) < 4:
            raise UserError(f"lenet5 needs inputs of at least 4x4 pixels, got {height}x{width}")
        # After conv1 (size kept) and a 2x2 pool, an unpadded 5x5 conv leaves s-4 pixels,
        # and the next pool needs at least 2 of them.
        pad2 = tuple(0 if s // 2 - 4 >= 2 else 2 for s in (height, width))
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=pad2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *input_shape)).shape[1]
        self.classifier = nn.Sequential(
            nn.Linear(flat, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 3:  # (batch, H, W): one channel
            x = x.unsqueeze(1)
        return self.classifier(self.features(x))


@register_model("lenet5", help="LeNet-5 (LeCun et al. 1998) for any image size, e.g. 8x8, 28x28")
def lenet5(*, input_shape: tuple[int, ...] = (1, 28, 28), num_classes: int) -> nn.Module:
    """LeNet-5 (see `LeNet5`); a 2-D ``input_shape`` (H, W) means one channel."""
    if len(input_shape) == 2:
        input_shape = (1, *input_shape)
    if len(input_shape) != 3:
        raise UserError(f"lenet5 needs an input_shape of (C, H, W), got {input_shape}")
    return LeNet5(input_shape, num_classes)  # type: ignore[arg-type]
