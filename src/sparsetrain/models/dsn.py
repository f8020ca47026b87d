"""The DSN network for time-series classification (Xiao et al. 2022)."""

from __future__ import annotations

from torch import Tensor, nn

from sparsetrain.errors import UserError
from sparsetrain.models import register_model


class DSNModule(nn.Module):
    """1x1 bottleneck (skipped on a one-channel input) -> wide Conv1d of ``groups * width`` channels
    with ``kernel`` taps -> batch norm -> ReLU. The input is padded on the right by replicating
    its last value (``kernel - 1`` steps), so the length is kept (the reference's pad_zero=False)."""

    def __init__(self, in_channels: int, width: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.bottleneck = nn.Conv1d(in_channels, width, 1, bias=False) if in_channels > 1 else None
        self.pad = nn.ReplicationPad1d((0, kernel - 1))
        self.conv = nn.Conv1d(width if self.bottleneck is not None else in_channels, groups * width, kernel,
                              bias=False)
        self.norm = nn.BatchNorm1d(groups * width)

    def forward(self, x: Tensor) -> Tensor:
        if self.bottleneck is not None:
            x = self.bottleneck(x)
        return self.norm(self.conv(self.pad(x))).relu()


class DSNNet(nn.Module):
    """Xiao et al. 2022, "Dynamic Sparse Network for Time Series Classification: Learning What to
    'See'", NeurIPS (reference: QiaoXiao7282/DSN, ``model/SCNN.py`` ``SCNN``).

    ``depth`` `DSNModule` blocks, then adaptive average pooling to ``pool`` steps, a 1x1 Conv1d to
    the classes with batch norm, and global average pooling. The wide kernels' output channels
    come in ``groups`` equal groups; the `dsn` method restricts group g's connections to the
    first ``(g + 1) * (kernel // groups)`` taps (13, 26, 39 for kernel 39, 3 groups).
    """

    def __init__(self, input_shape: tuple[int, int], num_classes: int, width: int, depth: int,
                 kernel: int, groups: int, pool: int) -> None:
        super().__init__()
        channels = input_shape[0]
        self.blocks = nn.Sequential(*[DSNModule(channels if d == 0 else groups * width, width, kernel, groups)
                                      for d in range(depth)])
        self.head = nn.Sequential(nn.AdaptiveAvgPool1d(pool), nn.Conv1d(groups * width, num_classes, 1, bias=False),
                                  nn.BatchNorm1d(num_classes), nn.AdaptiveAvgPool1d(1), nn.Flatten())

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        return self.head(self.blocks(x))


@register_model("dsn", help="DSN's 1D CNN for time series (Xiao et al. 2022): 4 blocks of 39-tap Conv1d in 3 "
                            "channel groups, 1x1 head")
def dsn(*, input_shape: tuple[int, ...] = (1, 150), num_classes: int, width: int = 47, depth: int = 4,
        kernel: int = 39, groups: int = 3, pool: int = 50) -> nn.Module:
    """`DSNNet` with the reference's defaults (ch_size 47, depth 4, k_size 39, c_size 3, adaptive
    size 50); a 1-D ``input_shape`` (L,) means one channel."""
    if len(input_shape) == 1:
        input_shape = (1, *input_shape)
    if len(input_shape) != 2:
        raise UserError(f"dsn needs an input_shape of (C, L) or (L,), got {input_shape}")
    for name, value in (("width", width), ("depth", depth), ("kernel", kernel), ("groups", groups), ("pool", pool)):
        if int(value) < 1:
            raise UserError(f"dsn option {name} must be a positive integer, got {value}")
    if kernel < groups:
        raise UserError(f"dsn option kernel must be at least groups ({groups}), got {kernel}")
    return DSNNet(tuple(input_shape), num_classes, int(width), int(depth), int(kernel), int(groups),  # type: ignore[arg-type]
                  int(pool))
