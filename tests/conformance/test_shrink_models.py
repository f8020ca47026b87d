"""st.shrink over the model registry: every CNN shrinks to a smaller dense model with the masked
model's outputs; every other model is refused with one clear sentence. None is skipped."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from sparsetrain import analysis
from sparsetrain.backends.masked import MaskedWeight
from sparsetrain.backends.shrink import shrink
from sparsetrain.errors import UserError
from sparsetrain.models import MODELS, create, default_input_shape

NUM_CLASSES = 7  # no hidden width of the small models below is 7: the output layer is never killed

# Small versions and small inputs keep this cheap; a model not listed is built with its defaults.
SMALL: dict[str, tuple[dict, tuple[int, ...] | None]] = {
    "vgg11": ({"width": 0.125}, (3, 8, 8)),
    "vgg16": ({"width": 0.125}, (3, 8, 8)),
    "resnet18": ({"width": 4}, (3, 8, 8)),
    "resnet20": ({"width": 4}, (3, 8, 8)),
    "resnet32": ({"width": 4}, (3, 8, 8)),
    "preactresnet18": ({"width": 4}, (3, 8, 8)),
    "wrn28": ({"widen": 1}, (3, 8, 8)),
    "resnet50": ({"width": 4}, (3, 32, 32)),
    "cnn1d": ({"channels": (8, 16, 24)}, None),
    "dsn": ({"width": 4, "depth": 2, "kernel": 9, "pool": 10}, (1, 24)),
    "lenet5": ({}, (1, 12, 12)),
    "slak-small": ({"dims": (8, 16, 32)}, (3, 16, 16)),
    "slak-baseline": ({"dims": (8, 16, 32)}, (3, 16, 16)),
}

# Layers whose channels cannot go although their filters are dead: channels a LayerNorm
# normalizes together (removing one changes the mean and variance of the others).
KEEP_WIDTH: dict[str, str] = {
    "slak-small": r"^features\.(0|4|7)$|\.conv\.|\.mlp\.2$",
    "slak-baseline": r"^features\.(0|4|7)$|\.conv\.|\.mlp\.2$",
}

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _build(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    options, shape = SMALL.get(name, ({}, None))
    shape = shape or default_input_shape(name)
    return create(name, input_shape=shape, num_classes=NUM_CLASSES, **options), shape


def _kill_by_width(model: nn.Module, seed: int = 0) -> dict[int, torch.Tensor]:
    """Mask half of every layer's weights at random, and kill the same random third of the
    channels (filter, bias, batch-norm weight and bias) in every layer of the same width, so
    that channels coupled by residual adds are dead everywhere. Batch-norm statistics are
    random, so eval mode would show any channel that leaks."""
    g = torch.Generator().manual_seed(seed)
    dead: dict[int, torch.Tensor] = {}

    def pick(width: int) -> torch.Tensor:
        if width not in dead:
            dead[width] = torch.randperm(width, generator=g)[: max(1, width // 3)]
        return dead[width]

    for layer_name, layer in [(n, m) for n, m in model.named_modules() if isinstance(m, LAYERS)]:
        weight = MaskedWeight(model, f"{layer_name}.weight")
        mask = torch.rand(weight.mask.shape, generator=g) < 0.5
        if layer.weight.shape[0] != NUM_CLASSES:
            mask[pick(layer.weight.shape[0])] = False
            if layer.bias is not None:
                with torch.no_grad():
                    layer.bias[pick(layer.weight.shape[0])] = 0
        weight.set_mask(mask)
    for bn in model.modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
                bn.bias.copy_(torch.randn(bn.num_features, generator=g))
                bn.running_mean.copy_(torch.randn(bn.num_features, generator=g))
                bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
                if bn.num_features in dead:
                    bn.weight[dead[bn.num_features]] = 0
                    bn.bias[dead[bn.num_features]] = 0
    return dead


@pytest.mark.parametrize("name", MODELS.names())
def test_shrunk_model_equals_the_masked_one(name: str) -> None:
    torch.manual_seed(0)
    model, shape = _build(name)
    if not any(isinstance(m, CONVS) for m in model.modules()):
        with pytest.raises(UserError, match=rf"removes channels of convolutional networks; {type(model).__name__} "
                                            "has no Conv1d/Conv2d/Conv3d layer"):
            shrink(model, shape)
        return
    dead = _kill_by_width(model)
    small = shrink(model, shape)
    keep = re.compile(KEEP_WIDTH.get(name, r"(?!)"))
    for row in small.shrink_summary.layers:
        layer = small.get_submodule(row.name)
        assert isinstance(layer, LAYERS) and not hasattr(layer, "weight_mask")
        if row.out_before == NUM_CLASSES or keep.search(row.name):
            assert row.out_after == row.out_before, row.name
        else:  # every killed channel is gone, nothing else
            assert row.out_after == row.out_before - len(dead[row.out_before]), row.name
    assert small.shrink_summary.removed_channels > 0
    planned = [r["shrunk_flops"] for r in analysis.layer_table(model, shape)]  # the plan, without shrinking
    assert planned == [r["dense_flops"] for r in analysis.layer_table(small, shape)]
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(1))
    for train in (False, True):
        model.train(train), small.train(train)
        with torch.no_grad():
            want, got = model(x), small(x)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * max(1.0, float(want.abs().max())))
