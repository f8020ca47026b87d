"""ResNets in their CIFAR form: ResNet-20/32 (3 stages) and ResNet-18 (4 stages)."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from sparsetrain.errors import UserError
from sparsetrain.models import register_model


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection (He et al. 2016).

    Where the shape changes, the shortcut is a 1x1 strided conv with BN ("option B" of
    the paper), so every weight is a conv or linear weight a sparsifier can see.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet (He et al., "Deep residual learning for image recognition", CVPR 2016).

    A 3x3 stem (no max-pool), stages of basic blocks with channels ``widths`` (each stage
    after the first halves the resolution), global average pooling and a Linear classifier.
    """

    def __init__(
        self, blocks: Sequence[int], widths: Sequence[int], in_channels: int, num_classes: int
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        prev = widths[0]
        for i, (n, ch) in enumerate(zip(blocks, widths)):
            layers = [BasicBlock(prev if j == 0 else ch, ch, 2 if i > 0 and j == 0 else 1)
                      for j in range(n)]
            stages.append(nn.Sequential(*layers))
            prev = ch
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(prev, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


def _build(
    name: str, blocks: Sequence[int], input_shape: tuple[int, ...], num_classes: int, width: int
) -> ResNet:
    if len(input_shape) != 3:
        raise UserError(f"{name} needs an input_shape of (C, H, W), got {input_shape}")
    if width < 1:
        raise UserError(f"{name} option width must be a positive integer, got {width}")
    widths = [width * 2**i for i in range(len(blocks))]
    return ResNet(blocks, widths, input_shape[0], num_classes)


@register_model("resnet20", help="ResNet-20 for CIFAR (He et al. 2016), stages 16/32/64")
def resnet20(
    *, input_shape: tuple[int, ...] = (3, 32, 32), num_classes: int, width: int = 16
) -> nn.Module:
    """ResNet-20: 3 stages of 3 basic blocks, ``width``/2x/4x channels; see `ResNet`."""
    return _build("resnet20", (3, 3, 3), input_shape, num_classes, width)


@register_model("resnet32", help="ResNet-32 for CIFAR (He et al. 2016), stages 16/32/64")
def resnet32(
    *, input_shape: tuple[int, ...] = (3, 32, 32), num_classes: int, width: int = 16
) -> nn.Module:
    """ResNet-32: 3 stages of 5 basic blocks, ``width``/2x/4x channels; see `ResNet`."""
    return _build("resnet32", (5, 5, 5), input_shape, num_classes, width)


@register_model("resnet18", help="ResNet-18, CIFAR form (3x3 stem, no max-pool), stages 64..512")
def resnet18(
    *, input_shape: tuple[int, ...] = (3, 32, 32), num_classes: int, width: int = 64
) -> nn.Module:
    """ResNet-18: 4 stages of 2 basic blocks, ``width``/2x/4x/8x channels; see `ResNet`."""
    return _build("resnet18", (2, 2, 2, 2), input_shape, num_classes, width)
