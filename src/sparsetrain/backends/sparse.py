"""Sparse backend: layers that store only their active weights (CSR) and compute with them.

A `SparseLinear`, `SparseConv1d` or `SparseConv2d` keeps ``values`` (the active weights,
the tensor the optimizer updates), ``indptr`` (row starts, one row per output) and
``indices`` (int32 column of each active weight); Conv layers can run as im2col + the same
sparse matrix product. Outputs of a 2-d Linear are returned as a transposed view, so the
next sparse layer reads its input in the feature-major layout its kernel wants without a
copy. A layer denser than its ``break_even`` (`BREAK_EVEN` for Linear, `CONV_BREAK_EVEN`
for convolutions) runs torch's dense Linear/convolution over its scattered weights (same
storage, same gradients), where the sparse kernels would lose.

Persistent state per active weight: 4 bytes value + 4 bytes column index (+ the optimizer's
state on ``values``: 4 bytes for SGD momentum, 8 for Adam), plus 4 bytes per output row.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sparsetrain.backends import kernels as K
from sparsetrain.backends.sparse_ops import DenseFromCSR, NumpyViews, SparseMatmul, sparse_product, uses_numba
from sparsetrain.errors import UserError
from sparsetrain.sparse.layers import tied_names
from sparsetrain.sparse.weights import BACKENDS, SparseWeight

BREAK_EVEN = 0.25
"""Density above which a Linear layer runs dense kernels at a batch of up to 100 (measured by
benchmarks/sparse_mlp.py with the sparsetrain_kernels / sparsetrain_densepath variants: the
kernels win at density 0.2 and lose at 0.3, per layer of the benchmark MLP); larger batches
scale it down (`batch_scale`)."""

REFERENCE_BATCH = 100
MIN_BATCH_SCALE = 0.4


def batch_scale(columns: int) -> float:
    """The factor on a layer's ``break_even`` for a call with ``columns`` input vectors (batch
    size, times positions for 3-d inputs): 1 up to `REFERENCE_BATCH`, then sqrt(100 / columns),
    at least `MIN_BATCH_SCALE`. The kernels stream one input vector per active weight, and
    those vectors stop fitting in the L2 cache as the batch grows, while torch's dense product
    only gets more efficient. Measured break-even densities of the benchmark MLP
    (``benchmarks/sparse_mlp.py --batch B --variants masked sparsetrain_kernels
    sparsetrain_densepath``): 0.25 at batch 64-100, 0.17 at 256, 0.125 at 512, 0.11 at 1024,
    0.105 at 2048; the rule gives 0.25, 0.16, 0.11, 0.10, 0.10 (dense where unsure)."""
    return max(MIN_BATCH_SCALE, min(1.0, math.sqrt(REFERENCE_BATCH / max(columns, 1))))


CONV_BREAK_EVEN = 0.0
"""Convolutions run torch's dense convolution at every density unless a layer's ``break_even``
is raised: im2col + the sparse product lost to masked PyTorch at every density measured,
from 0.5 down to 0.001 (benchmarks/sparse_cnn.py: 3-6x slower), because unfolding the input
and folding its gradient back cost more than the dense convolution itself. Storage and
optimizer state stay sparse either way."""


class SparseLayer:
    """Storage and the sparse product shared by the sparse Linear and Conv layers."""

    values: nn.Parameter
    indptr: torch.Tensor
    indices: torch.Tensor
    weight_shape: tuple[int, ...]

    def _init_storage(self, weight: torch.Tensor, mask: torch.Tensor, bias: nn.Parameter | None) -> None:
        self.weight_shape = tuple(weight.shape)
        self.rows = weight.shape[0]
        self.cols = math.prod(weight.shape[1:])
        flat = torch.nonzero(mask.reshape(-1)).reshape(-1)
        self.values = nn.Parameter(weight.detach().reshape(-1)[flat].clone(),
                                   requires_grad=weight.requires_grad)
        self.register_buffer("indptr", torch.zeros(self.rows + 1, dtype=torch.int32, device=weight.device))
        self.register_buffer("indices", torch.zeros(0, dtype=torch.int32, device=weight.device))
        self.bias = bias
        self.break_even = BREAK_EVEN
        self.capture = False
        self.activation: str | None = None  # "relu" once `fuse_activations` folded one in
        self.captured: Any = None
        self._views = NumpyViews()
        self._no_bias: torch.Tensor | None = None
        self._inference_weight: tuple[tuple, torch.Tensor] | None = None  # see `dense_weight`
        self._set_structure(flat)

    # --- structure ------------------------------------------------------------------------
    @property
    def nnz(self) -> int:
        return self.values.numel()

    @property
    def density(self) -> float:
        return self.nnz / (self.rows * self.cols)

    def runs_dense(self, columns: int) -> bool:
        """Whether a call with ``columns`` input vectors runs dense kernels: density above
        ``break_even`` scaled by `batch_scale` (``break_even = math.inf`` forces the sparse
        kernels, 0 the dense ones)."""
        return self.density > self.break_even * batch_scale(columns)

    def flat_index(self) -> torch.Tensor:
        """Row-major flat position of every active weight, ascending (int64)."""
        counts = self.indptr[1:] - self.indptr[:-1]
        rows = torch.repeat_interleave(torch.arange(self.rows, device=self.indptr.device), counts.long())
        return rows * self.cols + self.indices.long()

    def _set_structure(self, flat: torch.Tensor) -> None:
        counts = torch.bincount(flat // self.cols, minlength=self.rows)
        self.indptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).to(torch.int32)
        self.indices = (flat % self.cols).to(torch.int32)
        self._mask: torch.Tensor | None = None

    @property
    def weight(self) -> torch.Tensor:
        """The weight as a dense tensor (zeros where inactive); a copy, for reading."""
        if uses_numba(self.values):
            dense = self.values.new_empty(self.rows, self.cols)
            ptr, col, val, _ = self.numpy_views(self.values.detach(), self.bias)
            K.scatter_serial(ptr, col, val, dense.numpy())
            return dense.view(self.weight_shape)
        dense = self.values.new_zeros(self.rows * self.cols)
        dense[self.flat_index()] = self.values.detach()
        return dense.view(self.weight_shape)

    @property
    def weight_mask(self) -> torch.Tensor:
        """Boolean mask of the active weights (built once per structure; do not modify)."""
        if self._mask is None or self._mask.device != self.values.device:
            if self.values.device.type == "cpu":
                mask = torch.empty(self.rows, self.cols, dtype=torch.bool)
                K.mask_rows(self.indptr.numpy(), self.indices.numpy(), mask.numpy())
            else:
                mask = torch.zeros(self.rows * self.cols, dtype=torch.bool, device=self.values.device)
                mask[self.flat_index()] = True
            self._mask = mask.view(self.weight_shape)
        return self._mask

    @torch.no_grad()
    def restructure(self, mask: torch.Tensor, kept: torch.Tensor,
                    optimizer: torch.optim.Optimizer | None = None) -> None:
        """Make ``mask`` the active set in one rebuild. Weights in ``kept`` (a subset of the
        active ones) keep their value, gradient and optimizer state; all others start at 0."""
        device = self.values.device
        if _rebuilds_on_cpu(device):  # one numba pass over the mask: new CSR + where each survivor was
            indptr, indices, slots = K.rebuild_csr(
                self.indptr.numpy(), self.indices.numpy(), mask.reshape(-1).bool().contiguous().numpy(),
                kept.reshape(-1).bool().contiguous().numpy(), self.rows, self.cols)
            self._install_values(_slot_remap(slots), optimizer)
            self._install_structure(torch.from_numpy(indptr), torch.from_numpy(indices))
            return
        new_flat = torch.nonzero(mask.reshape(-1).to(device)).reshape(-1)
        old_flat = self.flat_index()
        valid = kept.reshape(-1).to(device)[new_flat]
        source = torch.searchsorted(old_flat, new_flat).clamp_(max=max(old_flat.numel() - 1, 0))
        target = torch.nonzero(valid).reshape(-1)
        self._install_values(_index_remap(source[target], target, new_flat.numel()), optimizer)
        self._install_structure(new_flat=new_flat)

    @torch.no_grad()
    def rewire_flat(self, keep: torch.Tensor, grown: torch.Tensor,
                    optimizer: torch.optim.Optimizer | None = None) -> None:
        """One topology update given ``keep`` (bool per active weight, in CSR order) and ``grown``
        (ascending flat positions of new weights, none of them kept): one merge of each CSR row
        with its grown entries, O(nnz + grown + rows), never a pass over the dense shape. Kept
        weights keep their value, gradient and optimizer state in their new slots; grown ones
        start at 0 with zero state."""
        device = self.values.device
        if _rebuilds_on_cpu(device):
            merge = K.pick((self.nnz + grown.numel()) * K.COPY_WEIGHT, K.merge_csr_serial, K.merge_csr_parallel)
            indptr, indices, slots = merge(
                self.indptr.numpy(), self.indices.numpy(), keep.to(torch.bool).contiguous().numpy(),
                grown.to(torch.int64).contiguous().numpy(), self.rows, self.cols)
            self._install_values(_slot_remap(slots), optimizer)
            self._install_structure(torch.from_numpy(indptr), torch.from_numpy(indices))
            return
        old_flat = self.flat_index()
        keep, grown = keep.to(device), grown.to(device)
        kept_slots = torch.nonzero(keep).reshape(-1)
        new_flat, order = torch.sort(torch.cat([old_flat[kept_slots], grown]))
        source = torch.cat([kept_slots, torch.full_like(grown, -1)])[order]
        target = torch.nonzero(source >= 0).reshape(-1)
        self._install_values(_index_remap(source[target], target, new_flat.numel()), optimizer)
        self._install_structure(new_flat=new_flat)

    def _install_values(self, remap, optimizer: torch.optim.Optimizer | None) -> None:  # noqa: ANN001
        """Pass ``values``, their gradient and every per-weight optimizer state tensor through
        ``remap`` (old slots -> new slots); a new Parameter when the count changes."""
        param = self.values
        state = (optimizer.state.get(param) if optimizer is not None else None) or {}
        keys = [key for key, value in state.items()
                if isinstance(value, torch.Tensor) and value.shape == param.shape]
        moved = remap([param.data] + [state[key] for key in keys]
                      + ([] if param.grad is None else [param.grad]))
        data, grad = moved[0], (moved[-1] if param.grad is not None else None)
        moved_state = dict(zip(keys, moved[1:1 + len(keys)]))
        if data.numel() == param.numel():  # same count (SET, RigL): same Parameter object
            state.update(moved_state)
            param.grad = grad
            param.data = data
        else:  # a new count (MEST): a new Parameter, since autograd caches the old shape
            new = nn.Parameter(data, requires_grad=param.requires_grad)
            new.grad = grad
            _swap_parameter(optimizer, param, new, lambda t: t)
            if moved_state:
                optimizer.state[new].update(moved_state)
            self.values = new

    def _install_structure(self, indptr: torch.Tensor | None = None, indices: torch.Tensor | None = None,
                           new_flat: torch.Tensor | None = None) -> None:
        """The new CSR, given as (indptr, indices) or as the ascending flat positions."""
        self._inference_weight = None
        if new_flat is None:
            self.indptr, self.indices = indptr, indices
            self._mask = None
        else:
            self._set_structure(new_flat)
        self.captured = None

    # --- compute --------------------------------------------------------------------------
    def matmul(self, xt: torch.Tensor) -> torch.Tensor:
        """``W @ xt + bias[:, None]`` by the sparse kernels, for a feature-major input ``xt`` of
        shape (cols, batch). (Layers above break-even compute with `dense_weight` instead.)"""
        if torch.is_grad_enabled() and (xt.requires_grad or self.values.requires_grad
                                        or (self.bias is not None and self.bias.requires_grad)):
            return SparseMatmul.apply(xt, self.values, self.bias, self)
        return sparse_product(self, xt, self.values, self.bias)  # inference: no autograd node

    def dense_weight(self) -> torch.Tensor:
        """The weight scattered into a dense (rows, cols) matrix, differentiable with respect to
        ``values``: the dense fallback computes with it. Without autograd (inference) the
        matrix is kept and reused until ``values`` or the structure change (a new tensor, or
        an in-place write, which bumps its version), so evaluating a trained model scatters
        once, not once per batch; a forward with autograd drops it again."""
        values = self.values
        if torch.is_grad_enabled() and values.requires_grad:
            self._inference_weight = None
            return DenseFromCSR.apply(values, self)
        # structure changes drop the matrix themselves (`_install_structure`, `_load_from_state_dict`)
        key = (values.data_ptr(), values._version, values.dtype, values.device)
        if self._inference_weight is None or self._inference_weight[0] != key:
            self._inference_weight = None  # free the old matrix before making the new one
            self._inference_weight = (key, DenseFromCSR.apply(values.detach(), self))
        return self._inference_weight[1]

    def numpy_views(self, values: torch.Tensor, bias: torch.Tensor | None) -> tuple:
        """(indptr, indices, values, bias) as numpy arrays for the kernels (cached)."""
        if bias is None:
            if self._no_bias is None or self._no_bias.dtype != values.dtype:
                self._no_bias = values.new_zeros(0)
            bias = self._no_bias
        return self._views.get(self.indptr, self.indices, values, bias)

    def dense_grad(self) -> torch.Tensor | None:
        """Gradient at every position: from the captured backward if any, else the active
        gradient scattered (zeros elsewhere); None before the first backward."""
        captured = self.captured
        if isinstance(captured, torch.Tensor):  # the dense fallback's weight gradient
            return captured.reshape(self.weight_shape)
        if isinstance(captured, tuple):
            xt, gyt = captured
            return (gyt @ xt.t()).reshape(self.weight_shape)
        grad = self.values.grad
        if grad is None:
            return None
        dense = grad.new_zeros(self.rows * self.cols)
        dense[self.flat_index()] = grad
        return dense.view(self.weight_shape)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        # checked before anything is copied: the numba kernels trust the CSR structure
        check_csr(prefix.rstrip(".") or "the model", self.rows, self.cols, state_dict.get(prefix + "values"),
                  state_dict.get(prefix + "indptr"), state_dict.get(prefix + "indices"))
        # the number of active weights may differ from the current one (e.g. MEST)
        values, indices = state_dict.get(prefix + "values"), state_dict.get(prefix + "indices")
        if values is not None and values.shape != self.values.shape:
            self.values.data = self.values.data.new_empty(values.shape)
        if indices is not None and indices.shape != self.indices.shape:
            self.indices = self.indices.new_empty(indices.shape)
        self._mask = self._inference_weight = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def check_csr(layer: str, rows: int, cols: int, values: Any, indptr: Any, indices: Any) -> None:
    """Raise a UserError naming ``layer`` unless (values, indptr, indices) is the CSR of a
    (rows, cols) weight as the sparse layers write it: 1-d floating ``values``, int32
    ``indptr`` of rows + 1 entries from 0 rising to nnz, int32 ``indices`` as many as the values,
    each in [0, cols) and strictly increasing within its row. The numba kernels index memory
    with these numbers unchecked, so a damaged file must never reach them."""
    parts = {"values": values, "indptr": indptr, "indices": indices}
    missing = [k for k, v in parts.items() if v is None]
    if missing:
        raise UserError(f"sparse layer {layer} has no {missing[0]}")
    for key, value in parts.items():
        if not isinstance(value, torch.Tensor):
            raise UserError(f"sparse layer {layer}: {key} is a {type(value).__name__}, not a tensor")
        if value.dim() != 1:
            raise UserError(f"sparse layer {layer}: {key} has shape {tuple(value.shape)}; it must be 1-d")
    if not values.is_floating_point():
        raise UserError(f"sparse layer {layer}: values have dtype {values.dtype}; a floating type is needed")
    for key in ("indptr", "indices"):
        if parts[key].dtype != torch.int32:
            raise UserError(f"sparse layer {layer}: {key} have dtype {parts[key].dtype}; torch.int32 is needed")
    nnz = values.numel()
    if indices.numel() != nnz:
        raise UserError(f"sparse layer {layer}: {indices.numel()} indices for {nnz} values; they must match")
    if indptr.numel() != rows + 1:
        raise UserError(f"sparse layer {layer}: indptr has {indptr.numel()} entries; the layer has "
                        f"{rows} rows, so {rows + 1} are needed")
    ptr = indptr.long()
    if int(ptr[0]) != 0 or int(ptr[-1]) != nnz or bool((ptr[1:] < ptr[:-1]).any()):
        raise UserError(f"sparse layer {layer}: indptr must rise from 0 to {nnz} (the number of values) "
                        "without decreasing")
    if nnz:
        low, high = int(indices.min()), int(indices.max())
        if low < 0 or high >= cols:
            bad = low if low < 0 else high
            raise UserError(f"sparse layer {layer}: column index {bad} is outside 0..{cols - 1}")
        row_start = torch.zeros(nnz, dtype=torch.bool, device=indices.device)
        row_start[ptr[:-1][ptr[:-1] < nnz]] = True
        rising = indices[1:] > indices[:-1]
        if not bool((rising | row_start[1:]).all()):
            raise UserError(f"sparse layer {layer}: column indices must rise strictly within each row")


def _rebuilds_on_cpu(device: torch.device) -> bool:
    """Whether a topology rebuild runs the numba kernels (else torch ops, any device)."""
    return device.type == "cpu"


def _slot_remap(slots):  # noqa: ANN001, ANN202
    """remap(tensors): for each tensor t, the tensor whose entry i is ``t[slots[i]]``, or 0
    where ``slots[i] < 0`` (a grown weight); ``slots`` is a numpy array from a CSR rebuild.
    Tensors of one numba dtype move in one kernel pass."""
    def remap(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        if all(uses_numba(t) and t.dtype == tensors[0].dtype for t in tensors):
            outs = [t.new_empty(len(slots)) for t in tensors]
            K.pick(len(slots) * len(tensors) * K.COPY_WEIGHT, K.remap_serial, K.remap_parallel)(
                tuple(t.detach().numpy() for t in tensors), slots, tuple(o.numpy() for o in outs))
            return outs
        index = torch.from_numpy(slots).long()
        return _index_remap(index[index >= 0], torch.nonzero(index >= 0).reshape(-1), len(slots))(tensors)
    return remap


def _index_remap(source: torch.Tensor, target: torch.Tensor, n: int):  # noqa: ANN202
    """remap(tensors): for each tensor t, a length-``n`` tensor of zeros with ``t[source]``
    written at ``target``."""
    def remap(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        outs = []
        for t in tensors:
            out = t.new_zeros(n)
            out[target] = t[source]
            outs.append(out)
        return outs
    return remap


class SparseLinear(SparseLayer, nn.Linear):
    """``nn.Linear`` storing only its active weights."""

    def __init__(self, in_features: int, out_features: int, weight: torch.Tensor, mask: torch.Tensor,
                 bias: nn.Parameter | None) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = in_features, out_features
        self._init_storage(weight, mask, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.runs_dense(x.numel() // max(self.in_features, 1)):  # as nn.Linear, in x's own layout
            out = F.linear(x, self.dense_weight(), self.bias)
            return F.relu(out) if self.activation == "relu" else out
        if x.dim() == 2:  # (batch, in) -> transposed view in, transposed view out: no copies
            return self.matmul(x.t()).t()
        lead = x.shape[:-1]
        return self.matmul(x.reshape(-1, self.in_features).t()).t().reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"nnz={self.nnz}, density={self.density:.4f}, bias={self.bias is not None}" \
               + (f", activation={self.activation}" if self.activation else "")


class FusedActivation(nn.Module):
    """Stands where a ReLU was after `fuse_activations` folded it into the sparse layer before
    it (which now applies it); passes its input through. `unfuse_activations` puts the ReLU
    back."""

    def __init__(self, original: nn.Module) -> None:
        super().__init__()
        self.inplace = getattr(original, "inplace", False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def extra_repr(self) -> str:
        return "fused into the preceding sparse layer"


def fuse_activations(model: nn.Module) -> list[str]:
    """Fold every ``nn.ReLU`` that directly follows a `SparseLinear` in an ``nn.Sequential``
    into that layer: its kernel applies the ReLU while the output row is still in cache and
    takes the gradient back through it, which saves two torch operations and an autograd node
    per layer and step (8-10% of a training step of the 3072-1024-512-10 MLP at 99-99.9%
    sparsity, `benchmarks/sparse_mlp.py`). The ReLU module is replaced by a `FusedActivation`
    (so forward hooks on it no longer fire); state dicts do not change. Returns the names of
    the layers that took an activation. `to_masked` and `unfuse_activations` undo it."""
    fused = []
    for name, sequential, layer_name, layer, act_name, act in _adjacent_in_sequentials(model):
        if isinstance(layer, SparseLinear) and layer.activation is None and type(act) is nn.ReLU:
            layer.activation = "relu"
            setattr(sequential, act_name, FusedActivation(act))
            fused.append(f"{name}.{layer_name}" if name else layer_name)
    return fused


def unfuse_activations(model: nn.Module) -> None:
    """Undo `fuse_activations`: each `FusedActivation` becomes an ``nn.ReLU`` again and its
    sparse layer computes without activation."""
    for _, sequential, _, layer, act_name, act in _adjacent_in_sequentials(model):
        if isinstance(act, FusedActivation) and isinstance(layer, SparseLinear):
            layer.activation = None
            setattr(sequential, act_name, nn.ReLU(inplace=act.inplace))


def _adjacent_in_sequentials(model: nn.Module):  # noqa: ANN202
    """(sequential's name, sequential, name, module, next name, next module) for every two
    consecutive children of every ``nn.Sequential`` in ``model`` (listed before any change)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (a_name, a), (b_name, b) in zip(children, children[1:]):
                yield name, module, a_name, a, b_name, b


class _SparseConv(SparseLayer):
    """groups=1, zero padding. Below its ``break_even`` (`CONV_BREAK_EVEN`: never, by default)
    im2col (``F.unfold``) followed by the sparse product, else torch's dense convolution."""

    spatial: int
    functional: Any  # F.conv1d / F.conv2d: the dense fallback's convolution

    def __init__(self, conv: nn.Module, weight: torch.Tensor, mask: torch.Tensor) -> None:
        nn.Module.__init__(self)
        for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                     "groups", "padding_mode", "transposed", "output_padding"):
            setattr(self, attr, getattr(conv, attr))
        self._init_storage(weight, mask, conv.bias)
        self.break_even = CONV_BREAK_EVEN

    def _unfold_args(self, x: torch.Tensor) -> tuple[torch.Tensor, dict]:
        pad = (0,) * self.spatial if self.padding == "valid" else self.padding
        if self.padding == "same":
            pads = []
            for k, d in zip(reversed(self.kernel_size), reversed(self.dilation)):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]
            x, pad = F.pad(x, pads), (0,) * self.spatial
        return x, dict(kernel_size=self.kernel_size, dilation=self.dilation, padding=pad, stride=self.stride)

    def _columns(self, x: torch.Tensor) -> int:
        """Input vectors of the sparse product for input ``x``: samples times input positions
        (an upper bound of the output positions, which is all `runs_dense` needs)."""
        return x.numel() // max(self.in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.runs_dense(self._columns(x)):  # torch's own convolution with the scattered weight
            weight = self.dense_weight().view(self.weight_shape)
            return self.functional(x, weight, self.bias, self.stride, self.padding, self.dilation)
        return self._sparse_forward(x)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", nnz={self.nnz}, density={self.density:.4f}"

    def _conv(self, x4: torch.Tensor, args: dict) -> torch.Tensor:
        n = x4.shape[0]
        cols = F.unfold(x4, **args)  # (n, C*k*k, L)
        positions = cols.shape[2]
        xt = cols.transpose(0, 1).reshape(self.cols, n * positions)
        yt = self.matmul(xt)  # (out, n*L)
        return yt.view(self.rows, n, positions).transpose(0, 1)  # (n, out, L)


