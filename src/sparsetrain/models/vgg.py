"""VGG in its CIFAR form: BatchNorm, 3x3 convs, global pooling and one Linear classifier."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from sparsetrain.errors import UserError
from sparsetrain.models import register_model

# Numbers are conv output channels, "M" a 2x2 max-pool (configurations A and D of the paper).
CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
              512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """VGG (Simonyan & Zisserman, "Very deep convolutional networks for large-scale image
    recognition", ICLR 2015) as used on CIFAR: conv3x3-BN-ReLU stacks with max-pools,
    adaptive average pooling to 1x1 and a single Linear classifier.

    Channels are scaled by ``width``. Pools round up (``ceil_mode``), so inputs smaller
    than 32x32 also run; at 32x32 and above this is the usual network.
    """

    def __init__(
        self,
        config: Sequence[int | str],
        in_channels: int,
        num_classes: int,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                ch = max(1, round(int(item) * width))
                layers += [
                    nn.Conv2d(prev, ch, 3, padding=1, bias=False),
                    nn.BatchNorm2d(ch),
                    nn.ReLU(inplace=True),
                ]
                prev = ch
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(prev, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def _build(name: str, input_shape: tuple[int, ...], num_classes: int, width: float) -> VGG:
    if len(input_shape) != 3:
        raise UserError(f"{name} needs an input_shape of (C, H, W), got {input_shape}")
    if width <= 0:
        raise UserError(f"{name} option width must be positive, got {width}")
    return VGG(CONFIGS[name], input_shape[0], num_classes, width=width)


@register_model("vgg11", help="VGG-11 with BatchNorm, CIFAR form (Simonyan & Zisserman 2015)")
def vgg11(
    *, input_shape: tuple[int, ...] = (3, 32, 32), num_classes: int, width: float = 1.0
) -> nn.Module:
    """VGG-11 (configuration A) with BatchNorm; see `VGG`."""
    return _build("vgg11", input_shape, num_classes, width)


@register_model("vgg16", help="VGG-16 with BatchNorm, CIFAR form (Simonyan & Zisserman 2015)")
def vgg16(
    *, input_shape: tuple[int, ...] = (3, 32, 32), num_classes: int, width: float = 1.0
) -> nn.Module:
    """VGG-16 (configuration D) with BatchNorm; see `VGG`."""
    return _build("vgg16", input_shape, num_classes, width)
