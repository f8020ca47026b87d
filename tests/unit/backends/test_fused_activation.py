"""ReLU folded into the sparse Linear kernels: same function, same gradients, reversible."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparsetrain as st
from sparsetrain.backends import sparse as sparse_backend
from sparsetrain.backends import sparse_ops
from sparsetrain.backends.sparse import FusedActivation, SparseLinear, fuse_activations, to_masked, unfuse_activations
from sparsetrain.errors import UserError
from sparsetrain.sparse import dense_twin


@pytest.fixture(params=["numba", "torch"])
def path(request, monkeypatch):
    if request.param == "torch":  # the CUDA path (torch sparse CSR), exercised on the CPU
        monkeypatch.setattr(sparse_ops, "uses_numba", lambda t: False)
    return request.param


def _layer(density, seed=0):
    torch.manual_seed(seed)
    dense = nn.Linear(9, 7).double()
    mask = torch.rand(dense.weight.shape, generator=torch.Generator().manual_seed(seed)) < density
    return SparseLinear(9, 7, dense.weight, mask, dense.bias), dense.weight.detach() * mask


@pytest.mark.parametrize("break_even", [1.0, 0.01])  # sparse kernels / dense fallback
def test_fused_relu_is_relu_of_the_layer_with_the_same_gradients(path, monkeypatch, break_even):
    monkeypatch.setattr(sparse_backend, "BREAK_EVEN", break_even)
    layer, w = _layer(0.4)
    layer.activation = "relu"
    x = torch.randn(5, 9, dtype=torch.float64, requires_grad=True)
    expected = F.relu(F.linear(x, w, layer.bias))
    assert (expected == 0).any() and (expected > 0).any()  # both sides of the kink are exercised
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(layer, (x,))
    # weight and bias gradients through the activation equal those of the dense composition
    dense_w, dense_b = w.clone().requires_grad_(), layer.bias.detach().clone().requires_grad_()
    (F.relu(F.linear(x.detach(), dense_w, dense_b)) ** 2).sum().backward()
    (layer(x.detach()) ** 2).sum().backward()
    torch.testing.assert_close(layer.values.grad, dense_w.grad.reshape(-1)[layer.flat_index()])
    torch.testing.assert_close(layer.bias.grad, dense_b.grad)


def _mlp():
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(inplace=True), nn.Linear(8, 3))


def test_fusion_trains_exactly_like_the_unfused_network():
    x, y = torch.randn(32, 12), torch.randint(0, 3, (32,))
    losses = {}
    for fuse in (False, True):
        model = _mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        method = st.create("static", model, opt, density=0.2, distribution="uniform", backend="sparse",
                           seed=0, fuse_activations=fuse)
        losses[fuse] = []
        for _ in range(20):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            method.step()
            losses[fuse].append(loss.item())
    assert sum(isinstance(m, FusedActivation) for m in model.modules()) == 2
    torch.testing.assert_close(losses[True], losses[False], rtol=0, atol=1e-6)
    assert losses[True][-1] < losses[True][0]


def test_unfuse_and_to_masked_put_the_relus_back():
    model = _mlp()
    st.backends.to_sparse(model, None, ["0", "2", "4"])
    reference = copy.deepcopy(model)
    assert fuse_activations(model) == ["0", "2"]  # the last layer has no ReLU after it
    assert model[0].activation == "relu" and isinstance(model[3], FusedActivation)
    x = torch.randn(4, 12)
    torch.testing.assert_close(model(x), reference(x))
    twin = dense_twin(model, [])  # a deep copy turned dense: the ReLUs are modules again
    to_masked(twin)
    assert type(twin[1]) is nn.ReLU and type(twin[3]) is nn.ReLU and twin[3].inplace
    torch.testing.assert_close(twin(x), reference(x))
    unfuse_activations(model)
    assert model[0].activation is None and type(model[1]) is nn.ReLU
    torch.testing.assert_close(model(x), reference(x))


def test_fusing_needs_the_sparse_backend():
    with pytest.raises(UserError, match="fuse_activations"):
        st.create("static", _mlp(), None, density=0.5, fuse_activations=True)