class SparseConv2d(_SparseConv, nn.Conv2d):
    """``nn.Conv2d`` (groups=1, zero padding) storing only its active weights."""

    spatial = 2
    functional = staticmethod(F.conv2d)

    def _sparse_forward(self, x: torch.Tensor) -> torch.Tensor:
        x, args = self._unfold_args(x)
        h, w = x.shape[-2:]
        ho = (h + 2 * args["padding"][0] - self.dilation[0] * (self.kernel_size[0] - 1) - 1) // self.stride[0] + 1
        wo = (w + 2 * args["padding"][1] - self.dilation[1] * (self.kernel_size[1] - 1) - 1) // self.stride[1] + 1
        return self._conv(x, args).reshape(x.shape[0], self.rows, ho, wo)


class SparseConv1d(_SparseConv, nn.Conv1d):
    """``nn.Conv1d`` (groups=1, zero padding) storing only its active weights."""

    spatial = 1
    functional = staticmethod(F.conv1d)

    def _sparse_forward(self, x: torch.Tensor) -> torch.Tensor:
        x, args = self._unfold_args(x)
        args = {k: (1, *v) if k != "padding" else (0, *v) for k, v in args.items()}
        return self._conv(x.unsqueeze(2), args)


SPARSE_LAYERS = (SparseLinear, SparseConv1d, SparseConv2d)


