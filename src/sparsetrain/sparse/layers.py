"""Which parameters can be sparsified: the layer registry, weight selection, tied parameters.

A layer type is made sparsifiable by registering it (`register_layer`): which of its
parameters are weights, which dimension is the fan-in, and into how many equal row blocks
the weight splits as separate logical layers (attention's fused q/k/v projection, a
recurrent layer's gates). Built in: Linear, Conv1d/2d/3d, Hugging Face transformers'
``Conv1D`` (GPT-2; weight stored (in, out)), ``nn.MultiheadAttention``'s input projection,
and, opt-in by name (``layer_types``), ``embedding`` and ``recurrent`` weights.

A parameter shared by several modules (GPT-2's ``lm_head`` tied to its token embedding)
is kept dense by default, so masking one layer never zeroes another through the tie;
``tied="sparsify"`` sparsifies it once, with one mask, under its first name.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Callable

from torch import nn

from sparsetrain.errors import UserError
from sparsetrain.registry import Registry

SPARSIFIABLE_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
"""The layer types whose FLOPs `sparsetrain.analysis` counts (all have ``weight``)."""

TIED_CHOICES = ("dense", "sparsify")


@dataclass(frozen=True)
class LayerKind:
    """How one registered layer type exposes its sparsifiable weights."""

    name: str
    module: type | str
    """The module class, or "package.module.Class" for a class of an optional package (matched
    only once that package is imported, so registering it never imports the package)."""
    params: Callable[[nn.Module], tuple[str, ...]]
    fan_in_dim: int = 1
    """The weight dimension that is the layer's input (0 for transformers' Conv1D)."""
    parts: Callable[[str], int] = field(default=lambda _name: 1)
    """Number of equal row blocks of a weight that are separate logical layers (q, k, v)."""
    opt_in: bool = False
    """True: sparsified only when named in ``layer_types`` (or reached by ``include``)."""

    def matches(self, module: nn.Module) -> bool:
        cls = self.module
        if isinstance(cls, str):
            package, _, attr = cls.rpartition(".")
            cls = getattr(sys.modules.get(package), attr, None)
            if cls is None:
                return False
        return isinstance(module, cls)

    def logical_shape(self, shape: tuple[int, ...], param: str) -> tuple[int, ...]:
        """(out, in, *kernel) of one logical layer of a weight of ``shape``."""
        shape = tuple(shape)
        if self.fan_in_dim != 1 and len(shape) >= 2:
            rest = [d for i, d in enumerate(shape) if i != self.fan_in_dim]
            shape = (rest[0], shape[self.fan_in_dim], *rest[1:])
        return (shape[0] // self.parts(param), *shape[1:])


LAYERS: Registry[LayerKind] = Registry("layer type")


def register_layer(name: str, module: type | str, params: tuple[str, ...] | Callable = ("weight",), *,
                   fan_in_dim: int = 1, parts: int | Callable[[str], int] = 1, opt_in: bool = False,
                   help: str = "") -> LayerKind:
    """Declare ``module`` (a class or "package.module.Class") sparsifiable under ``name``.

    ``params``: its weight names, or a function module -> names; ``fan_in_dim``: the input
    dimension of the weight; ``parts``: equal row blocks that are logical layers for the
    allocation (or a function weight name -> count); ``opt_in``: sparsified only on request.
    """
    names = params if callable(params) else (lambda _m, p=tuple(params): p)
    count = parts if callable(parts) else (lambda _n, k=parts: k)
    kind = LayerKind(name, module, names, fan_in_dim, count, opt_in)
    LAYERS.register(name, help=help, opt_in=opt_in)(kind)
    return kind


register_layer("linear", nn.Linear, help="nn.Linear.weight (out, in)")
register_layer("conv", (nn.Conv1d, nn.Conv2d, nn.Conv3d), help="nn.Conv1d/2d/3d.weight (out, in, *kernel)")
register_layer("hf-conv1d", "transformers.pytorch_utils.Conv1D", fan_in_dim=0,
               help="Hugging Face transformers' Conv1D.weight, stored (in, out) (GPT-2)")


def _attention_weights(m: nn.MultiheadAttention) -> tuple[str, ...]:
    if m.in_proj_weight is not None:
        return ("in_proj_weight",)
    return ("q_proj_weight", "k_proj_weight", "v_proj_weight")


register_layer("attention", nn.MultiheadAttention, _attention_weights,
               parts=lambda n: 3 if n == "in_proj_weight" else 1,
               help="nn.MultiheadAttention input projections; in_proj_weight is q, k, v as three "
                    "logical layers (out_proj is a Linear)")
register_layer("embedding", nn.Embedding, opt_in=True,
               help="nn.Embedding.weight (num_embeddings, dim); opt-in")
_GATES = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}


def _recurrent_weights(m: nn.RNNBase) -> tuple[str, ...]:
    return tuple(n for n, _ in m.named_parameters(recurse=False) if n.startswith("weight_"))


for _cls, _gates in _GATES.items():
    register_layer(f"recurrent-{_cls.__name__.lower()}", _cls, _recurrent_weights, opt_in=True,
                   parts=lambda n, g=_gates: 1 if n.startswith("weight_hr") else g,
                   help=f"nn.{_cls.__name__} weight_ih/weight_hh (one logical layer per gate); "
                        "opt-in as 'recurrent'")

OPT_IN_GROUPS = {"embedding": ("embedding",),
                 "recurrent": tuple(f"recurrent-{c.__name__.lower()}" for c in _GATES)}
"""Names accepted by ``layer_types`` -> the registered kinds they switch on."""


@dataclass(frozen=True)
class Candidate:
    """One registered weight of a model."""

    name: str
    module: nn.Module
    param: str
    kind: LayerKind

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(getattr(self.module, self.param).shape)

    @property
    def parts(self) -> int:
        return self.kind.parts(self.param)

    @property
    def logical_shape(self) -> tuple[int, ...]:
        return self.kind.logical_shape(self.shape, self.param)


def kind_of(module: nn.Module) -> LayerKind | None:
    """The first registered layer kind that ``module`` is an instance of."""
    for name in LAYERS.names():
        kind = LAYERS.get(name)
        if kind.matches(module):
            return kind
    return None


def registered_weights(model: nn.Module) -> list[Candidate]:
    """Every weight of a registered layer type in ``model`` (opt-in ones too), in definition order.

    Only real parameters count: a layer whose weight a backend already replaced is skipped."""
    out = []
    for module_name, module in model.named_modules():
        kind = kind_of(module)
        if kind is None:
            continue
        own = dict(module.named_parameters(recurse=False))
        for param in kind.params(module):
            if param in own:
                out.append(Candidate(f"{module_name}.{param}" if module_name else param, module, param, kind))
    return out


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """All Linear/Conv (module name, module) pairs, in definition order (for FLOP counts)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, SPARSIFIABLE_LAYERS)]


