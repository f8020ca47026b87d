"""Every registered model builds, runs forward and backward, and is reproducible."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsetrain.models import MODELS, create, default_input_shape

# Cheap options for the big models; any model not listed is built with its defaults.
SMALL_OPTIONS: dict[str, dict] = {
    "vgg11": {"width": 0.25},
    "vgg16": {"width": 0.25},
    "preactresnet18": {"width": 8},
    "resnet18": {"width": 8},
    "resnet20": {"width": 8},
    "resnet32": {"width": 8},
    "resnet50": {"width": 8},
    "wrn28": {"widen": 1},
}

NUM_CLASSES = 7

# Models whose input is not a tensor of features: a valid batch for them.
INPUTS: dict[str, torch.Tensor] = {
    "gcn": torch.tensor([[0.0], [5.0]]),  # node indices into the graph the model holds
}


def small(name: str) -> nn.Module:
    return create(name, num_classes=NUM_CLASSES, **SMALL_OPTIONS.get(name, {}))


@pytest.mark.parametrize("name", MODELS.names())
def test_forward_backward(name: str) -> None:
    torch.manual_seed(0)
    model = small(name)
    x = INPUTS.get(name, torch.randn(2, *default_input_shape(name)))
    y = torch.tensor([0, NUM_CLASSES - 1])
    out = model(x)
    assert out.shape == (2, NUM_CLASSES)
    assert torch.isfinite(out).all()
    F.cross_entropy(out, y).backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}.{pname} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{name}.{pname} has a non-finite gradient"


@pytest.mark.parametrize("name", MODELS.names())
def test_has_sparsifiable_weight(name: str) -> None:
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d)
    weights = [m.weight for m in small(name).modules() if isinstance(m, kinds)]
    assert weights and all(isinstance(w, nn.Parameter) for w in weights)


@pytest.mark.parametrize("name", MODELS.names())
def test_deterministic_given_seed(name: str) -> None:
    torch.manual_seed(0)
    a = small(name).state_dict()
    torch.manual_seed(0)
    b = small(name).state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
