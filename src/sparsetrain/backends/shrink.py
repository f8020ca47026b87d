"""Physical removal of dead channels: a channel-masked CNN becomes a smaller dense model.

    small = st.shrink(model, torch.randn(1, 3, 32, 32))   # or st.shrink(model, (3, 32, 32))
    print(small.shrink_summary)                          # per layer: channels before -> after

A channel is *dead* when its output is exactly zero whatever the input: every layer that
produces it holds zeros there (a Conv/Linear filter that is all zero or masked, and its bias),
and every batch norm on it has a zero affine weight and bias (otherwise ``relu(beta)`` leaks a
constant into the next layer, and removing the channel would change the outputs). Removing a
dead channel removes the filter, its batch-norm entries and the matching input channels of
every layer that reads it; channels coupled by a residual add go only when they are dead in
every coupled layer. The shrunk model then computes the same outputs as the masked one (up to
float rounding), which `shrink` checks on the example input before returning it.

Which layers are coupled comes from Torch-Pruning's dependency graph (Fang et al., "DepGraph:
Towards Any Structural Pruning", CVPR 2023; VainF/Torch-Pruning), which traces the forward pass
with autograd and also does the surgery; this module only decides which channels are dead.
Channel counts of a layer never drop to 0: when every channel of a group is dead, the first
one stays (it outputs zeros, so the outputs do not change).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from sparsetrain.errors import UserError

MASK_SUFFIX = "_mask"
CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_LINEAR_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
                 nn.Linear)
_ZERO_PRESERVING = (nn.PReLU,)  # modules with parameters whose output is 0 on a zero channel


@dataclass(frozen=True)
class LayerChannels:
    """One Conv/Linear layer's output and input channels before and after shrinking."""

    name: str
    out_before: int
    out_after: int
    in_before: int
    in_after: int

    @property
    def changed(self) -> bool:
        return (self.out_before, self.in_before) != (self.out_after, self.in_after)


@dataclass
class ShrinkSummary:
    """What `shrink` removed: per-layer channel counts, the parameter counts and the pruning
    history (root layer, output side?, channel indices) that rebuilds the architecture."""

    layers: list[LayerChannels]
    params_before: int
    params_after: int
    input_shape: tuple[int, ...]
    history: list[tuple[str, bool, list[int]]] = field(default_factory=list)
    kept: dict[str, dict[str, int]] = field(default_factory=dict)
    """Layer name -> {why they stay: count} for filters that are all zero but were not removed."""

    @property
    def removed_channels(self) -> int:
        """Output channels removed over all Conv/Linear layers."""
        return sum(r.out_before - r.out_after for r in self.layers)

    def __str__(self) -> str:
        kept = [f"  {layer}: {n} all-zero filter{'s' if n > 1 else ''} kept ({why})"
                for layer, reasons in self.kept.items() for why, n in reasons.items()]
        if not self.removed_channels:
            lines = ["nothing could be removed: no channel is dead outside the model's output layer (dead: its filter "
                     "and bias are all zero or masked and its batch norm's weight and bias are zero, in every layer "
                     "a residual add couples it with)"]
            return "\n".join(lines + kept)
        header = f"{'layer':<36} {'out channels':>16} {'in channels':>16}"
        lines = [header, "-" * len(header)]
        for r in self.layers:
            out = f"{r.out_before} -> {r.out_after}" if r.out_after != r.out_before else f"{r.out_before}"
            inp = f"{r.in_before} -> {r.in_after}" if r.in_after != r.in_before else f"{r.in_before}"
            lines.append(f"{r.name:<36} {out:>16} {inp:>16}")
        lines.append("-" * len(header))
        lines.append(f"removed {self.removed_channels} output channels; parameters {self.params_before:,d} -> "
                     f"{self.params_after:,d} ({self.params_after / max(self.params_before, 1):.1%})")
        return "\n".join(lines + kept)