def tied_names(model: nn.Module) -> dict[str, list[str]]:
    """Parameter name -> the other names of the same parameter (only for shared parameters)."""
    names: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    return {n: [o for o in group if o != n] for group in names.values() if len(group) > 1 for n in group}


@dataclass
class Selection:
    """The outcome of `choose_weights`: weights to sparsify and every registered weight left dense."""

    chosen: list[Candidate]
    dense: dict[str, str]
    """Registered weight name -> why it stays dense."""

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.chosen]

    def describe(self, model: nn.Module) -> str:
        """One line: "sparsified N of M parameters (P% of the model) in K layers; left dense: ..."."""
        total = sum(p.numel() for p in model.parameters())
        n = sum(math.prod(c.shape) for c in self.chosen)
        left = ", ".join(f"{name} ({why})" for name, why in self.dense.items()) or "none"
        share = 100 * n / total if total else 0.0
        return (f"sparsified {n:,} of {total:,} parameters ({share:.1f}% of the model) in "
                f"{len(self.chosen)} layer{'s' if len(self.chosen) != 1 else ''}; left dense: {left}")


def choose_weights(model: nn.Module, *, dense_first: bool = False, dense_last: bool = False,
           include: tuple[str, ...] = (), exclude: tuple[str, ...] = (),
           layer_types: tuple[str, ...] = (), tied: str = "dense") -> Selection:
    """The registered weights to sparsify, and the reason each other one stays dense.

    Default: every weight of a registered layer type that is not opt-in, plus the opt-in
    groups named in ``layer_types`` ("embedding", "recurrent"). ``include`` (glob patterns
    over parameter names) instead picks among all registered weights, opt-in ones too;
    ``exclude`` removes; ``dense_first``/``dense_last`` keep the first/last default weight
    dense. ``tied``: "dense" keeps shared parameters dense, "sparsify" sparsifies each once.
    """
    unknown = [t for t in layer_types if t not in OPT_IN_GROUPS]
    if unknown:
        raise UserError(f"layer_types: unknown layer type {unknown[0]!r}; choose from: {', '.join(OPT_IN_GROUPS)}")
    if tied not in TIED_CHOICES:
        raise UserError(f"tied must be one of: {', '.join(TIED_CHOICES)}; got {tied!r}")
    candidates = registered_weights(model)
    if not candidates:
        raise UserError("the model has no layer of a registered type whose weight could be sparsified "
                        f"(registered: {', '.join(LAYERS.names())}; see sparsetrain.sparse.register_layer)")
    wanted = {k for t in layer_types for k in OPT_IN_GROUPS[t]}
    default = [c for c in candidates if not c.kind.opt_in or c.kind.name in wanted]
    dense: dict[str, str] = {}
    for c in candidates:
        if c not in default:
            group = next(g for g, kinds in OPT_IN_GROUPS.items() if c.kind.name in kinds)
            dense[c.name] = f"{group}: opt-in with layer_types"
    chosen = list(default)
    if dense_first and default:
        chosen.remove(default[0])
        dense[default[0].name] = "dense_first"
    if dense_last and default and default[-1] in chosen:
        chosen.remove(default[-1])
        dense[default[-1].name] = "dense_last"
    if include:
        chosen = [c for c in candidates if any(fnmatchcase(c.name, p) for p in include)]
        dense = {c.name: "not in include" for c in candidates if c not in chosen}
    for c in list(chosen):
        if any(fnmatchcase(c.name, p) for p in exclude):
            chosen.remove(c)
            dense[c.name] = "exclude"
    chosen, dense = _untie(model, chosen, dense, tied)
    if not chosen:
        reasons = "; ".join(f"{n}: {why}" for n, why in dense.items())
        raise UserError(f"nothing to sparsify: every registered weight stays dense ({reasons})")
    return Selection(chosen, {c.name: dense[c.name] for c in candidates if c.name in dense})


def _untie(model: nn.Module, chosen: list[Candidate], dense: dict[str, str],
           tied: str) -> tuple[list[Candidate], dict[str, str]]:
    """Apply the ``tied`` policy to the chosen weights that share their parameter."""
    ties = tied_names(model)
    kept: list[Candidate] = []
    owner: dict[int, str] = {}
    for c in chosen:
        others = ties.get(c.name)
        if not others:
            kept.append(c)
        elif tied == "dense":
            dense[c.name] = f"tied to {', '.join(others)}; tied=sparsify to sparsify it once"
        else:
            key = id(getattr(c.module, c.param))
            if key not in owner:
                owner[key] = c.name
                kept.append(c)
            else:
                dense[c.name] = ""  # named below
    for name in dense:  # a weight tied to one sparsified under another name is sparse too
        owners = [o for o in ties.get(name, ()) if o in owner.values()]
        if owners:
            dense[name] = f"same parameter as {owners[0]}, sparsified once"
    return kept, dense


def select_weights(model: nn.Module, **options) -> list[str]:
    """Names of the parameters to sparsify, e.g. ``["features.0.weight", "fc.weight"]``
    (the options of `choose_weights`)."""
    return choose_weights(model, **options).names
