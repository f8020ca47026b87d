"""Wide residual networks with pre-activation blocks."""

from __future__ import annotations

from torch import Tensor, nn

from sparsetrain.errors import UserError
from sparsetrain.models import register_model


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 with a residual connection (He et al. 2016,
    "Identity mappings"; the block of WRN and PreActResNet).

    Where the shape changes, the first BN-ReLU is shared with a 1x1 strided conv shortcut,
    as in the authors' code.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        o = self.relu(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(o)
        out = self.conv1(o)
        out = self.conv2(self.dropout(self.relu(self.bn2(out))))
        return out + residual


class WideResNet(nn.Module):
    """WRN-depth-k (Zagoruyko & Komodakis, "Wide residual networks", BMVC 2016).

    A 3x3 stem of 16 channels, then 3 stages of (depth-4)/6 pre-activation blocks with
    16k/32k/64k channels, a final BN-ReLU, global average pooling and a Linear classifier.
    """

    def __init__(
        self, depth: int, widen: int, in_channels: int, num_classes: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        n = (depth - 4) // 6
        widths = [16 * widen, 32 * widen, 64 * widen]
        self.stem = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        prev = 16
        for i, ch in enumerate(widths):
            blocks = [PreActBlock(prev if j == 0 else ch, ch, 2 if i > 0 and j == 0 else 1, dropout)
                      for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            prev = ch
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.BatchNorm2d(prev), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.fc = nn.Linear(prev, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.head(self.stages(self.stem(x))))


@register_model("wrn28", help="WideResNet-28-k (Zagoruyko & Komodakis 2016), pre-activation")
def wrn28(
    *,
    input_shape: tuple[int, ...] = (3, 32, 32),
    num_classes: int,
    widen: int = 10,
    dropout: float = 0.0,
) -> nn.Module:
    """WRN-28-``widen`` with optional dropout between the convs of each block; see `WideResNet`."""
    if len(input_shape) != 3:
        raise UserError(f"wrn28 needs an input_shape of (C, H, W), got {input_shape}")
    if widen < 1:
        raise UserError(f"wrn28 option widen must be a positive integer, got {widen}")
    if not 0.0 <= dropout < 1.0:
        raise UserError(f"wrn28 option dropout must be in [0, 1), got {dropout}")
    return WideResNet(28, widen, input_shape[0], num_classes, dropout=dropout)
