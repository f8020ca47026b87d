"""Sparse-aware initialization: the initial weights are rescaled to the fan-in the first mask leaves."""

import math

import pytest
import torch
from torch import nn

import sparsetrain  # noqa: F401  (registers backends and methods)
from sparsetrain.algorithms import create
from sparsetrain.errors import ConfigError
from sparsetrain.sparse.initialization import init_scale

MASK = torch.tensor([[True, False, False, False],
                     [True, True, True, True],
                     [False, False, False, False]])  # fan-ins 1, 4, 0 of 4; 5 of 12 active


def test_layer_scale_is_one_over_sqrt_layer_density():
    assert init_scale(MASK, "layer").item() == pytest.approx(math.sqrt(12 / 5))
    assert init_scale(torch.ones(3, 4, dtype=torch.bool), "layer").item() == 1.0


def test_unit_scale_uses_each_output_units_active_fan_in():
    # sqrt(dense fan-in 4 / active fan-in): 2 for one input, 1 for all four, untouched for none
    assert torch.equal(init_scale(MASK, "unit").reshape(-1), torch.tensor([2.0, 1.0, 1.0]))
    conv = torch.zeros(2, 3, 2, 2, dtype=torch.bool)  # fan-in 12 per filter
    conv[0, 0, 0, 0] = conv[0, 1, 1, 1] = conv[0, 2, 0, 1] = True  # filter 0: 3 of 12
    conv[1] = True
    scale = init_scale(conv, "unit")
    assert scale.shape == (2, 1, 1, 1) and torch.allclose(scale.reshape(-1), torch.tensor([2.0, 1.0]))


def test_none_keeps_the_dense_initialization():
    assert init_scale(MASK, "none").item() == 1.0


def _static(mode, backend="masked", density=0.25):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4))
    dense = [m.weight.detach().clone() for m in (model[0], model[2])]
    method = create("static", model, torch.optim.SGD(model.parameters(), lr=0.1), density=density,
                    distribution="uniform", sparse_init=mode, backend=backend, seed=3)
    return method, dense


@pytest.mark.parametrize("backend", ["masked", "sparse"])
def test_static_layer_init_multiplies_the_active_initial_weights(backend):
    method, dense = _static("layer", backend)
    for w, before in zip(method.weights, dense):
        density = w.active / w.numel  # uniform 0.25: 12 of 48 and 6 of 24
        assert density == 0.25
        assert torch.allclose(w.values, before * w.mask * 2.0)  # 1/sqrt(0.25) = 2


def test_static_unit_init_scales_each_row_by_its_own_fan_in():
    method, dense = _static("unit")
    for w, before in zip(method.weights, dense):
        fan_in = w.mask.sum(dim=1, keepdim=True).float()
        expected = before * w.mask * torch.sqrt(w.shape[1] / fan_in.clamp(min=1))
        assert torch.allclose(w.values, expected)


def test_sparse_init_none_is_the_dense_init_under_the_mask():
    method, dense = _static("none")
    for w, before in zip(method.weights, dense):
        assert torch.equal(w.values, before * w.mask)


def test_pruning_at_init_scales_after_the_prune_not_before():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4))
    dense = [m.weight.detach().clone() for m in (model[0], model[2])]
    method = create("snip", model, torch.optim.SGD(model.parameters(), lr=0.1), density=0.25, sparse_init="layer")
    assert all(torch.equal(w.values, d) for w, d in zip(method.weights, dense))  # still dense
    x, y = torch.randn(16, 8), torch.randint(0, 4, (16,))
    method.prepare(iter([(x, y)]))
    for w, before in zip(method.weights, dense):
        scale = math.sqrt(w.numel / w.active)  # SNIP's global ranking: densities differ per layer
        assert torch.allclose(w.values, before * w.mask * scale)


def test_pruning_after_training_never_rescales_trained_weights():
    with pytest.raises(ConfigError, match="sparse_init"):
        create("prune-global", nn.Linear(4, 4), None, density=0.5, sparse_init="layer")


def test_unit_scale_of_a_weight_stored_in_out_reads_fan_in_along_dim_0():
    # transformers' Conv1D stores (in, out): output units are the columns of MASK.T
    assert torch.equal(init_scale(MASK.T, "unit", fan_in_dim=0).reshape(-1), torch.tensor([2.0, 1.0, 1.0]))


def test_embeddings_are_lookups_and_keep_their_initialization():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(8, 3))
    before = [model[0].weight.detach().clone(), model[2].weight.detach().clone()]
    method = create("static", model, None, density=0.5, distribution="uniform", layer_types=("embedding",))
    table, linear = method.weights
    assert table.active == 20 and torch.equal(table.values, before[0] * table.mask)
    assert torch.allclose(linear.values, before[1] * linear.mask * 2 ** 0.5)


@pytest.mark.parametrize("method", ["snip", "grasp", "synflow"])
def test_pruning_at_init_keeps_the_initial_weights_by_default_as_its_references(method):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4))
    dense = [m.weight.detach().clone() for m in (model[0], model[2])]
    pruner = create(method, model, torch.optim.SGD(model.parameters(), lr=0.1), density=0.25)
    assert pruner.config.sparse_init == "none"
    pruner.prepare(iter([(torch.randn(16, 8), torch.randint(0, 4, (16,)))]))
    for w, before in zip(pruner.weights, dense):
        assert 0 < w.active < w.numel and torch.equal(w.values, before * w.mask)
