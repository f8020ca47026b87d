"""The models registry API and the shape arithmetic of individual models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsetrain.errors import UserError
from sparsetrain.models import create, list_models, model_options


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(UserError) as err:
        create("resnet9000")
    msg = str(err.value)
    assert "resnet9000" in msg
    for name in list_models():
        assert name in msg


def test_unknown_option_is_named_with_allowed_ones() -> None:
    with pytest.raises(UserError) as err:
        create("mlp", depthh=3)
    msg = str(err.value)
    assert "'depthh'" in msg and "widths" in msg


def test_model_without_options_rejects_any() -> None:
    assert model_options("lenet300") == {}
    with pytest.raises(UserError, match="'width'"):
        create("lenet300", width=2)


def test_list_models_has_the_required_ones() -> None:
    required = {"mlp", "lenet300", "lenet5", "cnn1d", "vgg11", "vgg16",
                "resnet20", "resnet32", "resnet18", "wrn28", "transformer"}
    assert required <= set(list_models())


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_lenet5_any_image_size(shape: tuple[int, ...]) -> None:
    model = create("lenet5", input_shape=shape, num_classes=10)
    assert model(torch.randn(2, *shape)).shape == (2, 10)


def test_lenet5_classic_on_28x28() -> None:
    # conv(pad 2) 28 -> pool 14 -> conv 10 -> pool 5: 16*5*5 = 400 features, 61,706 params.
    model = create("lenet5", input_shape=(1, 28, 28), num_classes=10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(400, 120), (120, 84), (84, 10)]
    assert n_params(model) == 61_706


def test_cnn1d_layers_and_length_arithmetic() -> None:
    model = create("cnn1d", input_shape=(1, 40), num_classes=10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv1d)]
    assert [c.out_channels for c in convs] == [32, 64, 128]
    assert [c.in_channels for c in convs] == [1, 32, 64]
    length = 40
    for _ in range(3):
        length = (length + 2 * 2 - 5) // 2 + 1  # 40 -> 20 -> 10 -> 5
    assert length == 5
    (linear,) = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linear.in_features == 128 * length == 640
    assert model(torch.randn(2, 1, 40)).shape == (2, 10)


def test_cnn1d_accepts_one_dimensional_shape() -> None:
    model = create("cnn1d", input_shape=(40,), num_classes=10)
    assert model(torch.randn(2, 40)).shape == (2, 10)


def test_mlp_widths() -> None:
    model = create("mlp", input_shape=(1, 8, 8), num_classes=5, widths=(32, 16, 8))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (64, 32), (32, 16), (16, 8), (8, 5)
    ]


def test_lenet300_widths() -> None:
    model = create("lenet300", num_classes=10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [300, 100, 10]
    assert n_params(model) == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10


def test_resnet_parameter_counts() -> None:
    assert 260_000 < n_params(create("resnet20")) < 280_000
    assert 450_000 < n_params(create("resnet32")) < 480_000


def test_transformer_uses_linear_projections_only() -> None:
    model = create("transformer", num_classes=3, dim=16, depth=1, heads=2)
    assert not any(isinstance(m, nn.MultiheadAttention) for m in model.modules())
    names = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert {"blocks.0.attn.q", "blocks.0.attn.k", "blocks.0.attn.v", "blocks.0.attn.out"} <= names


def test_transformer_patches_1d_and_2d() -> None:
    seq = create("transformer", input_shape=(2, 8), patch=4)
    x = torch.arange(16.0).view(1, 2, 8)
    tokens = seq.patchify(x)
    assert tokens.shape == (1, 2, 8)
    assert torch.equal(tokens[0, 1], torch.cat([x[0, 0, 4:8], x[0, 1, 4:8]]))

    img = create("transformer", input_shape=(1, 4, 4), patch=2)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    tokens = img.patchify(x)
    assert tokens.shape == (1, 4, 4)
    assert torch.equal(tokens[0, 1], torch.tensor([2.0, 3.0, 6.0, 7.0]))  # top-right patch


def test_transformer_heads_must_divide_dim() -> None:
    with pytest.raises(UserError, match="heads"):
        create("transformer", dim=10, heads=4)