def shrink(model: nn.Module, example: torch.Tensor | Sequence[int], *, keep_masks: bool = False,
           check: bool = True) -> nn.Module:
    """A smaller dense copy of ``model`` without its dead channels (``model`` is not changed).

    ``example`` is an input batch, or an input shape without the batch dim (then a random
    batch of 2 is used); the dependency graph traces the model on it, and the shrunk model
    must match the masked one on it. The copy has no ``<weight>_mask`` buffers: masked weights
    inside the kept channels stay exactly zero (pass ``keep_masks=True`` to keep their masks,
    cut to the kept channels, e.g. to go on training it sparse). Its `ShrinkSummary` is
    ``small.shrink_summary``. A model without Conv layers, one the dependency graph cannot
    trace, or a shrunk model that would compute other outputs is a UserError.
    """
    model = _unwrap(model)
    _check_cnn(model)
    small = copy.deepcopy(model)
    _dense_layers(small)
    masks = _take_masks(small)
    x = _example_input(small, example)
    graph = _trace(small, x)
    want = _outputs(small, x) if check else None
    before = _channels(small)
    params_before = sum(p.numel() for p in small.parameters())
    history = []
    removed: dict[tuple[str, int], set[int]] = {}
    plan = _dead_plan(graph)
    for root, is_out, idxs in plan.cuts:
        group = graph.get_pruning_group(graph.model.get_submodule(root), _handler(graph, root, is_out), idxs)
        for name, dim, kept in _touched(graph, group):
            removed.setdefault((name, dim), set()).update(kept)
        group.prune(record_history=False)
        history.append((root, is_out, [int(i) for i in idxs]))
    after = _channels(small)
    if keep_masks:
        _restore_masks(small, masks, removed)
    summary = ShrinkSummary(
        layers=[LayerChannels(n, before[n][0], after[n][0], before[n][1], after[n][1]) for n in before],
        params_before=params_before, params_after=sum(p.numel() for p in small.parameters()),
        input_shape=tuple(x.shape[1:]), history=history, kept=plan.kept)
    if check and history:
        _check_same(model, small, x, want)
    small.shrink_summary = summary  # type: ignore[assignment]
    return small


def rebuild(model: nn.Module, history: Sequence[Sequence[Any]], input_shape: Sequence[int]) -> nn.Module:
    """Cut a fresh, unshrunk ``model`` (in place) to the architecture a `ShrinkSummary.history`
    describes, so that the shrunk weights load into it; returns it."""
    _check_cnn(model)
    x = _example_input(model, tuple(input_shape))
    graph = _trace(model, x)
    for root, is_out, idxs in history:
        group = graph.get_pruning_group(graph.model.get_submodule(root), _handler(graph, root, bool(is_out)),
                                        [int(i) for i in idxs])
        group.prune(record_history=False)
    return model


def shrunk_channels(model: nn.Module, input_shape: Sequence[int]) -> dict[str, tuple[int, int]] | None:
    """Conv/Linear layer name -> (output, input) channels it keeps under `shrink`, computed
    without copying or changing ``model`` (no tracing at all when no filter is all zero); None
    when `shrink` cannot handle the model. For analysis: it never raises."""
    from sparsetrain.backends.sparse import SparseLayer

    model = _unwrap(model)
    if not any(isinstance(m, CONV_TYPES) for m in model.modules()) or any(
            isinstance(m, SparseLayer) for m in model.modules()):
        return None
    counts = {n: list(c) for n, c in _channels(model).items()}
    if not _has_zero_filter(model):
        return {n: (c[0], c[1]) for n, c in counts.items()}
    try:
        graph = _trace(model, _example_input(model, tuple(input_shape)))
        for root, is_out, idxs in _dead_plan(graph).cuts:
            group = graph.get_pruning_group(graph.model.get_submodule(root), _handler(graph, root, is_out), idxs)
            for name, dim, kept in _touched(graph, group):
                counts[name][dim] -= len(kept)
    except Exception:  # noqa: BLE001  an analysis column must not stop a run: unknown is None
        return None
    return {n: (c[0], c[1]) for n, c in counts.items()}


# ---------------------------------------------------------------------------------------------
# Which channels are dead


