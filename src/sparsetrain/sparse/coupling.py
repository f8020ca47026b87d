"""Which layer's output channels feed which layer's input channels (channel coupling).

A channel (a conv's filter, a Linear's output unit) can be removed on its own only where its
output reaches exactly one next layer, through ops that act on each channel separately
(batch norm, activations, pooling, dropout). Then removing it also removes that layer's
matching input channel, and the channel's batch-norm entries. A channel that meets a residual
add, a concatenation, a flatten into a Linear or a second consumer is coupled to more than its
next layer; `couplings` leaves it out (as Chase's reference code does: luuyin/chase lists for
each model the conv -> next conv pairs it prunes, ``next_layers``, and none of them crosses a
residual add or the classifier).

`channel_params` reads the same trace for a different question: which bias and batch-norm
entries belong to each output channel of a layer (those a masked channel must hold at 0 to
output exactly 0), whatever its output meets after them.

The coupling is read from one forward pass: leaf modules are recorded by hooks, and the
functional operations between them (``out + shortcut``, ``x.flatten(1)``, ``F.relu``) by a
``TorchFunctionMode``, so no op that uses a channel goes unseen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_PER_CHANNEL_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh,
    nn.Hardswish, nn.Softplus, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)
_PER_CHANNEL_FUNCTIONS = {
    "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "elu", "elu_", "gelu", "silu", "mish", "sigmoid",
    "tanh", "hardtanh", "hardtanh_", "hardswish", "softplus", "dropout", "dropout1d", "dropout2d",
    "dropout3d", "max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices",
    "max_pool2d_with_indices", "max_pool3d_with_indices", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
    "adaptive_max_pool2d", "adaptive_max_pool3d",
}


@dataclass(frozen=True)
class Coupling:
    """Output channel c of ``producer`` feeds only input channel c of ``consumer``.

    ``producer``/``consumer`` are weight parameter names, ``bias`` the producer's bias (or
    None), ``norms`` the batch-norm modules on the way (their ``weight``/``bias`` entry c
    belongs to the channel)."""

    producer: str
    consumer: str
    bias: str | None = None
    norms: tuple[str, ...] = ()


@dataclass
class _Node:
    kind: str                      # "conv", "linear", "norm", "per_channel", "other"
    name: str = ""                 # module name (weight name for a functional conv/linear)
    weight: str | None = None
    bias: str | None = None
    groups: int = 1
    inputs: list[int] = field(default_factory=list)  # producer node of each tensor argument
    pool: bool = False


class _Recorder(TorchFunctionMode):
    """Records the dataflow of one forward pass between leaf modules and functional ops."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.nodes: list[_Node] = []
        self.producer: dict[int, int] = {}  # id(tensor) -> node that wrote it last
        self.alive: list[Any] = []          # keeps every seen tensor alive: ids stay unique
        self.depth = 0                      # > 0 inside a leaf module's forward
        self.param_names = {id(p): n for n, p in model.named_parameters()}
        self.pending: dict[int, tuple[_Node, list[int]]] = {}

    def _producers(self, values: Any) -> list[int]:
        out = []
        for v in _tensors(values):
            out.append(self.producer.get(id(v), -1))
        return out

    def _wrote(self, node: _Node, result: Any) -> None:
        self.nodes.append(node)
        index = len(self.nodes) - 1
        for t in _tensors(result):
            self.alive.append(t)
            self.producer[id(t)] = index

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if self.depth:
            return func(*args, **kwargs)
        inputs = self._producers((args, kwargs))
        result = func(*args, **kwargs)
        if not any(True for _ in _tensors(result)):
            return result  # metadata (size, dim, shape): no dataflow
        name = getattr(func, "__name__", "")
        node = _Node("other", name=name, inputs=inputs)
        if name in _PER_CHANNEL_FUNCTIONS:
            node.kind, node.pool = "per_channel", "pool" in name
        elif name in ("conv1d", "conv2d", "conv3d", "linear") and len(args) > 1:
            weight = self.param_names.get(id(args[1]))
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if weight is not None:
                node.kind, node.weight = ("linear" if name == "linear" else "conv"), weight
                node.bias = self.param_names.get(id(bias)) if bias is not None else None
                node.groups = int(args[6] if len(args) > 6 else kwargs.get("groups", 1))
        self._wrote(node, result)
        return result

    def before(self, module: nn.Module, args: Any) -> None:
        if self.depth == 0:
            self.pending[id(module)] = self._producers(args)
        self.depth += 1

    def after(self, name: str, module: nn.Module, args: Any, result: Any) -> None:
        self.depth -= 1
        if self.depth:
            return
        node = _Node(_module_kind(module), name=name, inputs=self.pending.pop(id(module), []))
        if node.kind in ("conv", "linear"):
            node.weight = f"{name}.weight" if name else "weight"
            node.bias = f"{name}.bias" if getattr(module, "bias", None) is not None else None
            node.groups = int(getattr(module, "groups", 1))
        node.pool = "Pool" in type(module).__name__
        self._wrote(node, result)


def _tensors(values: Any) -> Iterator[torch.Tensor]:
    if isinstance(values, torch.Tensor):
        yield values
    elif isinstance(values, (list, tuple)):
        for v in values:
            yield from _tensors(v)
    elif isinstance(values, dict):
        for v in values.values():
            yield from _tensors(v)