# --- conversion ---------------------------------------------------------------------------
def _supported(module: nn.Module, name: str) -> None:
    """Raise a UserError unless the sparse backend has a layer for ``module``."""
    if isinstance(module, nn.Linear):
        return
    if isinstance(module, (nn.Conv1d, nn.Conv2d)) and not isinstance(module, nn.Conv3d):
        if module.groups != 1 or module.padding_mode != "zeros":
            raise UserError(f"layer {name!r}: the sparse backend supports convolutions with groups=1 "
                            "and padding_mode='zeros' only; exclude it (exclude=...) or use backend=masked")
        return
    raise UserError(f"layer {name!r} ({type(module).__name__}): the sparse backend supports Linear, "
                    "Conv1d and Conv2d; exclude it (exclude=...) or use backend=masked")


def _sparse_module(module: nn.Module, name: str, mask: torch.Tensor) -> SparseLayer:
    _supported(module, name)
    weight = module.weight
    if isinstance(module, nn.Linear):
        return SparseLinear(module.in_features, module.out_features, weight, mask, module.bias)
    cls = SparseConv2d if isinstance(module, nn.Conv2d) else SparseConv1d
    return cls(module, weight, mask)


def _replace(model: nn.Module, module_name: str, new: nn.Module) -> None:
    parent_name, _, child = module_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _swap_parameter(optimizer: torch.optim.Optimizer | None, old: torch.Tensor, new: torch.Tensor,
                    convert) -> None:
    """Put ``new`` where ``old`` was in the optimizer, with its state passed through ``convert``."""
    if optimizer is None:
        return
    for group in optimizer.param_groups:
        for i, p in enumerate(group["params"]):
            if p is old:
                group["params"][i] = new
    state = optimizer.state.pop(old, None)
    if state is not None:
        optimizer.state[new] = {k: convert(v) if isinstance(v, torch.Tensor) and v.shape == old.shape else v
                                for k, v in state.items()}


