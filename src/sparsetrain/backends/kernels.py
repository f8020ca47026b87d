"""numba kernels for a CSR weight ``W`` (rows = outputs) and feature-major activations.

Activations are kept as ``(features, batch)`` C-contiguous arrays (the transpose of the
usual ``(batch, features)`` layout), so every inner loop runs over a contiguous batch
vector: the forward is a row-wise CSR x dense product, the weight gradient is a dot of
two contiguous rows per active weight (SDDMM), and the input gradient scatters rows.
The forward and the SDDMM take four
active weights of a row per pass over the batch vector (fewer loads and stores of the
row they share: about 1.5x and 1.2x at 90-99% sparsity). Parallel versions split rows
(forward, SDDMM, dense scatter/gather) or, for the input gradient, give each thread a
range of output rows (it reads all of W and keeps the entries landing in its rows; threads
splitting the batch instead wrote the same cache lines at the same time, 5x slower). A
batch-major input is made feature-major by a transpose of eight rows per pass. Serial
versions avoid the start-up cost of a parallel region on small problems. Outputs are
preallocated by the caller.
"""

from __future__ import annotations

import os

import numba
import numpy as np
import torch
from numba import prange

from sparsetrain.sparse.select import popcount

if "NUMBA_THREADING_LAYER" not in os.environ and "NUMBA_THREADING_LAYER_PRIORITY" not in os.environ:
    # OpenMP starts a parallel kernel in ~2 us, the workqueue in ~170 us (measured on 2 cores),
    # which decides whether splitting pays at 99% sparsity; workqueue where no OpenMP exists.
    # GNU OpenMP is not fork-safe: run parallel kernels in spawned, not forked, processes.
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]
    numba.config.THREADING_LAYER = "default"

_OPTS = dict(nogil=True, fastmath=True, cache=True)  # compiled once per machine, kept on disk
_PARALLEL_OPTS = dict(nogil=True, fastmath=True, cache=False)
"""Parallel kernels link to the threading layer at run time, which numba cannot cache: they
compile in each process (about a second each, on first use)."""


@numba.njit(**_OPTS)
def _spmm_rows(ptr, col, val, xt, bias, out, r0, r1, relu):
    nb = xt.shape[1]
    for r in range(r0, r1):
        acc = out[r]
        if bias.shape[0]:
            for j in range(nb):
                acc[j] = bias[r]
        else:
            acc[:] = 0
        k, end = ptr[r], ptr[r + 1]
        while k + 4 <= end:  # four weights per pass over acc: a quarter of its loads/stores
            v0, v1, v2, v3 = val[k], val[k + 1], val[k + 2], val[k + 3]
            s0, s1, s2, s3 = xt[col[k]], xt[col[k + 1]], xt[col[k + 2]], xt[col[k + 3]]
            for j in range(nb):
                acc[j] += v0 * s0[j] + v1 * s1[j] + v2 * s2[j] + v3 * s3[j]
            k += 4
        while k < end:
            v = val[k]
            src = xt[col[k]]
            for j in range(nb):
                acc[j] += v * src[j]
            k += 1
        if relu:  # the fused activation, while the row is in L1
            for j in range(nb):
                if acc[j] < 0:
                    acc[j] = 0


@numba.njit(**_OPTS)
def spmm_serial(ptr, col, val, xt, bias, out, relu=False):
    """out[r, :] = bias[r] + sum_k val[k] * xt[col[k], :] over row r's entries (then
    max(., 0) when ``relu``)."""
    _spmm_rows(ptr, col, val, xt, bias, out, 0, out.shape[0], relu)


@numba.njit(parallel=True, **_PARALLEL_OPTS)
def spmm_parallel(ptr, col, val, xt, bias, out, relu=False):
    n = out.shape[0]
    chunks = numba.get_num_threads() * 4
    step = (n + chunks - 1) // chunks
    for c in prange(chunks):
        _spmm_rows(ptr, col, val, xt, bias, out, min(c * step, n), min((c + 1) * step, n), relu)


