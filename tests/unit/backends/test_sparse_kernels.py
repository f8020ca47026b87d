"""numba kernels of the sparse backend: the unrolled products and the topology rebuild."""

import numpy as np
import pytest
import torch

from sparsetrain.backends import kernels as K
from sparsetrain.backends import sparse as sparse_backend
from sparsetrain.backends.sparse import SparseLinear
from sparsetrain.backends.sparse_ops import SparseMatmul


def test_gradcheck_with_rows_longer_than_the_four_weight_unrolling():
    torch.manual_seed(0)
    weight = torch.randn(4, 13, dtype=torch.float64)
    mask = torch.ones(4, 13, dtype=torch.bool)
    mask[0, :2] = False  # rows of 11, 13, 13 and 5 weights: blocks of four plus remainders
    mask[3, 5:] = False
    layer = SparseLinear(13, 4, weight, mask, torch.nn.Parameter(torch.randn(4, dtype=torch.float64)))
    xt = torch.randn(13, 6, dtype=torch.float64, requires_grad=True)
    values = layer.values.detach().clone().requires_grad_()
    bias = layer.bias.detach().clone().requires_grad_()
    out = SparseMatmul.apply(xt, values, bias, layer)
    assert torch.allclose(out, (weight * mask) @ xt + bias[:, None])
    assert torch.autograd.gradcheck(lambda x, v, b: SparseMatmul.apply(x, v, b, layer), (xt, values, bias))


def test_rebuild_csr_finds_the_old_slot_of_each_kept_weight():
    # old active set, row-major 2 x 4: row 0 at columns 1, 3; row 1 at columns 0, 2, 3
    ptr, col = np.array([0, 2, 5], np.int32), np.array([1, 3, 0, 2, 3], np.int32)
    mask = np.array([1, 1, 0, 1, 0, 0, 1, 1], bool)  # new: (0,0) grown, (1,0) dropped
    kept = np.array([0, 1, 0, 1, 0, 0, 1, 1], bool)  # all new but (0,0) were kept
    new_ptr, new_col, source = K.rebuild_csr(ptr, col, mask, kept, 2, 4)
    assert new_ptr.tolist() == [0, 3, 5]
    assert new_col.tolist() == [0, 1, 3, 2, 3]
    assert source.tolist() == [-1, 0, 1, 3, 4]
    for remap in (K.remap_serial, K.remap_parallel):
        out = np.full(5, np.nan, np.float32)
        momentum = np.full(5, np.nan, np.float32)
        remap((np.array([10, 11, 12, 13, 14], np.float32), np.array([1, 2, 3, 4, 5], np.float32)),
              source, (out, momentum))
        assert out.tolist() == [0, 10, 11, 13, 14]
        assert momentum.tolist() == [0, 1, 2, 4, 5]


