"""numba kernels for a CSR weight ``W`` (rows = outputs) and feature-major activations.

Activations are kept as ``(features, batch)`` C-contiguous arrays (the transpose of the
usual ``(batch, features)`` layout), so every inner loop runs over a contiguous batch
vector: the forward is a row-wise CSR x dense product, the weight gradient is a dot of
two contiguous rows per active weight (SDDMM), and the input gradient scatters rows.
Parallel versions split rows (forward, SDDMM, dense scatter/gather); the input gradient
scatters into shared rows and stays serial (splitting the batch shares cache lines,
private copies per thread did not pay in our measurements). Serial versions avoid the
thread start-up cost on small problems. Outputs are preallocated by the caller.
"""

from __future__ import annotations

import os

import numba
import numpy as np
import torch
from numba import prange

if "NUMBA_THREADING_LAYER" not in os.environ:
    # workers that sleep between kernels: an OpenMP pool beside torch's would spin against it
    numba.config.THREADING_LAYER = "workqueue"

_OPTS = dict(nogil=True, fastmath=True, cache=False)


@numba.njit(**_OPTS)
def _spmm_rows(ptr, col, val, xt, bias, out, r0, r1):
    nb = xt.shape[1]
    for r in range(r0, r1):
        acc = out[r]
        if bias.shape[0]:
            for j in range(nb):
                acc[j] = bias[r]
        else:
            acc[:] = 0
        for k in range(ptr[r], ptr[r + 1]):
            v = val[k]
            src = xt[col[k]]
            for j in range(nb):
                acc[j] += v * src[j]


@numba.njit(**_OPTS)
def spmm_serial(ptr, col, val, xt, bias, out):
    """out[r, :] = bias[r] + sum_k val[k] * xt[col[k], :] over row r's entries."""
    _spmm_rows(ptr, col, val, xt, bias, out, 0, out.shape[0])


@numba.njit(parallel=True, **_OPTS)
def spmm_parallel(ptr, col, val, xt, bias, out):
    n = out.shape[0]
    chunks = numba.get_num_threads() * 4
    step = (n + chunks - 1) // chunks
    for c in prange(chunks):
        _spmm_rows(ptr, col, val, xt, bias, out, min(c * step, n), min((c + 1) * step, n))


@numba.njit(**_OPTS)
def _spmm_t_rows(ptr, col, val, gt, out, r0, r1):
    out[:] = 0
    for r in range(r0, r1):
        g = gt[r]
        for k in range(ptr[r], ptr[r + 1]):
            v = val[k]
            dst = out[col[k]]
            for j in range(g.shape[0]):
                dst[j] += v * g[j]


@numba.njit(**_OPTS)
def spmm_t_serial(ptr, col, val, gt, out):
    """out = W^T @ gt: out[col[k], :] += val[k] * gt[r, :]."""
    _spmm_t_rows(ptr, col, val, gt, out, 0, gt.shape[0])


@numba.njit(**_OPTS)
def _sddmm_rows(ptr, col, gt, xt, out, r0, r1):
    nb = xt.shape[1]
    for r in range(r0, r1):
        g = gt[r]
        for k in range(ptr[r], ptr[r + 1]):
            x = xt[col[k]]
            s = g[0] * x[0]  # accumulate in the data's own precision (vectorises)
            for j in range(1, nb):
                s += g[j] * x[j]
            out[k] = s


@numba.njit(**_OPTS)
def sddmm_serial(ptr, col, gt, xt, out):
    """out[k] = gt[r, :] . xt[col[k], :] for every active weight k in row r."""
    _sddmm_rows(ptr, col, gt, xt, out, 0, gt.shape[0])


@numba.njit(parallel=True, **_OPTS)
def sddmm_parallel(ptr, col, gt, xt, out):
    n = gt.shape[0]
    chunks = numba.get_num_threads() * 4
    step = (n + chunks - 1) // chunks
    for c in prange(chunks):
        _sddmm_rows(ptr, col, gt, xt, out, min(c * step, n), min((c + 1) * step, n))


@numba.njit(**_OPTS)
def row_sums(gt, out):
    """out[r] = sum_j gt[r, j] (the bias gradient in the feature-major layout)."""
    for r in range(gt.shape[0]):
        g = gt[r]
        s = g[0]
        for j in range(1, gt.shape[1]):
            s += g[j]
        out[r] = s


PARALLEL_WORK = 4_000_000
"""Multiply-adds below which the serial kernel wins: waking a second thread costs more than
half of the work below a few million (measured with benchmarks/sparse_mlp.py, 2 threads)."""


COPY_WEIGHT = 16
"""A scattered/gathered element costs about as much as this many multiply-adds (memory bound)."""

_threads = [1]


def pick(work: int, serial, parallel):
    """The parallel kernel for big problems when torch is allowed more than one thread
    (numba's thread count follows ``torch.get_num_threads()``)."""
    if work < PARALLEL_WORK:
        return serial
    n = min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)
    if n <= 1:
        return serial
    if n != _threads[0]:
        numba.set_num_threads(n)
        _threads[0] = n
    return parallel


EMPTY = {np.dtype(np.float32): np.zeros(0, np.float32), np.dtype(np.float64): np.zeros(0, np.float64)}


@numba.njit(**_OPTS)
def _scatter_rows(ptr, col, val, out, r0, r1):
    for r in range(r0, r1):
        row = out[r]
        row[:] = 0
        for k in range(ptr[r], ptr[r + 1]):
            row[col[k]] = val[k]


@numba.njit(**_OPTS)
def scatter_serial(ptr, col, val, out):
    """out = the dense matrix (zeros where inactive); ``out`` may be uninitialised."""
    _scatter_rows(ptr, col, val, out, 0, out.shape[0])


@numba.njit(parallel=True, **_OPTS)
def scatter_parallel(ptr, col, val, out):
    n = out.shape[0]
    chunks = numba.get_num_threads() * 4
    step = (n + chunks - 1) // chunks
    for c in prange(chunks):
        _scatter_rows(ptr, col, val, out, min(c * step, n), min((c + 1) * step, n))


@numba.njit(**_OPTS)
def _gather_rows(ptr, col, dense, out, r0, r1):
    for r in range(r0, r1):
        row = dense[r]
        for k in range(ptr[r], ptr[r + 1]):
            out[k] = row[col[k]]


@numba.njit(**_OPTS)
def gather_serial(ptr, col, dense, out):
    """out[k] = dense[r, col[k]]: a dense gradient read at the active positions."""
    _gather_rows(ptr, col, dense, out, 0, dense.shape[0])


@numba.njit(parallel=True, **_OPTS)
def gather_parallel(ptr, col, dense, out):
    n = dense.shape[0]
    chunks = numba.get_num_threads() * 4
    step = (n + chunks - 1) // chunks
    for c in prange(chunks):
        _gather_rows(ptr, col, dense, out, min(c * step, n), min((c + 1) * step, n))