@numba.njit(**_OPTS)
def relu_grad(gt, out, result):
    """result = gt where the (ReLU) output ``out`` is positive, else 0: the gradient through
    a fused activation."""
    for r in range(gt.shape[0]):
        g, o, dst = gt[r], out[r], result[r]
        for j in range(g.shape[0]):
            dst[j] = g[j] if o[j] > 0 else 0


@numba.njit(**_OPTS)
def _spmm_t_owned(ptr, col, val, gt, out, c0, c1):
    """The rows ``c0:c1`` of out = W^T @ gt; every thread reads all of W, keeps its own rows."""
    nb = gt.shape[1]
    out[c0:c1] = 0
    for r in range(gt.shape[0]):
        g = gt[r]
        for k in range(ptr[r], ptr[r + 1]):
            c = col[k]
            if c0 <= c < c1:
                v = val[k]
                dst = out[c]
                for j in range(nb):
                    dst[j] += v * g[j]


@numba.njit(**_OPTS)
def spmm_t_serial(ptr, col, val, gt, out):
    """out = W^T @ gt: out[col[k], :] += val[k] * gt[r, :]."""
    _spmm_t_owned(ptr, col, val, gt, out, 0, out.shape[0])


@numba.njit(parallel=True, **_PARALLEL_OPTS)
def spmm_t_parallel(ptr, col, val, gt, out):
    """As `spmm_t_serial`, each thread owning a range of output rows (splitting the batch
    instead made both threads write the same cache lines at the same time: 5x slower)."""
    n = out.shape[0]
    parts = numba.get_num_threads()
    step = (n + parts - 1) // parts
    for p in prange(parts):
        _spmm_t_owned(ptr, col, val, gt, out, min(p * step, n), min((p + 1) * step, n))


@numba.njit(**_OPTS)
def _sddmm_rows(ptr, col, gt, xt, out, r0, r1):
    nb = xt.shape[1]
    for r in range(r0, r1):
        g = gt[r]
        k, end = ptr[r], ptr[r + 1]
        while k + 4 <= end:  # four dots per pass over g: a quarter of its loads
            x0, x1, x2, x3 = xt[col[k]], xt[col[k + 1]], xt[col[k + 2]], xt[col[k + 3]]
            g0 = g[0]
            a0, a1, a2, a3 = g0 * x0[0], g0 * x1[0], g0 * x2[0], g0 * x3[0]
            for j in range(1, nb):
                gj = g[j]
                a0 += gj * x0[j]
                a1 += gj * x1[j]
                a2 += gj * x2[j]
                a3 += gj * x3[j]
            out[k], out[k + 1], out[k + 2], out[k + 3] = a0, a1, a2, a3
            k += 4
        while k < end:
            x = xt[col[k]]
            s = g[0] * x[0]  # accumulate in the data's own precision (vectorises)
            for j in range(1, nb):
                s += g[j] * x[j]
            out[k] = s
            k += 1


@numba.njit(**_OPTS)
def sddmm_serial(ptr, col, gt, xt, out):
    """out[k] = gt[r, :] . xt[col[k], :] for every active weight k in row r."""
    _sddmm_rows(ptr, col, gt, xt, out, 0, gt.shape[0])


@numba.njit(parallel=True, **_PARALLEL_OPTS)
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


@numba.njit(**_OPTS)
def backward_serial(ptr, col, val, gt, xt, gw, gx, gb):
    """The whole backward of ``yt = W @ xt + b`` in one call: weight gradient ``gw`` (SDDMM),
    input gradient ``gx`` and bias gradient ``gb``; a zero-length output is skipped."""
    if gw.shape[0]:
        sddmm_serial(ptr, col, gt, xt, gw)
    if gx.shape[0]:
        spmm_t_serial(ptr, col, val, gt, gx)
    if gb.shape[0]:
        row_sums(gt, gb)