def test_merge_csr_kernels_equal_a_rebuild_from_the_dense_mask():
    """Serial and parallel merges against an independent construction: the new mask is the
    kept positions plus the grown ones, its CSR comes from np.nonzero, and a kept weight's
    source is its old slot found by a dict lookup."""
    rows, cols = 37, 130  # more rows than chunks of the parallel kernel; rows of 3 bitmap words
    ptr, col, _, mask = _random_csr(rows, cols, 0.3, 5)
    rng = np.random.default_rng(6)
    keep = rng.random(len(col)) < 0.6
    old_flat = np.nonzero(mask.reshape(-1))[0]
    free = np.setdiff1d(np.arange(rows * cols), old_flat[keep])
    grown = np.sort(rng.choice(free, 150, replace=False)).astype(np.int64)
    new_flat = np.sort(np.concatenate([old_flat[keep], grown]))
    slot_of = {int(p): s for s, p in enumerate(old_flat) if keep[s]}
    expected_ptr = np.concatenate([[0], np.cumsum(np.bincount(new_flat // cols, minlength=rows))]).tolist()
    for merge in (K.merge_csr_serial, K.merge_csr_parallel):
        new_ptr, new_col, source = merge(ptr, col, keep, grown, rows, cols)
        assert new_ptr.tolist() == expected_ptr
        assert new_col.tolist() == (new_flat % cols).tolist()
        assert source.tolist() == [slot_of.get(int(p), -1) for p in new_flat]


def test_flat_positions_kernels_equal_the_nonzero_positions():
    ptr, col, _, mask = _random_csr(21, 50, 0.2, 7)
    for kernel in (K.flat_positions_serial, K.flat_positions_parallel):
        out = np.full(len(col), -5, np.int64)
        kernel(ptr, col, 50, out)
        assert out.tolist() == np.nonzero(mask.reshape(-1))[0].tolist()


def _random_csr(rows, cols, density, seed):
    rng = np.random.default_rng(seed)
    mask = rng.random((rows, cols)) < density
    ptr = np.concatenate([[0], np.cumsum(mask.sum(1))]).astype(np.int32)
    col = np.nonzero(mask)[1].astype(np.int32)
    return ptr, col, rng.standard_normal(len(col)), mask


@pytest.mark.parametrize("rows", [7, 8, 21])  # the kernel takes 8 rows per pass: none, one, two and a rest
def test_transpose_kernels_equal_numpy_transpose(rows):
    x = np.random.default_rng(1).standard_normal((rows, 37))
    for kernel in (K.transpose_serial, K.transpose_parallel):
        out = np.full((37, rows), np.nan)
        kernel(x, out)
        assert np.array_equal(out, x.T)


def test_parallel_input_gradient_equals_dense_product():
    ptr, col, val, mask = _random_csr(9, 23, 0.3, 2)
    dense = np.zeros((9, 23))
    dense[mask] = val
    gt = np.random.default_rng(3).standard_normal((9, 5))
    for kernel in (K.spmm_t_serial, K.spmm_t_parallel):
        out = np.full((23, 5), np.nan)  # every row is written, also those no weight reaches
        kernel(ptr, col, val, gt, out)
        np.testing.assert_allclose(out, dense.T @ gt, rtol=0, atol=1e-12)


def _trained_layer(seed):
    torch.manual_seed(seed)
    weight = torch.randn(6, 11, requires_grad=True)
    mask = torch.rand(6, 11, generator=torch.Generator().manual_seed(seed)) < 0.4
    layer = SparseLinear(11, 6, weight, mask, None)
    opt = torch.optim.Adam([layer.values], lr=0.1)
    (layer(torch.randn(3, 11)) ** 2).sum().backward()
    opt.step()
    return layer, opt


def _state(layer, opt):
    return [layer.indptr, layer.indices, layer.values.detach(), layer.values.grad,
            *(v for v in opt.state[layer.values].values() if v.shape == layer.values.shape)]


def test_torch_rebuild_path_equals_the_numba_kernels(monkeypatch):
    """The rebuilds written in torch ops (the CUDA path) give the numba path's CSR, values,
    gradient and optimizer state, for rewire_flat (SET/RigL) and restructure (set_mask, MEST)."""
    results = {}
    for on_cpu in (True, False):
        monkeypatch.setattr(sparse_backend, "_rebuilds_on_cpu", lambda device, on_cpu=on_cpu: on_cpu)
        layer, opt = _trained_layer(4)
        keep = torch.arange(layer.nnz) % 3 != 0
        free = torch.nonzero(~layer.weight_mask.reshape(-1)).reshape(-1)
        layer.rewire_flat(keep, free[::4], opt)
        after_rewire = [t.clone() for t in _state(layer, opt)]
        mask = layer.weight_mask.clone()
        mask[0], mask[:, 0] = True, False  # grow a row, drop a column: a new count
        layer.restructure(mask, mask & layer.weight_mask, opt)
        results[on_cpu] = after_rewire + _state(layer, opt)
    for a, b in zip(results[True], results[False]):
        torch.testing.assert_close(a.to(b.dtype), b, rtol=0, atol=0)


def test_parallel_kernels_compile_without_numba_warnings():
    """Parallel kernels cannot be cached by numba; asking for it makes every process warn."""
    import subprocess
    import sys
    code = """
import warnings
import numba
import numpy as np
warnings.simplefilter("error", numba.NumbaWarning)
from sparsetrain.backends import kernels as K
from sparsetrain.sparse.select import top_abs_excluding
ptr, col = np.array([0, 2, 3], np.int32), np.array([0, 2, 1], np.int32)
val, xt = np.ones(3, np.float32), np.ones((3, 4), np.float32)
out = np.empty((2, 4), np.float32)
K.spmm_parallel(ptr, col, val, xt, K.EMPTY[val.dtype], out, True)
K.backward_parallel(ptr, col, val, out, xt, np.empty(3, np.float32), np.empty((3, 4), np.float32), np.empty(2, np.float32))
K.transpose_parallel(out, np.empty((4, 2), np.float32))
top_abs_excluding(np.arange(200_000, dtype=np.float32), 5, np.zeros(0, np.int64), 2)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