@dataclass
class _Plan:
    """The cuts (root layer name, output side?, dead root indices), one per group with dead
    channels, and the all-zero filters that stay: layer name -> {why: count}."""

    cuts: list[tuple[str, bool, list[int]]] = field(default_factory=list)
    kept: dict[str, dict[str, int]] = field(default_factory=dict)


def _dead_plan(graph: Any) -> _Plan:
    names = {m: n for n, m in graph.model.named_modules()}
    plan = _Plan()
    for group in graph.get_all_groups(root_module_types=_LINEAR_TYPES):
        root_dep = group[0].dep
        width = len(group[0].idxs)
        why: list[str | None] = [None] * width
        zero_filters: list[tuple[str, int]] = []  # (layer, root index) of all-zero filters in this group
        output = next((item for item in group if _reaches_output(graph, item.dep)), None)
        for item in group:
            ok = _zero_output(graph, item.dep, item.idxs)
            module = item.dep.target.module
            producer = isinstance(module, _LINEAR_TYPES) and graph.is_out_channel_pruning_fn(item.dep.handler)
            for i, r in enumerate(item.root_idxs):
                if not ok[i] and why[r] is None:
                    why[r] = _why_alive(module, names, producer)
                elif ok[i] and producer:
                    zero_filters.append((names[module], r))
        if output is not None:
            why = ["the channel is an output of the model"] * width
        idxs = [r for r in range(width) if why[r] is None]
        if idxs and len(idxs) == width:
            why[idxs[0]] = "a layer keeps at least one channel"
            idxs = idxs[1:]
        for layer, r in zero_filters:
            if why[r] is not None:
                plan.kept.setdefault(layer, {}).setdefault(why[r], 0)
                plan.kept[layer][why[r]] += 1
        if idxs:
            plan.cuts.append((names[root_dep.target.module], graph.is_out_channel_pruning_fn(root_dep.handler), idxs))
    return plan


def _why_alive(module: Any, names: dict[Any, str], producer: bool) -> str:
    """Why a channel this group item does not zero stays (said of the all-zero filters coupled with it)."""
    if isinstance(module, nn.Parameter):
        return "a parameter multiplied or added on the channel is not zero there"
    name = names.get(module, type(module).__name__)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return f"batch norm {name} has a non-zero weight or bias on the channel"
    if producer:
        return f"a residual add couples the channel with a live channel of {name}"
    return f"{name} ({type(module).__name__}) mixes or transforms the channel"


def _reaches_output(graph: Any, dep: Any) -> bool:
    """Does this group item carry the channel into the model's output (a node nothing reads)?"""
    node = dep.target
    return (not node.outputs and graph.is_out_channel_pruning_fn(dep.handler)
            and not isinstance(node.module, nn.Parameter))


def _zero_output(graph: Any, dep: Any, idxs: Sequence[int]) -> torch.Tensor:
    """For each index of a group item: is this layer's part of the channel exactly zero on a
    zero input channel (True also for layers that only read it, and for parameter-free ops)?"""
    module = dep.target.module
    n = len(idxs)
    ones = torch.ones(n, dtype=torch.bool)
    index = torch.as_tensor(list(idxs), dtype=torch.long)
    if isinstance(module, nn.Parameter):
        dim = dep.target.pruning_dim
        return _rows_zero(module.detach(), index, dim)
    if not graph.is_out_channel_pruning_fn(dep.handler):
        if isinstance(module, _LINEAR_TYPES) or not any(True for _ in module.parameters(recurse=False)):
            return ones  # a reader: its input channel goes, nothing it outputs depends on it
        return ~ones
    if isinstance(module, _LINEAR_TYPES):
        dim = 1 if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)) else 0
        if isinstance(module, CONV_TYPES) and module.groups == module.out_channels and module.groups > 1:
            dim = 0  # depthwise: output channel c is filter c
        zero = _rows_zero(_effective_weight(module), index, dim)
        if module.bias is not None:
            zero &= module.bias.detach()[index] == 0
        return zero
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if module.affine:
            return (module.weight.detach()[index] == 0) & (module.bias.detach()[index] == 0)
        if module.running_mean is not None:
            return module.running_mean[index] == 0
        return ones
    if isinstance(module, _ZERO_PRESERVING) or not any(True for _ in module.parameters(recurse=False)):
        return ones  # elementwise, reshape, concat ... (the final check catches any that is not 0 -> 0)
    return ~ones  # LayerNorm, GroupNorm (they mix channels), attention, ...: never removed