@numba.njit(**_PARALLEL_OPTS)  # calls parallel kernels: not cacheable either
def backward_parallel(ptr, col, val, gt, xt, gw, gx, gb):
    """`backward_serial` with the parallel products (one Python call, two parallel regions)."""
    if gw.shape[0]:
        sddmm_parallel(ptr, col, gt, xt, gw)
    if gx.shape[0]:
        spmm_t_parallel(ptr, col, val, gt, gx)
    if gb.shape[0]:
        row_sums(gt, gb)


@numba.njit(**_OPTS)
def _transpose_cols(x, out, c0, c1):
    """out[c0:c1] = x[:, c0:c1].T, eight rows of ``x`` per pass: each pass reads eight
    contiguous input rows and writes eight consecutive floats (a third of a cache line) of
    every output row (0.16 -> 0.11 ms for 100x3072, one thread, against 16-column blocks
    written one float at a time)."""
    nb = x.shape[0]
    b = 0
    while b + 8 <= nb:
        r0, r1, r2, r3 = x[b], x[b + 1], x[b + 2], x[b + 3]
        r4, r5, r6, r7 = x[b + 4], x[b + 5], x[b + 6], x[b + 7]
        for c in range(c0, c1):
            dst = out[c]
            dst[b], dst[b + 1], dst[b + 2], dst[b + 3] = r0[c], r1[c], r2[c], r3[c]
            dst[b + 4], dst[b + 5], dst[b + 6], dst[b + 7] = r4[c], r5[c], r6[c], r7[c]
        b += 8
    while b < nb:
        row = x[b]
        for c in range(c0, c1):
            out[c, b] = row[c]
        b += 1


@numba.njit(**_OPTS)
def transpose_serial(x, out):
    """out = x.T for a C-contiguous 2-d ``x`` (the batch-major input of a first layer made
    feature-major). For 100x3072 on 2 threads the parallel version takes 0.08 ms, a strided
    torch copy 0.21 ms."""
    _transpose_cols(x, out, 0, x.shape[1])


