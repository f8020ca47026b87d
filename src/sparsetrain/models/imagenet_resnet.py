"""ResNet-50 in its ImageNet form (He et al., "Deep residual learning for image recognition",
CVPR 2016, Table 1), as torchvision's ``resnet50`` builds it (the "v1.5" variant that strides
in the 3x3 convolution of a bottleneck, the one sparse-training papers train on ImageNet)."""

from __future__ import annotations

from torch import Tensor, nn

from sparsetrain.errors import UserError
from sparsetrain.models import register_model

EXPANSION = 4


class Bottleneck(nn.Module):
    """1x1 (reduce) -> 3x3 (stride) -> 1x1 (expand x4) conv-BN layers plus the shortcut; where
    the shape changes the shortcut is a strided 1x1 conv with BN (projection, option B)."""

    def __init__(self, in_ch: int, width: int, stride: int) -> None:
        super().__init__()
        out_ch = width * EXPANSION
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_ch))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


class ImageNetResNet(nn.Module):
    """A 7x7 stride-2 stem with a 3x3 stride-2 max-pool, stages of bottlenecks (each stage
    after the first halves the resolution in its first block), global average pooling and a
    Linear classifier. Convolutions start from Kaiming-normal (fan-out) weights and BN from
    weight 1, bias 0, as torchvision initializes them."""

    def __init__(self, blocks: tuple[int, ...], width: int, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, stride=2, padding=1))
        stages: list[nn.Module] = []
        prev = width
        for i, n in enumerate(blocks):
            ch = width * 2**i
            stages.append(nn.Sequential(*(Bottleneck(prev if j == 0 else ch * EXPANSION, ch,
                                                     2 if i > 0 and j == 0 else 1) for j in range(n))))
            prev = ch * EXPANSION
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(prev, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


@register_model("resnet50", help="ResNet-50, ImageNet form (7x7 stem, max-pool, bottlenecks 3-4-6-3), 25.6M parameters")
def resnet50(*, input_shape: tuple[int, ...] = (3, 224, 224), num_classes: int = 1000, width: int = 64) -> nn.Module:
    """ResNet-50: bottleneck stages of 3, 4, 6, 3 blocks with ``width``/2x/4x/8x inner channels
    (outputs 4x that); ``width`` below 64 gives a small model for quick tests."""
    if len(input_shape) != 3:
        raise UserError(f"resnet50 needs an input_shape of (C, H, W), got {input_shape}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise UserError(f"resnet50 option width must be a positive integer, got {width!r}")
    return ImageNetResNet((3, 4, 6, 3), width, input_shape[0], num_classes)
