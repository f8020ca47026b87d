"""PreActResNet-18 (He et al. 2016, identity mappings): parameter count and pre-activation blocks."""

from __future__ import annotations

import torch

from sparsetrain.models import create


def expected_parameters(num_classes: int, in_channels: int = 3, width: int = 64) -> int:
    total = in_channels * width * 9  # 3x3 stem conv, no bias, no BN (the first block pre-activates)
    prev = width
    for i in range(4):
        c = width * 2**i
        for j in range(2):
            cin = prev if j == 0 else c
            total += 2 * cin + cin * c * 9 + 2 * c + c * c * 9  # bn1, conv1, bn2, conv2
            if cin != c:
                total += cin * c  # 1x1 projection shortcut, no bias
        prev = c
    return total + 2 * prev + prev * num_classes + num_classes  # final BN, Linear


def test_parameter_count_matches_the_architecture():
    model = create("preactresnet18", num_classes=10)
    count = sum(p.numel() for p in model.parameters())
    assert count == expected_parameters(10) == 11_172_170
    small = create("preactresnet18", input_shape=(1, 8, 8), num_classes=7, width=4)
    assert sum(p.numel() for p in small.parameters()) == expected_parameters(7, 1, 4)


def test_blocks_add_without_a_final_relu():
    model = create("preactresnet18", input_shape=(3, 8, 8), num_classes=10, width=4)
    block = model.stages[0][0]
    x = torch.randn(2, 4, 8, 8)
    out = block(x)
    assert out.shape == x.shape and (out < 0).any()  # identity mapping: the sum is not rectified
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)
