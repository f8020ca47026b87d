"""Gradients and outputs of every sparse op, in double precision, on the numba and torch paths."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsetrain.backends import sparse as sparse_backend
from sparsetrain.backends import sparse_ops
from sparsetrain.backends.sparse import SparseConv1d, SparseConv2d, SparseLinear, to_sparse
from sparsetrain.backends.sparse_ops import SparseMatmul


def _mask(shape, density, seed):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) < density


@pytest.fixture(params=["numba", "torch"])
def path(request, monkeypatch):
    if request.param == "torch":  # the CUDA path (torch sparse CSR), exercised on the CPU
        monkeypatch.setattr(sparse_ops, "uses_numba", lambda t: False)
    return request.param


def _linear(n_in, n_out, density, bias=True, seed=0):
    torch.manual_seed(seed)
    dense = nn.Linear(n_in, n_out, bias=bias).double()
    mask = _mask(dense.weight.shape, density, seed)
    layer = SparseLinear(n_in, n_out, dense.weight, mask, dense.bias)
    return layer, dense.weight.detach() * mask


@pytest.mark.parametrize("bias", [True, False])
def test_sparse_matmul_gradcheck(path, bias):
    layer, _ = _linear(7, 5, 0.4, bias=bias)
    xt = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    values = layer.values.detach().clone().requires_grad_()
    b = layer.bias.detach().clone().requires_grad_() if bias else None
    assert torch.autograd.gradcheck(lambda x, v, *bb: SparseMatmul.apply(x, v, bb[0] if bb else None, layer),
                                    (xt, values) + ((b,) if bias else ()))


def test_sparse_linear_matches_dense_and_gradcheck(path):
    layer, w = _linear(9, 6, 0.3, seed=1)
    x = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(layer(x), F.linear(x, w, layer.bias), rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(layer, (x,))
    # a 3-d input (tokens) goes through the same op
    x3 = torch.randn(2, 3, 9, dtype=torch.float64)
    torch.testing.assert_close(layer(x3), F.linear(x3, w, layer.bias), rtol=0, atol=1e-12)


def test_weight_gradient_only_at_active_positions_and_none_for_first_layer_input(path):
    layer, w = _linear(8, 4, 0.5, seed=2)
    x = torch.randn(3, 8, dtype=torch.float64)  # input needs no gradient: first layer
    dense_w = w.clone().requires_grad_()
    (layer(x) ** 2).sum().backward()
    (F.linear(x, dense_w, layer.bias.detach()) ** 2).sum().backward()
    assert layer.values.grad.shape == (layer.nnz,)  # one number per active weight, nothing else
    torch.testing.assert_close(layer.values.grad, dense_w.grad.reshape(-1)[layer.flat_index()])


def test_dense_fallback_is_the_same_op(path, monkeypatch):
    monkeypatch.setattr(sparse_backend, "BREAK_EVEN", 0.05)
    layer, w = _linear(6, 5, 0.5, seed=3)
    assert layer.runs_dense(4)
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(layer(x), F.linear(x, w, layer.bias), rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(layer, (x,))


_CONV_CASES = [  # (sparse class, dense class, kernel size, input shape, density, seed, options)
    (SparseConv2d, nn.Conv2d, 3, (2, 2, 5, 4), 0.4, 4, dict(stride=1, padding=0)),
    (SparseConv2d, nn.Conv2d, 3, (2, 2, 5, 4), 0.4, 4, dict(stride=2, padding=1, dilation=2)),
    (SparseConv2d, nn.Conv2d, 3, (2, 2, 5, 4), 0.4, 4, dict(padding="same")),
    (SparseConv1d, nn.Conv1d, 4, (2, 2, 9), 0.5, 5, dict(stride=2, padding=2)),
    (SparseConv1d, nn.Conv1d, 4, (2, 2, 9), 0.5, 5, dict(padding="same", dilation=2)),
]


@pytest.mark.parametrize("kernels", [True, False])  # im2col + sparse kernels (forced) / dense (default)
@pytest.mark.parametrize("cls,dense_cls,size,shape,density,seed,kwargs", _CONV_CASES)
def test_sparse_conv_matches_conv_and_gradcheck(path, cls, dense_cls, size, shape, density, seed, kwargs, kernels):
    torch.manual_seed(seed)
    conv = dense_cls(2, 3, size, **kwargs).double()
    mask = _mask(conv.weight.shape, density, seed)
    layer = cls(conv, conv.weight, mask)
    if kernels:
        layer.break_even = math.inf
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    assert layer.runs_dense(shape[0] * math.prod(shape[2:])) is not kernels
    functional = F.conv2d if dense_cls is nn.Conv2d else F.conv1d
    expected = functional(x, conv.weight.detach() * mask, conv.bias, conv.stride, conv.padding, conv.dilation)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(layer, (x,))


def test_unsupported_layers_are_user_errors():
    from sparsetrain.errors import UserError
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(UserError, match="groups=1"):
        to_sparse(model, None, ["0"])
    with pytest.raises(UserError, match="Linear, Conv1d and Conv2d"):
        to_sparse(nn.Sequential(nn.Conv3d(1, 1, 1)), None, ["0"])


@pytest.mark.parametrize("cls,conv,shape", [(SparseConv2d, nn.Conv2d, (2, 2, 6, 5)), (SparseConv1d, nn.Conv1d, (2, 2, 9))])
def test_dense_fallback_convolution_is_torchs_convolution_of_the_masked_weight(path, cls, conv, shape):
    torch.manual_seed(6)
    dense = conv(2, 3, 3, stride=2, padding=1).double()
    mask = _mask(dense.weight.shape, 0.1, 6)
    assert 0 < mask.sum() < 10  # a few active weights in 54 still run dense by default (CONV_BREAK_EVEN)
    layer = cls(dense, dense.weight, mask)
    assert layer.runs_dense(shape[0] * math.prod(shape[2:])) and layer.break_even == sparse_backend.CONV_BREAK_EVEN
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    functional = F.conv2d if conv is nn.Conv2d else F.conv1d
    expected = functional(x, dense.weight.detach() * mask, dense.bias, 2, 1)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(layer, (x,))
    weight = (dense.weight.detach() * mask).requires_grad_()
    (functional(x.detach(), weight, dense.bias, 2, 1) ** 2).sum().backward()
    (layer(x.detach()) ** 2).sum().backward()  # the weight gradient at the active weights only
    torch.testing.assert_close(layer.values.grad, weight.grad.reshape(-1)[layer.flat_index()])


def test_inference_without_autograd_gives_the_same_output(path):
    layer, w = _linear(9, 6, 0.3, seed=7)
    x = torch.randn(4, 9, dtype=torch.float64)
    with torch.no_grad():
        out = layer(x)
    assert out.grad_fn is None
    torch.testing.assert_close(out, F.linear(x, w, layer.bias), rtol=0, atol=1e-12)


def test_inference_above_break_even_reuses_the_dense_weight_until_it_changes(path):
    layer, w = _linear(9, 6, 0.6)  # above break-even: the dense fallback
    assert layer.runs_dense(4)
    x = torch.randn(4, 9, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), F.linear(x, w, layer.bias))
        first = layer.dense_weight()
        assert layer.dense_weight() is first  # unchanged values: no new scatter
        layer.values.mul_(2)  # an in-place write (the optimizer's) bumps the version
        assert layer.dense_weight() is not first
        torch.testing.assert_close(layer(x), F.linear(x, 2 * w, layer.bias))
        keep = torch.ones(layer.nnz, dtype=torch.bool)
        keep[0] = False  # a topology update: the first active weight leaves
        free = torch.nonzero(~layer.weight_mask.reshape(-1)).reshape(-1)[:1]
        layer.rewire_flat(keep, free)
        expected = (2 * w).reshape(-1).clone()
        expected[torch.nonzero(w.reshape(-1)).reshape(-1)[0]] = 0  # dropped; the grown one starts at 0
        torch.testing.assert_close(layer(x), F.linear(x, expected.view_as(w), layer.bias))
    layer(x).sum().backward()  # a forward with autograd drops the kept matrix
    assert layer._inference_weight is None and layer.values.grad is not None


def test_batch_scale_follows_the_measured_break_even():
    assert sparse_backend.batch_scale(1) == sparse_backend.batch_scale(100) == 1.0
    assert sparse_backend.batch_scale(400) == pytest.approx(0.5)  # sqrt(100 / 400)
    assert sparse_backend.batch_scale(625) == pytest.approx(0.4)  # sqrt(100 / 625), the floor
    assert sparse_backend.batch_scale(100_000) == 0.4


def test_a_layer_switches_to_dense_kernels_for_large_batches(path):
    torch.manual_seed(7)
    dense = nn.Linear(10, 10).double()
    mask = torch.zeros(100, dtype=torch.bool)
    mask[torch.randperm(100)[:20]] = True  # density 0.2: below 0.25, above 0.25 * sqrt(100 / 512)
    layer = SparseLinear(10, 10, dense.weight, mask.view(10, 10), dense.bias)
    assert not layer.runs_dense(64) and layer.runs_dense(512)
    w = dense.weight.detach() * mask.view(10, 10)
    for batch, kept in ((64, False), (512, True)):
        x = torch.randn(batch, 10, dtype=torch.float64)
        with torch.no_grad():  # only the dense fallback keeps a scattered weight for inference
            torch.testing.assert_close(layer(x), F.linear(x, w, layer.bias), rtol=0, atol=1e-12)
        assert (layer._inference_weight is not None) is kept