def _rows_zero(tensor: torch.Tensor, index: torch.Tensor, dim: int) -> torch.Tensor:
    picked = tensor.index_select(dim, index.to(tensor.device)).movedim(dim, 0)
    return (picked.reshape(len(index), -1) == 0).all(dim=1).cpu()


def _effective_weight(module: nn.Module) -> torch.Tensor:
    weight = module.weight.detach()
    mask = getattr(module, "weight" + MASK_SUFFIX, None)
    return weight if mask is None else weight * mask.to(weight.dtype)


def _has_zero_filter(model: nn.Module) -> bool:
    for module in model.modules():
        if isinstance(module, _LINEAR_TYPES):
            w = _effective_weight(module)
            if bool((w.reshape(w.shape[0], -1) == 0).all(dim=1).any()):
                return True
    return False


# ---------------------------------------------------------------------------------------------
# The graph and the surgery


def _trace(model: nn.Module, x: torch.Tensor) -> Any:
    """The dependency graph of ``model`` traced on ``x`` in eval mode (batch-norm statistics are
    not updated); a model it cannot trace is a UserError."""
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            graph = tp.DependencyGraph().build_dependency(model, x, verbose=False)
    except Exception as exc:  # noqa: BLE001  tracing runs the user's forward: any failure means "cannot trace"
        raise UserError(f"the dependency graph (torch-pruning) cannot trace {type(model).__name__}: "
                        f"{_first_line(exc)}; st.shrink needs a forward pass that autograd records") from None
    finally:
        model.train(was_training)
    missing = [n for n, m in model.named_modules() if isinstance(m, _LINEAR_TYPES) and m not in graph.module2node]
    if missing:
        shown = ", ".join(repr(n) for n in missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise UserError(f"the dependency graph (torch-pruning) cannot trace {type(model).__name__}: layer {shown} "
                        "does not take part in the forward pass as a module autograd records (used through its "
                        "weight, run under torch.no_grad or detached, or not used); st.shrink cannot tell what "
                        "reads its channels")
    return graph


def _handler(graph: Any, root: str, is_out: bool) -> Any:
    pruner = graph.get_pruner_of_module(graph.model.get_submodule(root))
    return pruner.prune_out_channels if is_out else pruner.prune_in_channels


def _touched(graph: Any, group: Any) -> Iterator[tuple[str, int, list[int]]]:
    """(Conv/Linear layer name, weight dim 0 = out / 1 = in, indices) for each layer a group cuts."""
    names = {m: n for n, m in graph.model.named_modules()}
    for item in group:
        module = item.dep.target.module
        if isinstance(module, _LINEAR_TYPES) and module in names:
            dim = 0 if graph.is_out_channel_pruning_fn(item.dep.handler) else 1
            if isinstance(module, CONV_TYPES) and module.groups == module.out_channels and module.groups > 1:
                dim = 0
            yield names[module], dim, list(item.idxs)


def _channels(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Conv/Linear layer name -> (output channels, input channels)."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            out[name] = (m.out_features, m.in_features)
        elif isinstance(m, _LINEAR_TYPES):
            out[name] = (m.out_channels, m.in_channels)
    return out


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel / DataParallel / torch.compile wrappers (tracing
    a DDP model would make it wait for a backward pass)."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def _check_cnn(model: nn.Module) -> None:
    if not any(isinstance(m, CONV_TYPES) for m in model.modules()):
        raise UserError(f"st.shrink removes channels of convolutional networks; {type(model).__name__} has no "
                        "Conv1d/Conv2d/Conv3d layer")


def _dense_layers(model: nn.Module) -> None:
    """Sparse-backend layers back to Linear/Conv with ``weight_mask`` buffers."""
    from sparsetrain.backends.sparse import SparseLayer, to_masked

    if any(isinstance(m, SparseLayer) for m in model.modules()):
        to_masked(model)


def _take_masks(model: nn.Module) -> dict[tuple[str, str], torch.Tensor]:
    """Apply every ``<param>_mask`` buffer to its parameter and remove it; returns them by
    (module name, parameter name)."""
    masks = {}
    for module_name, module in model.named_modules():
        for buffer_name, mask in list(module.named_buffers(recurse=False)):
            param_name = buffer_name[: -len(MASK_SUFFIX)]
            param = getattr(module, param_name, None) if buffer_name.endswith(MASK_SUFFIX) else None
            if isinstance(param, torch.Tensor) and param.shape == mask.shape:
                with torch.no_grad():
                    param.mul_(mask.to(param.dtype))
                delattr(module, buffer_name)
                masks[(module_name, param_name)] = mask
    return masks


def _restore_masks(model: nn.Module, masks: dict[tuple[str, str], torch.Tensor],
                   removed: dict[tuple[str, int], set[int]]) -> None:
    """Put each mask back, cut to the kept channels of its weight."""
    for (module_name, param_name), mask in masks.items():
        module = model.get_submodule(module_name)
        param = getattr(module, param_name)
        if param_name == "weight":
            for dim in (0, 1):
                gone = removed.get((module_name, dim))
                if gone and mask.dim() > dim and mask.shape[dim] != param.shape[dim]:
                    keep = [i for i in range(mask.shape[dim]) if i not in gone]
                    mask = mask.index_select(dim, torch.tensor(keep, device=mask.device))
        if mask.shape != param.shape:
            raise UserError(f"cannot cut the mask of {module_name}.{param_name} to its shrunk shape "
                            f"{tuple(param.shape)}; shrink it with keep_masks=False")
        module.register_buffer(param_name + MASK_SUFFIX, mask)


def _example_input(model: nn.Module, example: torch.Tensor | Sequence[int]) -> torch.Tensor:
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    if isinstance(example, torch.Tensor):
        return example.to(device)
    shape = tuple(example)
    if not shape or not all(isinstance(s, int) and s > 0 for s in shape):
        raise UserError(f"st.shrink needs an example input batch or an input shape of positive sizes "
                        f"(batch dim excluded); got {example!r}")
    generator = torch.Generator().manual_seed(0)
    return torch.randn((2, *shape), generator=generator).to(device=device, dtype=dtype)


def _outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` in eval mode (its first tensor, as float), the training mode restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return _first_tensor(model(x))
    finally:
        model.train(was_training)


def _check_same(model: nn.Module, small: nn.Module, x: torch.Tensor, want: torch.Tensor) -> None:
    """The shrunk model must compute ``want``, the masked model's outputs on ``x``."""
    try:
        got = _outputs(small, x)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001  the traced graph missed a connection: say so
        raise UserError(_untraced(model, f"its forward pass fails after removal ({_first_line(exc)})")) from None
    scale = max(1.0, float(want.abs().max())) if want.numel() else 1.0
    if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-5 * scale):
        gap = float((got - want).abs().max()) if got.shape == want.shape else math.inf
        raise UserError(_untraced(model, f"its outputs would change (max |difference| {gap:.3g})"))


def _untraced(model: nn.Module, what: str) -> str:
    return (f"st.shrink cannot shrink {type(model).__name__}: {what}; the dependency graph (torch-pruning) did not "
            "see how its layers connect (a layer used through its weight, computation outside autograd, or an "
            "operation that does not map 0 to 0)")


def _first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out.float()
    if isinstance(out, (tuple, list)) and out:
        return _first_tensor(out[0])
    if isinstance(out, dict) and out:
        return _first_tensor(next(iter(out.values())))
    raise UserError(f"st.shrink compares model outputs, but the model returned {type(out).__name__}")


def _first_line(exc: BaseException) -> str:
    return ((str(exc).strip().splitlines() or [type(exc).__name__])[0])[:200]
