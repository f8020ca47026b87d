"""The autograd ops of the sparse backend: ``yt = W @ xt + bias`` with W in CSR
(`SparseMatmul`) and the dense weight of the fallback (`DenseFromCSR`).

``xt`` is feature-major, ``(in_features, batch)``; so is the result ``(out_features,
batch)``. On CPU the forward, input gradient and weight gradient (at active positions
only, an SDDMM) are numba kernels writing into preallocated outputs; elsewhere (CUDA)
they are torch sparse CSR ops. The input gradient is skipped when the input does not
need one (the first layer), and the bias is added inside the forward kernel.

RigL and MEST need the gradient at every position at update steps only: a layer whose
``capture`` flag is set keeps ``(xt, gyt)`` of its last backward so the dense gradient
``gyt @ xt.T`` can be formed once, at the update; no other step pays for it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sparsetrain.backends import kernels as K

_NUMBA_DTYPES = (torch.float32, torch.float64)


def uses_numba(t: torch.Tensor) -> bool:
    return t.device.type == "cpu" and t.dtype in _NUMBA_DTYPES


def feature_major(t: torch.Tensor) -> torch.Tensor:
    """``t`` (features, batch) C-contiguous; a transposed view of a batch-major tensor is
    copied by the numba transpose (2.6x faster than torch's strided copy at 100x3072)."""
    if t.is_contiguous():
        return t
    if uses_numba(t) and t.dim() == 2 and t.t().is_contiguous():
        out = torch.empty(t.shape, dtype=t.dtype)
        K.pick(t.numel() * K.COPY_WEIGHT, K.transpose_serial, K.transpose_parallel)(t.t().numpy(), out.numpy())
        return out
    return t.contiguous()


class NumpyViews:
    """numpy views of a layer's CSR tensors, rebuilt only when a tensor's storage changes
    (each ``Tensor.numpy()`` costs microseconds, which add up at 99% sparsity)."""

    def __init__(self) -> None:
        self._key: tuple = ()
        self._arrays: tuple = ()

    def get(self, *tensors: torch.Tensor) -> tuple[np.ndarray, ...]:
        key = tuple((t.data_ptr(), t.numel(), t.dtype) for t in tensors)
        if key != self._key:
            self._arrays = tuple(t.detach().numpy() for t in tensors)
            self._key = key
        return self._arrays


def sparse_product(layer: Any, xt: torch.Tensor, values: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``W @ xt + bias[:, None]`` for a feature-major ``xt`` (through the layer's fused
    activation, if any), without autograd: the forward of `SparseMatmul`, and the whole layer
    when no gradient is needed."""
    xt = feature_major(xt)
    rows, nb, relu = layer.rows, xt.shape[1], layer.activation == "relu"
    if uses_numba(xt) and values.dtype == xt.dtype:
        out = torch.empty((rows, nb), dtype=xt.dtype)
        ptr, col, val, b = layer.numpy_views(values, bias)
        K.pick(val.shape[0] * nb, K.spmm_serial, K.spmm_parallel)(ptr, col, val, xt.numpy(), b, out.numpy(), relu)
        return out
    w = torch.sparse_csr_tensor(layer.indptr, layer.indices, values.detach(), (rows, xt.shape[0]))
    out = w @ xt
    if bias is not None:
        out += bias.detach().unsqueeze(1)
    return out.clamp_(min=0) if relu else out


def _relu_grad(gyt: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The gradient ``gyt`` of a ReLU's output ``out`` taken back through the ReLU."""
    if uses_numba(gyt) and gyt.dtype == out.dtype:
        result = torch.empty_like(gyt)
        K.relu_grad(gyt.numpy(), out.numpy(), result.numpy())
        return result
    return gyt * (out > 0)


class SparseMatmul(torch.autograd.Function):
    """``yt = W @ xt (+ bias)``; W is ``layer``'s CSR (indptr, indices) with ``values``."""

    @staticmethod
    def forward(ctx: Any, xt: torch.Tensor, values: torch.Tensor, bias: torch.Tensor | None,
                layer: Any) -> torch.Tensor:
        xt = feature_major(xt)
        out = sparse_product(layer, xt, values, bias)
        ctx.save_for_backward(xt, values, out if layer.activation else None)
        ctx.bias = bias
        ctx.layer = layer
        return out

    @staticmethod
    def backward(ctx: Any, gyt: torch.Tensor):
        xt, values, out = ctx.saved_tensors
        gyt = feature_major(gyt)
        if out is not None:  # through the fused ReLU
            gyt = _relu_grad(gyt, out)
        layer, bias, (need_x, need_w, need_b, _) = ctx.layer, ctx.bias, ctx.needs_input_grad
        if layer.capture:
            layer.captured = (xt, gyt)
        need_b = need_b and bias is not None
        rows, cols, nb = gyt.shape[0], xt.shape[0], xt.shape[1]
        gx = gw = gb = None
        if uses_numba(xt) and gyt.dtype == xt.dtype:
            ptr, col, val, _ = layer.numpy_views(values, bias)
            empty, empty_2d = K.EMPTY[val.dtype], K.EMPTY_2D[val.dtype]
            gw = torch.empty_like(values) if need_w else None
            gx = torch.empty((cols, nb), dtype=xt.dtype) if need_x else None
            gb = torch.empty(rows, dtype=gyt.dtype) if need_b else None
            K.pick(val.shape[0] * nb, K.backward_serial, K.backward_parallel)(
                ptr, col, val, gyt.numpy(), xt.numpy(), empty if gw is None else gw.numpy(),
                empty_2d if gx is None else gx.numpy(), empty if gb is None else gb.numpy())
        else:
            if need_w:
                pattern = torch.sparse_csr_tensor(layer.indptr, layer.indices, torch.zeros_like(values), (rows, cols))
                gw = torch.sparse.sampled_addmm(pattern, gyt, xt.t()).values()
            if need_x:
                w = torch.sparse_csr_tensor(layer.indptr, layer.indices, values.detach(), (rows, cols))
                gx = w.t() @ gyt
            if need_b:
                gb = gyt.sum(1)
        return gx, gw, gb, None


class DenseFromCSR(torch.autograd.Function):
    """The dense weight ``W`` (rows, cols) of ``layer`` from its active ``values``; the
    gradient flows back to the active positions only. Used by the dense fallback, where
    it also hands RigL/MEST the dense gradient when the layer's ``capture`` flag is set."""

    @staticmethod
    def forward(ctx: Any, values: torch.Tensor, layer: Any) -> torch.Tensor:
        ctx.layer = layer
        if uses_numba(values):
            out = values.new_empty(layer.rows, layer.cols)
            ptr, col, val, _ = layer.numpy_views(values, layer.bias)
            K.pick(out.numel() * K.COPY_WEIGHT, K.scatter_serial, K.scatter_parallel)(ptr, col, val, out.numpy())
        else:
            out = values.new_zeros(layer.rows, layer.cols)
            out.view(-1).index_copy_(0, layer.flat_index(), values.detach())
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor):
        layer = ctx.layer
        grad = grad.contiguous()
        if layer.capture:
            layer.captured = grad
        if uses_numba(grad):
            out = torch.empty(layer.nnz, dtype=grad.dtype)
            ptr, col, _, _ = layer.numpy_views(layer.values, layer.bias)
            K.pick(grad.numel() * K.COPY_WEIGHT, K.gather_serial, K.gather_parallel)(ptr, col, grad.numpy(), out.numpy())
        else:
            out = grad.view(-1).index_select(0, layer.flat_index())
        return out, None
