"""ResNet-50, ImageNet form: parameter count by hand and torchvision's published 25,557,032,
the stem and stage layout, and a forward pass at a small resolution."""

from __future__ import annotations

import torch
from torch import nn

from sparsetrain.models import create


def expected_parameters(num_classes: int, width: int = 64) -> int:
    total = 3 * width * 49 + 2 * width  # 7x7 stem conv (no bias) and its BN
    prev = width
    for i, blocks in enumerate((3, 4, 6, 3)):
        c = width * 2**i
        for j in range(blocks):
            cin = prev if j == 0 else 4 * c
            total += cin * c + 2 * c + c * c * 9 + 2 * c + c * 4 * c + 2 * 4 * c  # 1x1, 3x3, 1x1 with BNs
            if j == 0:
                total += cin * 4 * c + 2 * 4 * c  # projection shortcut and its BN
        prev = 4 * c
    return total + prev * num_classes + num_classes


def test_parameter_count_is_torchvisions_and_the_layout_is_imagenets():
    with torch.device("meta"):  # no memory for the 25M weights
        model = create("resnet50", num_classes=1000)
    assert sum(p.numel() for p in model.parameters()) == expected_parameters(1000) == 25_557_032
    stem_conv, maxpool = model.stem[0], model.stem[3]
    assert (stem_conv.kernel_size, stem_conv.stride) == ((7, 7), (2, 2))
    assert isinstance(maxpool, nn.MaxPool2d) and maxpool.stride == 2
    assert [len(stage) for stage in model.stages] == [3, 4, 6, 3]
    assert model.stages[1][0].conv2.stride == (2, 2)  # v1.5: the 3x3 conv strides
    assert model.fc.in_features == 2048


def test_a_small_resolution_runs_through_the_five_halvings():
    torch.manual_seed(0)
    model = create("resnet50", input_shape=(3, 32, 32), num_classes=5, width=8)  # 32 px end at 1x1
    assert sum(p.numel() for p in model.parameters()) == expected_parameters(5, width=8)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 5) and torch.isfinite(out).all()
