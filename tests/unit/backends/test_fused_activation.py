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


# --- fused chains: a run of sparse Linear layers as one autograd op ---------------------------
def _sparse_mlp(dtype=torch.float64):
    model = _mlp().to(dtype)
    st.backends.to_sparse(model, None, ["0", "2", "4"])
    for i, density in zip((0, 2, 4), (0.5, 0.4, 0.6)):  # a different active set per layer
        model[i].load_state_dict(SparseLinear(model[i].in_features, model[i].out_features, model[i].weight,
                                              torch.rand(model[i].weight_shape) < density, model[i].bias).state_dict())
    return model


@pytest.mark.parametrize("break_even", [1.0, 0.01])  # one SparseChain op / layer by layer
def test_a_fused_chain_computes_the_layer_by_layer_function_and_gradients(path, monkeypatch, break_even):
    torch.manual_seed(5)
    reference = _sparse_mlp()
    model = copy.deepcopy(reference)
    fuse_activations(model)
    assert model[0].chain == (model[0], model[2], model[4]) and model[2].chained and model[4].chained
    for layer in (model[0], model[2], model[4]):
        layer.break_even = break_even
    calls = []
    monkeypatch.setattr(sparse_ops.SparseChain, "apply", lambda *a, f=sparse_ops.SparseChain.apply: calls.append(1) or f(*a))
    x = torch.randn(6, 12, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(model(x), reference(x), rtol=0, atol=1e-12)
    assert len(calls) == (1 if break_even == 1.0 else 0)
    assert torch.autograd.gradcheck(model, (x,))
    for net in (model, reference):
        (net(x) ** 2).sum().backward()
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-12)
    with torch.no_grad():  # inference runs the chain without an autograd node
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=1e-12)
    x3 = torch.randn(2, 3, 12, dtype=torch.float64)  # leading dimensions
    torch.testing.assert_close(model(x3), reference(x3), rtol=0, atol=1e-12)


def test_chains_are_the_runs_of_sparse_linear_layers_and_unfuse_clears_them():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 6), nn.Dropout(0.0), nn.Linear(6, 6),
                          nn.Linear(6, 2), nn.Tanh(), nn.Linear(2, 2))
    st.backends.to_sparse(model, None, ["0", "2", "4", "5", "7"])
    reference = copy.deepcopy(model)
    fuse_activations(model)
    assert model[0].chain == (model[0], model[2]) and model[4].chain == (model[4], model[5])
    assert [m.chained for m in (model[0], model[2], model[4], model[5], model[7])] == [False, True, False, True, False]
    assert model[7].chain is None  # alone after the Tanh: no chain
    x = torch.randn(3, 4)
    torch.testing.assert_close(model(x), reference(x))
    unfuse_activations(model)
    assert all(m.chain is None and not m.chained for m in model.modules() if isinstance(m, SparseLinear))
    torch.testing.assert_close(model(x), reference(x))


def test_rigl_on_a_fused_chain_grows_the_same_weights_as_unfused():
    """RigL reads each layer's dense gradient, which the chain's backward must capture."""
    x, y = torch.randn(32, 12), torch.randint(0, 3, (32,))
    masks = {}
    for fuse in (False, True):
        model = _mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        method = st.create("rigl", model, opt, density=0.2, distribution="uniform", backend="sparse", seed=0,
                           fuse_activations=fuse, total_steps=12, update_interval=3)
        initial = [w.mask.clone() for w in method.weights]
        for _ in range(12):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            method.step()
        masks[fuse] = [w.mask.clone() for w in method.weights]
        assert any(not torch.equal(a, b) for a, b in zip(initial, masks[fuse]))  # it did rewire
    assert model[0].chain is not None
    assert all(torch.equal(a, b) for a, b in zip(masks[True], masks[False]))