def _module_kind(module: nn.Module) -> str:
    if isinstance(module, _CONVS):
        return "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, _NORMS) and module.affine:
        return "norm"
    if isinstance(module, _PER_CHANNEL_MODULES):
        return "per_channel"
    return "other"


def trace_nodes(model: nn.Module, *args: Any, **kwargs: Any) -> list[_Node]:
    """The dataflow nodes of one forward pass of ``model`` on ``args`` (no gradients; the
    model is run in eval mode, so batch-norm statistics are left untouched)."""
    recorder = _Recorder(model)
    handles = []
    for name, module in model.named_modules():
        if next(module.children(), None) is not None and not isinstance(module, (*_CONVS, nn.Linear)):
            continue  # containers: their functional ops are recorded, their leaves by hooks
        handles.append(module.register_forward_pre_hook(lambda m, a: recorder.before(m, a)))
        handles.append(module.register_forward_hook(
            lambda m, a, r, name=name: recorder.after(name, m, a, r)))
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        call = getattr(model, "_call_impl", model)  # past a compiled forward (model.compile()): eager ops
        with torch.no_grad(), recorder:
            call(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return recorder.nodes


def couplings(model: nn.Module, *args: Any, **kwargs: Any) -> list[Coupling]:
    """Every producer -> consumer channel coupling of ``model`` seen in a forward pass on
    ``args``: a conv (or Linear) whose output reaches, through batch norms and per-channel ops
    only, exactly one conv (Linear) with groups=1 as its input, and nothing else."""
    nodes = trace_nodes(model, *args, **kwargs)
    consumers = _users(nodes)
    found = []
    seen = set()
    for index, node in enumerate(nodes):
        if node.kind not in ("conv", "linear") or node.groups != 1 or node.weight in seen:
            continue
        seen.add(node.weight)
        coupling = _follow(nodes, consumers, index)
        if coupling is not None:
            found.append(coupling)
    # a layer called twice (weight sharing) is coupled to everything it feeds: leave it out
    calls: dict[str, int] = {}
    for node in nodes:
        if node.weight is not None:
            calls[node.weight] = calls.get(node.weight, 0) + 1
    return [c for c in found if calls[c.producer] == 1 and calls[c.consumer] == 1]


def _users(nodes: list[_Node]) -> dict[int, list[tuple[int, int]]]:
    """Node index -> the (node, argument position) pairs that read its output."""
    users: dict[int, list[tuple[int, int]]] = {}
    for index, node in enumerate(nodes):
        for position, source in enumerate(node.inputs):
            if source >= 0:
                users.setdefault(source, []).append((index, position))
    return users


def _per_channel_run(nodes: list[_Node], users: dict, start: int) -> tuple[list[str], tuple[int, int] | None]:
    """Follow the output of conv/linear node ``start`` through batch norms and per-channel ops
    while each value has exactly one reader. Returns the norms passed and the (node, position)
    of the first reader that is neither (None at a fan-out or where nothing reads it)."""
    linear = nodes[start].kind == "linear"
    norms: list[str] = []
    current = start
    while True:
        readers = users.get(current, [])
        if len(readers) != 1:
            return norms, None
        index, position = readers[0]
        node = nodes[index]
        if position == 0 and node.kind == "norm":
            norms.append(node.name)
        elif position != 0 or node.kind != "per_channel" or (node.pool and linear):  # pooling mixes units
            return norms, readers[0]
        current = index


def _follow(nodes: list[_Node], users: dict, start: int) -> Coupling | None:
    producer = nodes[start]
    norms, stop = _per_channel_run(nodes, users, start)
    if stop is None:
        return None
    index, position = stop
    node = nodes[index]
    if node.kind != producer.kind or position != 0 or node.groups != 1:
        return None
    return Coupling(producer.weight, node.weight, producer.bias, tuple(norms))


@dataclass(frozen=True)
class ChannelParams:
    """The per-output-channel parameters of one Conv/Linear weight: entry c of its ``bias`` and
    of the ``weight``/``bias`` (and running statistics) of each batch norm in ``norms`` belongs
    to its output channel c alone."""

    weight: str
    bias: str | None = None
    norms: tuple[str, ...] = ()


def channel_params(model: nn.Module, *args: Any, **kwargs: Any) -> dict[str, ChannelParams]:
    """Weight name -> `ChannelParams` for every Conv/Linear weight of ``model`` seen in a forward
    pass on ``args``: its bias, and the batch norms its output passes through per-channel ops
    only, up to the first other op or the first fan-out (e.g. ResNet's conv2 -> bn2 -> add: bn2
    is conv2's). Unlike `couplings`, what comes after (a residual add, a flatten, the classifier)
    does not matter. A weight used twice gets the norms after every use; a batch norm used twice
    belongs to no weight (its entries serve other inputs too)."""
    nodes = trace_nodes(model, *args, **kwargs)
    users = _users(nodes)
    norm_calls: dict[str, int] = {}
    for node in nodes:
        if node.kind == "norm":
            norm_calls[node.name] = norm_calls.get(node.name, 0) + 1
    found: dict[str, ChannelParams] = {}
    for index, node in enumerate(nodes):
        if node.kind not in ("conv", "linear") or node.weight is None:
            continue
        norms, _ = _per_channel_run(nodes, users, index)
        before = found.get(node.weight, ChannelParams(node.weight, node.bias))
        new = [n for n in norms if norm_calls[n] == 1 and n not in before.norms]
        found[node.weight] = ChannelParams(node.weight, node.bias, before.norms + tuple(new))
    return found
