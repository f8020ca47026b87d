"""SLaK: large depthwise kernels decomposed into two rectangles and a small square (Liu et al. 2023)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparsetrain.errors import UserError
from sparsetrain.models import register_model


def conv_bn(channels: int, kernel: tuple[int, int]) -> nn.Sequential:
    """Depthwise Conv2d (no bias, centred 'same' padding) followed by batch norm."""
    return nn.Sequential(nn.Conv2d(channels, channels, kernel, padding=(kernel[0] // 2, kernel[1] // 2),
                                   groups=channels, bias=False), nn.BatchNorm2d(channels))


def fuse(branch: nn.Sequential) -> tuple[Tensor, Tensor]:
    """The (kernel, bias) of conv + batch norm in eval mode: w * γ/σ and β − μ γ/σ."""
    conv, bn = branch
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
    return conv.weight * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


class SLaKConv2d(nn.Module):
    """A depthwise k x k kernel as the sum of a k x s, an s x k and an s x s kernel, each with its own
    batch norm (reference: VITA-Group/SLaK ``models/SLaK.py`` ``ReparamLargeKernelConv`` with
    Decom=True). With ``kernel == small`` it is one plain s x s conv + batch norm."""

    def __init__(self, channels: int, kernel: int, small: int = 5) -> None:
        super().__init__()
        if kernel % 2 == 0 or small % 2 == 0 or small > kernel:
            raise UserError(f"SLaK kernels must be odd with small <= kernel; got kernel {kernel}, small {small}")
        self.kernel, self.small = kernel, small
        if kernel > small:
            self.long = conv_bn(channels, (kernel, small))
            self.wide = conv_bn(channels, (small, kernel))
        self.square = conv_bn(channels, (small, small))

    def forward(self, x: Tensor) -> Tensor:
        out = self.square(x)
        if self.kernel > self.small:
            out = out + self.long(x) + self.wide(x)
        return out

    @torch.no_grad()
    def equivalent(self) -> tuple[Tensor, Tensor]:
        """One k x k depthwise kernel and bias equal to the block in eval mode: each branch fused
        with its batch norm, zero-padded to k x k around the centre, summed."""
        k, s = self.kernel, self.small
        weight, bias = fuse(self.square)
        weight = F.pad(weight, [(k - s) // 2] * 4)
        if k > s:
            for branch, pad in ((self.long, [(k - s) // 2, (k - s) // 2, 0, 0]),
                                (self.wide, [0, 0, (k - s) // 2, (k - s) // 2])):
                w, b = fuse(branch)
                weight, bias = weight + F.pad(w, pad), bias + b
        return weight, bias


class ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channels of an (N, C, H, W) map."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SLaKBlock(nn.Module):
    """ConvNeXt block with a SLaK kernel: dwconv -> LayerNorm -> Linear 4x -> GELU -> Linear ->
    layer scale (1e-6) -> residual."""

    def __init__(self, dim: int, kernel: int, small: int) -> None:
        super().__init__()
        self.conv = SLaKConv2d(dim, kernel, small)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: Tensor) -> Tensor:
        y = self.mlp(self.norm(self.conv(x).permute(0, 2, 3, 1))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class SLaKNet(nn.Module):
    """A small SLaK (ConvNeXt layout) for 32 x 32 images: a 2x2 stride-2 stem, then one stage per
    entry of ``dims`` (a 2x2 stride-2 downsampling between stages), global average pooling,
    LayerNorm and a Linear head."""

    def __init__(self, in_channels: int, num_classes: int, dims: Sequence[int], depths: Sequence[int],
                 kernels: Sequence[int], small: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, dims[0], 2, stride=2), ChannelNorm(dims[0], eps=1e-6)]
        for i, (dim, depth, kernel) in enumerate(zip(dims, depths, kernels)):
            if i:
                layers += [ChannelNorm(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], dim, 2, stride=2)]
            layers += [SLaKBlock(dim, kernel, min(small, kernel)) for _ in range(depth)]
        self.features = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.norm(self.features(x).mean((-2, -1))))


def _build(input_shape: tuple[int, ...], num_classes: int, dims, depths, kernels, small, name) -> nn.Module:
    if len(input_shape) != 3:
        raise UserError(f"{name} needs an input_shape of (C, H, W), got {input_shape}")
    dims, depths, kernels = (tuple(int(v) for v in seq) for seq in (dims, depths, kernels))
    if not len(dims) == len(depths) == len(kernels) or not dims or min(dims + depths) < 1:
        raise UserError(f"{name} options dims, depths and kernels must be equally long lists of positive integers")
    return SLaKNet(input_shape[0], num_classes, dims, depths, kernels, int(small))


@register_model("slak-small", help="a small SLaK for 32x32 images (Liu et al. 2023): 15/11/7 kernels as 5-wide "
                                   "rectangles + 5x5, 3 stages of 32/64/128")
def slak_small(*, input_shape: tuple[int, ...] = (3, 32, 32), num_classes: int, dims: Sequence[int] = (32, 64, 128),
               depths: Sequence[int] = (1, 1, 1), kernels: Sequence[int] = (15, 11, 7), small: int = 5) -> nn.Module:
    """`SLaKNet` with decomposed large kernels (SLaK-T uses 51/49/47/13 at 224 px; these scale
    them to the 16/8/4-pixel maps of a 32 x 32 input)."""
    return _build(input_shape, num_classes, dims, depths, kernels, small, "slak-small")


@register_model("slak-baseline", help="the dense small-kernel (7x7, ConvNeXt) twin of slak-small, equal width")
def slak_baseline(*, input_shape: tuple[int, ...] = (3, 32, 32), num_classes: int,
                  dims: Sequence[int] = (32, 64, 128), depths: Sequence[int] = (1, 1, 1),
                  kernel: int = 7) -> nn.Module:
    """`SLaKNet` with one plain ``kernel`` x ``kernel`` depthwise conv per block (ConvNeXt's 7x7)."""
    return _build(input_shape, num_classes, dims, depths, [kernel] * len(tuple(dims)), kernel, "slak-baseline")