@numba.njit(parallel=True, **_PARALLEL_OPTS)
def transpose_parallel(x, out):
    m = x.shape[1]
    chunks = numba.get_num_threads() * 4
    step = ((m + chunks - 1) // chunks + 15) // 16 * 16
    for c in prange(chunks):
        _transpose_cols(x, out, min(c * step, m), min((c + 1) * step, m))


PARALLEL_WORK = 100_000
"""Multiply-adds below which the serial kernel runs: with OpenMP a parallel region starts in
a few microseconds, so splitting pays from about 1e5 (benchmarks/sparse_mlp.py, 2 threads:
5e4, 1e5 and 2e5 are within the noise of each other; 1e6 is 10-15% slower at 99%)."""


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
EMPTY_2D = {dtype: empty.reshape(0, 0) for dtype, empty in EMPTY.items()}
"""Zero-length stand-ins for the outputs `backward_serial` / `backward_parallel` skip."""


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


@numba.njit(parallel=True, **_PARALLEL_OPTS)
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


@numba.njit(parallel=True, **_PARALLEL_OPTS)
def gather_parallel(ptr, col, dense, out):
    n = dense.shape[0]
    chunks = numba.get_num_threads() * 4
    step = (n + chunks - 1) // chunks
    for c in prange(chunks):
        _gather_rows(ptr, col, dense, out, min(c * step, n), min((c + 1) * step, n))


# --- topology updates ------------------------------------------------------------------------
@numba.njit(**_OPTS)
def rebuild_csr(ptr, col, mask, kept, rows, cols):
    """New (indptr, indices) of the flat row-major boolean ``mask`` and, per new entry, the
    slot of the same weight in the old CSR (``ptr``, ``col``) when ``kept`` there, else -1."""
    new_ptr = np.zeros(rows + 1, np.int32)
    for r in range(rows):
        c = 0
        base = r * cols
        for j in range(cols):
            c += mask[base + j]
        new_ptr[r + 1] = new_ptr[r] + c
    nnz = new_ptr[rows]
    new_col = np.empty(nnz, np.int32)
    source = np.empty(nnz, np.int64)
    for r in range(rows):
        p, end, q, base = ptr[r], ptr[r + 1], new_ptr[r], r * cols
        for j in range(cols):
            if mask[base + j]:
                new_col[q] = j
                s = -1
                if kept[base + j]:
                    while p < end and col[p] < j:
                        p += 1
                    if p < end and col[p] == j:
                        s = p
                source[q] = s
                q += 1
    return new_ptr, new_col, source


@numba.njit(**_OPTS)
def mask_rows(ptr, col, out):
    """out (rows, cols) bool = True at the active positions, False elsewhere."""
    for r in range(out.shape[0]):
        row = out[r]
        row[:] = False
        for k in range(ptr[r], ptr[r + 1]):
            row[col[k]] = True


@numba.njit(**_OPTS)
def _merge_plan(ptr, keep, grown, rows, cols):
    """(new_ptr, gstart) of `merge_csr_serial`: each new row holds its kept weights and its grown
    ones; ``grown[gstart[r]:gstart[r + 1]]`` are row r's."""
    ng = grown.shape[0]
    new_ptr = np.empty(rows + 1, np.int32)
    gstart = np.empty(rows + 1, np.int64)
    new_ptr[0] = 0
    g = 0
    for r in range(rows):
        gstart[r] = g
        end = np.int64(r + 1) * cols
        while g < ng and grown[g] < end:
            g += 1
        kept = 0
        for s in range(ptr[r], ptr[r + 1]):
            kept += keep[s]
        new_ptr[r + 1] = new_ptr[r] + kept + (g - gstart[r])
    gstart[rows] = g
    return new_ptr, gstart


@numba.njit(**_OPTS)
def _merge_rows(ptr, col, keep, grown, gstart, new_ptr, new_col, source, cols, r0, r1, sink):
    """Rows ``r0:r1`` of `merge_csr_serial`. Each row is placed by ranks, not by a serial merge: a kept
    weight's new slot is its rank among the kept ones plus the number of grown columns below
    it (popcounts of a row bitmap), and vice versa. A dropped weight is written to slot
    ``sink`` (a slot of this range's own, past the end), which keeps the loop branch-free."""
    nw = (cols + 63) // 64
    gw, kw = np.zeros(nw, np.uint64), np.zeros(nw, np.uint64)
    gpre, kpre = np.zeros(nw, np.int64), np.zeros(nw, np.int64)
    one = np.uint64(1)
    for r in range(r0, r1):
        base = np.int64(r) * cols
        q0 = np.int64(new_ptr[r])
        gw[:] = 0
        kw[:] = 0
        for g in range(gstart[r], gstart[r + 1]):  # the row's grown columns as a bitmap
            c = grown[g] - base
            gw[c >> 6] |= one << np.uint64(c & 63)
        a = np.int64(0)
        for w in range(nw):
            gpre[w] = a
            a += np.int64(popcount(gw[w]))
        at = q0  # kept: new slot = row start + rank among the kept + grown columns below
        for s in range(ptr[r], ptr[r + 1]):
            c = np.int64(col[s])
            w = c >> 6
            bit = np.uint64(c & 63)
            k = keep[s]
            slot = at + gpre[w] + np.int64(popcount(gw[w] & ((one << bit) - one)))
            slot = slot if k else sink
            new_col[slot] = c
            source[slot] = s
            kw[w] |= np.uint64(k) << bit
            at += k
        b = np.int64(0)
        for w in range(nw):
            kpre[w] = b
            b += np.int64(popcount(kw[w]))
        at = q0  # grown: new slot = row start + rank among the grown + kept columns below
        for g in range(gstart[r], gstart[r + 1]):
            c = grown[g] - base
            w = c >> 6
            slot = at + kpre[w] + np.int64(popcount(kw[w] & ((one << np.uint64(c & 63)) - one)))
            new_col[slot] = c
            source[slot] = -1
            at += 1


_SINK_GAP = 16
"""Slots between two chunks' sinks (a cache line of int32), so threads never share one."""


@numba.njit(**_OPTS)
def merge_csr_serial(ptr, col, keep, grown, rows, cols):
    """New (indptr, indices) after a topology update and, per new entry, the slot (int32) of
    the same weight in the old CSR (``ptr``, ``col``), or -1 for a grown one. ``keep`` (bool
    per old slot) says which old weights stay, ``grown`` are the ascending flat row-major
    positions of the new ones (none of them kept). O(nnz + grown + rows·cols/64)."""
    new_ptr, gstart = _merge_plan(ptr, keep, grown, rows, cols)
    nnz = new_ptr[rows]
    new_col = np.empty(nnz + 1, np.int32)
    source = np.empty(nnz + 1, np.int32)
    _merge_rows(ptr, col, keep, grown, gstart, new_ptr, new_col, source, cols, 0, rows, nnz)
    return new_ptr, new_col[:nnz], source[:nnz]


@numba.njit(parallel=True, **_PARALLEL_OPTS)
def merge_csr_parallel(ptr, col, keep, grown, rows, cols):
    """`merge_csr_serial` with the rows split over threads (each with its own sink slot)."""
    new_ptr, gstart = _merge_plan(ptr, keep, grown, rows, cols)
    nnz = new_ptr[rows]
    chunks = numba.get_num_threads() * 4
    new_col = np.empty(nnz + chunks * _SINK_GAP, np.int32)
    source = np.empty(nnz + chunks * _SINK_GAP, np.int32)
    step = (rows + chunks - 1) // chunks
    for c in prange(chunks):
        _merge_rows(ptr, col, keep, grown, gstart, new_ptr, new_col, source, cols,
                    min(c * step, rows), min((c + 1) * step, rows), nnz + c * _SINK_GAP)
    return new_ptr, new_col[:nnz], source[:nnz]


@numba.njit(**_OPTS)
def _remap_range(olds, source, outs, i0, i1):
    for t in range(len(olds)):
        old, out = olds[t], outs[t]
        for i in range(i0, i1):
            s = source[i]
            ok = s >= 0
            v = old[s if ok else 0]
            out[i] = v if ok else 0


@numba.njit(**_OPTS)
def remap_serial(olds, source, outs):
    """outs[t][i] = olds[t][source[i]], or 0 where source[i] < 0 (a grown weight), without
    branches, for every array t of the tuples ``olds``/``outs`` (the values, their gradient
    and the optimizer state in one call; a thread moves all of them for its range)."""
    _remap_range(olds, source, outs, 0, source.shape[0])


@numba.njit(parallel=True, **_PARALLEL_OPTS)
def remap_parallel(olds, source, outs):
    n = source.shape[0]
    chunks = numba.get_num_threads() * 4
    step = (n + chunks - 1) // chunks
    for c in prange(chunks):
        _remap_range(olds, source, outs, min(c * step, n), min((c + 1) * step, n))


@numba.njit(**_OPTS)
def _flat_rows(ptr, col, cols, out, r0, r1):
    for r in range(r0, r1):
        base = np.int64(r) * cols
        for k in range(ptr[r], ptr[r + 1]):
            out[k] = base + col[k]


@numba.njit(**_OPTS)
def flat_positions_serial(ptr, col, cols, out):
    """out = the row-major flat position of every entry of the CSR (``ptr``, ``col``), ascending."""
    _flat_rows(ptr, col, cols, out, 0, ptr.shape[0] - 1)


@numba.njit(parallel=True, **_PARALLEL_OPTS)
def flat_positions_parallel(ptr, col, cols, out):
    rows = ptr.shape[0] - 1
    chunks = numba.get_num_threads() * 4
    step = (rows + chunks - 1) // chunks
    for c in prange(chunks):
        _flat_rows(ptr, col, cols, out, min(c * step, rows), min((c + 1) * step, rows))
