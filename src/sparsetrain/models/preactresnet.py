"""PreActResNet-18 in its CIFAR form (the standard model of adversarial-training papers)."""

from __future__ import annotations

from torch import Tensor, nn

from sparsetrain.errors import UserError
from sparsetrain.models import register_model
from sparsetrain.models.wrn import PreActBlock


class PreActResNet(nn.Module):
    """He et al., "Identity mappings in deep residual networks", ECCV 2016; CIFAR form.

    A 3x3 stem conv (no BN/ReLU: the first block pre-activates), 4 stages of pre-activation
    blocks, then a head BN-ReLU-pool-Linear. Its top-level children (``stem``, each of
    ``stages``, ``head``) are the 6 blocks WOT-B weights separately.
    """

    def __init__(self, blocks: tuple[int, ...], width: int, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        prev = width
        for i, n in enumerate(blocks):
            ch = width * 2**i
            stages.append(nn.Sequential(*[PreActBlock(prev if j == 0 else ch, ch, 2 if i > 0 and j == 0 else 1)
                                          for j in range(n)]))
            prev = ch
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.BatchNorm2d(prev), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(prev, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stages(self.stem(x)))


@register_model("preactresnet18", help="PreActResNet-18, CIFAR form (He et al. 2016 identity mappings)")
def preactresnet18(*, input_shape: tuple[int, ...] = (3, 32, 32), num_classes: int, width: int = 64) -> nn.Module:
    """PreActResNet-18: 4 stages of 2 pre-activation blocks, ``width``/2x/4x/8x channels."""
    if len(input_shape) != 3:
        raise UserError(f"preactresnet18 needs an input_shape of (C, H, W), got {input_shape}")
    if width < 1:
        raise UserError(f"preactresnet18 option width must be a positive integer, got {width}")
    return PreActResNet((2, 2, 2, 2), width, input_shape[0], num_classes)