def _module_names(model: nn.Module, names: list[str] | None, kinds: tuple[type, ...]) -> list[str]:
    if names is None:
        return [n for n, m in model.named_modules() if isinstance(m, kinds) and n]
    return [n[: -len(".weight")] if n.endswith(".weight") else n for n in names]


@torch.no_grad()
def to_sparse(model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
              names: list[str] | None = None) -> list[str]:
    """Replace Linear/Conv layers of ``model`` in place by sparse ones; returns their names.

    ``names`` are module or ``<module>.weight`` names (default: every layer carrying a
    ``weight_mask`` buffer, i.e. a masked-backend model). The active set is the layer's
    ``weight_mask`` if it has one, else every weight. The optimizer's parameter and its
    state (momentum, Adam moments) move to the sparse ``values``, position by position.
    """
    if names is None:
        names = [n for n, m in model.named_modules()
                 if n and not isinstance(m, SparseLayer) and getattr(m, "weight_mask", None) is not None]
    else:
        names = _module_names(model, names, ())
    for module_name in names:
        module = model.get_submodule(module_name)
        if isinstance(module, SparseLayer):
            continue
        mask = getattr(module, "weight_mask", None)
        mask = torch.ones_like(module.weight, dtype=torch.bool) if mask is None else mask.bool()
        new = _sparse_module(module, module_name, mask)
        flat = torch.nonzero(mask.reshape(-1)).reshape(-1)
        _swap_parameter(optimizer, module.weight, new.values, lambda t: t.reshape(-1)[flat].clone())
        _replace(model, module_name, new)
    return names


@torch.no_grad()
def to_masked(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> list[str]:
    """Turn every sparse layer back into a dense Linear/Conv with a ``weight_mask`` buffer
    (the masked backend's format), moving optimizer state back; returns the layer names."""
    unfuse_activations(model)
    names = [n for n, m in model.named_modules() if isinstance(m, SparseLayer)]
    for module_name in names:
        sparse = model.get_submodule(module_name)
        flat = sparse.flat_index()
        if isinstance(sparse, SparseLinear):
            dense = nn.Linear(sparse.in_features, sparse.out_features, bias=False)
        else:
            cls = nn.Conv2d if isinstance(sparse, SparseConv2d) else nn.Conv1d
            dense = cls(sparse.in_channels, sparse.out_channels, sparse.kernel_size, stride=sparse.stride,
                        padding=sparse.padding, dilation=sparse.dilation, bias=False)
        dense = dense.to(device=sparse.values.device, dtype=sparse.values.dtype)
        dense.weight = nn.Parameter(sparse.weight.clone(), requires_grad=sparse.values.requires_grad)
        dense.bias = sparse.bias
        dense.register_buffer("weight_mask", sparse.weight_mask)

        def scatter(t: torch.Tensor, shape=sparse.weight_shape, flat=flat) -> torch.Tensor:
            out = t.new_zeros(math.prod(shape))
            out[flat] = t
            return out.view(shape)

        _swap_parameter(optimizer, sparse.values, dense.weight, scatter)
        _replace(model, module_name, dense)
    return names


READ_CHILD_WEIGHTS = (nn.MultiheadAttention,)
"""Modules that read a child layer's ``weight`` directly instead of calling the layer (attention's
``out_proj``): the sparse backend cannot replace those children."""


def _check_replaceable(model: nn.Module, name: str, module_name: str) -> None:
    """Refuse, in one sentence, a layer whose replacement would freeze it or break a tie."""
    parent_name, _, _ = module_name.rpartition(".")
    parent = model.get_submodule(parent_name) if module_name else None
    if isinstance(parent, READ_CHILD_WEIGHTS):
        raise UserError(f"backend=sparse cannot hold {name!r}: its {type(parent).__name__} reads the weight "
                        "directly instead of calling the layer, so it would get no gradient; use "
                        "backend=masked or exclude it (exclude=('*out_proj*',))")
    others = tied_names(model).get(name)
    if others:
        raise UserError(f"backend=sparse cannot hold {name!r}: it is tied to {', '.join(others)} and replacing "
                        "the layer would break the tie; use backend=masked or keep it dense (tied=dense)")


# --- the SparseWeight protocol --------------------------------------------------------------
class SparseBackendWeight(SparseWeight):
    """A layer's weight on the sparse backend; converts the layer (and the optimizer's
    parameter) to sparse storage when attached."""

    takes_optimizer = True

    def __init__(self, model: nn.Module, name: str, optimizer: torch.optim.Optimizer | None = None) -> None:
        self.name = name
        module_name = self.check(model, name)
        module = model.get_submodule(module_name) if module_name else model
        if not isinstance(module, SparseLayer):
            to_sparse(model, optimizer, [module_name])
            module = model.get_submodule(module_name)
        self.module: SparseLayer = module
        self.optimizer = optimizer

    @staticmethod
    def check(model: nn.Module, name: str) -> str:
        """Raise a UserError if the sparse backend cannot hold weight ``name``; else its layer's name."""
        module_name = name[: -len(".weight")] if name.endswith(".weight") else ""
        if not (name.endswith(".weight") or name == "weight"):
            raise UserError(f"the sparse backend sparsifies the weight of Linear, Conv1d and Conv2d layers only, "
                            f"not {name!r}; use backend=masked or exclude it")
        _check_replaceable(model, name, module_name)
        module = model.get_submodule(module_name) if module_name else model
        if not isinstance(module, SparseLayer):
            _supported(module, module_name)
        return module_name

    @property
    def mask(self) -> torch.Tensor:
        return self.module.weight_mask

    @property
    def values(self) -> torch.Tensor:
        return self.module.weight

    @property
    def parameter(self) -> torch.Tensor:
        return self.module.values

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self.module.weight_shape)

    @property
    def numel(self) -> int:
        return self.module.rows * self.module.cols

    @property
    def active(self) -> int:
        return self.module.nnz

    def dense_grad(self) -> torch.Tensor | None:
        return self.module.dense_grad()

    def set_mask(self, mask: torch.Tensor) -> None:
        mask = mask.bool()
        self.module.restructure(mask, mask & self.mask, self.optimizer)

    def mask_grad(self) -> None:
        """Nothing to do: only active weights have a gradient."""

    def apply_mask(self) -> None:
        """Nothing to do: inactive weights are not stored."""

    def rewire(self, kept: torch.Tensor, grown: torch.Tensor, optimizer: torch.optim.Optimizer | None) -> None:
        self.module.restructure(kept | grown, kept, optimizer)

    def active_index(self) -> torch.Tensor:
        module = self.module
        if module.indptr.device.type == "cpu":
            out = torch.empty(module.nnz, dtype=torch.int64)
            K.pick(module.nnz * K.COPY_WEIGHT, K.flat_positions_serial, K.flat_positions_parallel)(
                module.indptr.numpy(), module.indices.numpy(), module.cols, out.numpy())
            return out
        return module.flat_index()

    def active_values(self) -> torch.Tensor:
        return self.module.values.detach()

    def rewire_flat(self, keep: torch.Tensor, grown: torch.Tensor,
                    optimizer: torch.optim.Optimizer | None) -> None:
        self.module.rewire_flat(keep, grown, optimizer)

    def densify(self, twin: nn.Module) -> None:
        if isinstance(twin.get_submodule(self.name[: -len(".weight")]), SparseLayer):
            to_masked(twin)  # every sparse layer of the copy at once

    @torch.no_grad()
    def load_dense(self, tensor: torch.Tensor) -> None:
        values = self.module.values
        values.copy_(tensor.to(device=values.device, dtype=values.dtype).reshape(-1)[self.module.flat_index()])

    @staticmethod
    def dense_state(state: dict[str, torch.Tensor], shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
        """Each saved sparse layer (``<m>.values/indices/indptr``) with ``<m>.weight`` in ``shapes``
        as the dense ``<m>.weight`` and ``<m>.weight_mask`` of a masked layer."""
        out = dict(state)
        for key in [k for k in state if k.endswith("indptr")]:
            prefix = key[: -len("indptr")]
            shape = shapes.get(prefix + "weight")
            if shape is None or prefix + "values" not in state or prefix + "indices" not in state:
                continue
            indptr, indices, values = (out.pop(prefix + k) for k in ("indptr", "indices", "values"))
            rows, cols = shape[0], math.prod(shape[1:])
            counts = (indptr[1:] - indptr[:-1]).long()
            flat = torch.repeat_interleave(torch.arange(rows, device=indptr.device), counts) * cols + indices.long()
            dense, mask = values.new_zeros(rows * cols), torch.zeros(rows * cols, dtype=torch.bool)
            dense[flat], mask[flat] = values, True
            out[prefix + "weight"], out[prefix + "weight_mask"] = dense.view(shape), mask.view(shape)
        return out

    def want_dense_grad(self, flag: bool) -> None:
        self.module.capture = flag
        if not flag:
            self.module.captured = None

    fuse_activations = staticmethod(fuse_activations)  # the backend's hook for fuse_activations=True


BACKENDS.register("sparse", help="only active weights stored (CSR) with sparse kernels; Linear, Conv1d, "
                                 "Conv2d; dense kernels above a break-even density")(SparseBackendWeight)
