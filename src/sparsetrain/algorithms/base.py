"""The base classes every sparsity method builds on.

A method wraps a model and its optimizer. Call ``method.step()`` instead of
``optimizer.step()``, or leave the loop unchanged: the method also runs from the
optimizer's step hook, so ``optimizer.step()``, ``scaler.step(optimizer)`` (a skipped step
skips the method), gradient accumulation, clipping, the Hugging Face Trainer and Lightning
all drive it. It therefore works in any training loop, and the Trainer is just one client. `Sparsifier` owns the order of operations (allocation -> masks -> optimizer step
-> masks re-applied); `DynamicSparsifier` adds schedule -> scores -> top-k -> masks ->
optimizer-state reset, so a method only says how it scores weights.
"""

from __future__ import annotations

import functools
import logging
import warnings
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable

import numpy as np
import torch
from torch import nn

from sparsetrain.algorithms.dead_channels import DeadChannels
from sparsetrain.config import check_range, from_dict, option, validate_choices
from sparsetrain.distributions import allocate
from sparsetrain.errors import SparsetrainWarning, UserError
from sparsetrain.sparse.initialization import SPARSE_INITS, init_scale
from sparsetrain.sparse.retired import RetiredSet
from sparsetrain.sparse import (
    BACKENDS, SparseWeight, attach, choose_weights, generator, random_scores, topk_mask,
)
from sparsetrain.sparse.layers import OPT_IN_GROUPS, TIED_CHOICES
from sparsetrain.sparse.structures import NM, Structure, fit_selection, parse_structure

log = logging.getLogger("sparsetrain")


@dataclass(frozen=True)
class MethodConfig:
    """Options shared by every method (none so far; dense training needs none)."""

    def __post_init__(self) -> None:
        validate_choices(self)


def _guarded(step: Callable[[Method], None]) -> Callable[[Method], None]:
    """``step`` marked as running, so optimizer steps it makes do not re-enter it via the hook;
    the outermost call ends with `Method.after_step`."""
    @functools.wraps(step)
    def run(self: Method) -> None:
        if getattr(self, "_stepping", False):  # a subclass's step calling super().step()
            return step(self)
        self._stepping = True
        try:
            step(self)
        finally:
            self._stepping = False
        self.after_step()
    return run


class Method:
    """A training-loop hook: call `step()` where you would call ``optimizer.step()``."""

    name: ClassVar[str] = "method"
    runs_from_hook: ClassVar[bool] = True
    """False for a method that must act before the optimizer's update (it then runs only
    from `step()`)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "step" in cls.__dict__:
            cls.step = _guarded(cls.__dict__["step"])
        if "__init__" in cls.__dict__:
            cls.__init__ = _unwrapping(cls.__dict__["__init__"])
    config_class: ClassVar[type] = MethodConfig
    needs_data: ClassVar[bool] = False
    """True if `prepare` reads training batches (pruning at initialization)."""
    trains_weights: ClassVar[bool] = True
    """False for methods that only select among frozen initial weights (supermasks)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
                 total_steps: int | None = None, steps_per_epoch: int | None = None,
                 seed: int = 0, config: Any = None, **options: Any) -> None:
        if config is not None and options:
            raise TypeError("pass either config= or keyword options, not both")
        self.config = config if config is not None else from_dict(
            self.config_class, options, where=f"{self.name} option")
        self.model = model = unwrap_parallel(model)
        self.optimizer = optimizer
        self.total_steps = total_steps
        self.steps_per_epoch = steps_per_epoch
        self.seed = seed
        self.step_count = 0
        self.weights: list[SparseWeight] = []
        self._stepping = False        # inside step(): its optimizer steps do not re-enter it
        self._driven_by_hook = False  # step() runs from the optimizer's hook, after its update
        self._hooks: tuple = ()
        self._saved = None
        if optimizer is not None and self.runs_from_hook:
            self.hook_optimizer()

    def hook_optimizer(self) -> None:
        """Run this method from its optimizer's step hook, so a plain ``optimizer.step()`` (or
        ``scaler.step(optimizer)``, or a framework's) does what `step()` does. One method per
        optimizer: the hook of a method previously attached to it is removed.

        The hook runs after the optimizer's update, which has seen unmasked gradients: the
        method then zeroes the inactive weights and their optimizer state, which for optimizers
        that update each weight from its own gradient and state (SGD, Adam, AdamW, RMSprop ...)
        gives exactly the update of `step()`. An iteration on which `step()` would skip the
        optimizer step (RigL's update iterations) is undone: the parameters and optimizer state
        saved by a pre-hook are put back before the method acts."""
        if not self.runs_from_hook:
            raise UserError(f"{self.name} acts before each optimizer update, so it cannot run from the "
                            "optimizer's hook: call its step() instead of optimizer.step()")
        for handle in getattr(self.optimizer, "_sparsetrain_hooks", ()):
            handle.remove()
        self._hooks = (self.optimizer.register_step_pre_hook(self._before_optimizer_step),
                       self.optimizer.register_step_post_hook(self._after_optimizer_step))
        self.optimizer._sparsetrain_hooks = self._hooks

    def remove_hook(self) -> None:
        """Stop running from the optimizer's step hooks (`step()` still works)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = ()

    def _before_optimizer_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._saved = None
        if not self._stepping and self.skips_optimizer_step():
            self._saved = _save_optimizer(optimizer)

    def _after_optimizer_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._stepping:
            return
        if self._saved is not None:
            _restore_optimizer(optimizer, self._saved)
            self._saved = None
        self._driven_by_hook = True
        try:
            self.step()
        finally:
            self._driven_by_hook = False

    def prepare(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        """Called once before the first `step()` with an iterator of training batches.

        Methods that prune before training (``needs_data``) score the network here; the
        others ignore it. In your own loop::

            method = st.create("snip", model, opt, density=0.1)
            method.prepare(iter(train_loader))   # reads only the batches it needs
            for x, y in train_loader: ...        # then train as usual, calling method.step()

        Calling it again (e.g. after `load_state_dict` on resume) does nothing.
        """

    def interval_steps(self, interval: int, unit: str) -> int:
        """``interval`` in optimizer steps (``unit`` is "steps" or "epochs"), for methods that
        act on a schedule; they need ``total_steps`` (and ``steps_per_epoch`` for epochs)."""
        if self.total_steps is None or self.total_steps < 1:
            raise UserError(f"{self.name} needs total_steps (the number of optimizer steps in training)")
        if unit != "epochs":
            return interval
        if not self.steps_per_epoch:
            raise UserError("interval_unit=epochs needs steps_per_epoch")
        return interval * self.steps_per_epoch

    def step(self) -> None:
        """One optimizer step (plus whatever the method does around it). From the optimizer's
        hook the update has already happened, and only the method's part runs."""
        if self.optimizer is not None and not self._driven_by_hook and not self.skips_optimizer_step():
            self.optimizer.step()
        self.step_count += 1

    def after_step(self) -> None:
        """Runs once at the end of every `step()`, after all of it (topology updates included)."""

    def skips_optimizer_step(self) -> bool:
        """True if the coming `step()` counts the iteration without an optimizer step (RigL's
        reference code only updates the masks on its update iterations)."""
        return False

    def itop_rate(self) -> float:
        """Fraction of the sparsifiable weights that have ever been active (Liu et al. 2021)."""
        return 1.0

    def density(self) -> float:
        """Active fraction of the sparsified weights (1.0 when nothing is sparsified)."""
        total = sum(w.numel for w in self.weights)
        return sum(w.active for w in self.weights) / total if total else 1.0

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step"])


Method.step = _guarded(Method.step)


def _unwrapping(init: Callable[..., None]) -> Callable[..., None]:
    """``init`` given the model inside a DDP wrapper (`unwrap_parallel`) as its model."""
    @functools.wraps(init)
    def run(self: Method, model: nn.Module, *args: Any, **kwargs: Any) -> None:
        init(self, unwrap_parallel(model), *args, **kwargs)
    return run


def unwrap_parallel(model: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` (or ``DataParallel``) wrapper, else ``model``.

    A method works on the wrapped module, so its weight names, state dict and checkpoints are
    the plain model's (no ``module.`` prefix) whether or not the model was wrapped. The masked
    backend only adds mask buffers, so the wrapper keeps training the same parameters."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


@torch.no_grad()
def _save_optimizer(optimizer: torch.optim.Optimizer) -> list:
    """Copies of every parameter and its optimizer state, to undo one optimizer step."""
    return [(p, p.detach().clone(), {k: v.clone() if torch.is_tensor(v) else v
                                     for k, v in optimizer.state.get(p, {}).items()})
            for group in optimizer.param_groups for p in group["params"]]


@torch.no_grad()
def _restore_optimizer(optimizer: torch.optim.Optimizer, saved: list) -> None:
    for p, value, state in saved:
        p.copy_(value)
        if state:
            optimizer.state[p] = state
        else:
            optimizer.state.pop(p, None)


@dataclass(frozen=True)
class SparsityConfig(MethodConfig):
    """Which weights are sparse and how the density is spread over layers."""

    density: float = option(0.1, "fraction of the sparsified weights that stay active, in (0, 1]")
    distribution: str = option("erk", "layer-wise density allocation",
                               choices=("uniform", "er", "erk", "scores", "custom"))
    erk_power: float = option(1.0, "exponent of the ER/ERK raw densities (1 = as in the paper)")
    dense_first: bool = option(False, "keep the first Linear/Conv layer dense")
    dense_last: bool = option(False, "keep the last Linear/Conv layer dense")
    include: tuple[str, ...] = option((), "glob patterns of parameter names to sparsify, among every registered "
                                          "layer weight (default: every one that is not opt-in, see sparsetrain.sparse.LAYERS)")
    exclude: tuple[str, ...] = option((), "glob patterns of parameter names to keep dense")
    layer_types: tuple[str, ...] = option((), "opt-in layer types to sparsify as well: "
                                              + ", ".join(OPT_IN_GROUPS))
    tied: str = option("dense", "a parameter shared by several layers (tied embedding): keep it dense, "
                                "or sparsify it once with one mask", choices=TIED_CHOICES)
    layer_densities: dict | None = option(None, "per-layer densities for distribution=custom, {parameter name: density}")
    backend: str = option("masked", "how sparse weights are stored (see `sparsetrain list`)")
    fuse_activations: bool = option(False, "backend=sparse: fold each ReLU that follows a sparse Linear "
                                           "in an nn.Sequential into the layer's kernel (same results, faster)")
    sparse_init: str = option("layer", "rescale the initial weights to the sparse fan-in once the first mask is "
                              "set: layer = x 1/sqrt(layer density), unit = per output unit by its active "
                              "fan-in (RigL's sparse initializers, rigl-torch), none = the model's dense init",
                              choices=SPARSE_INITS)
    structure: str = option("unstructured", "which weights are kept or dropped together: unstructured; N:M "
                            "(exactly N of every M consecutive weights along the fan-in, e.g. 2:4: every "
                            "layer at density N/M, so density must be N/M and the distribution has no "
                            "say); block:B (B x B blocks of the (out, fan-in) matrix); channel (whole "
                            "output channels). Layers that cannot take it stay dense, named in the log "
                            "(see sparsetrain.sparse.structures)")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("density", self.density, 0, 1, low_open=True)
        check_range("erk_power", self.erk_power, 0, low_open=True)
        structure = parse_structure(self.structure)
        object.__setattr__(self, "structure", structure.spec)  # one spelling per structure (run identity)
        if isinstance(structure, NM) and abs(self.density - structure.density) > 1e-9:
            raise UserError(f"structure={structure.spec} keeps exactly {structure.n} of every {structure.m} "
                            f"weights, so density must be {structure.density:g}; got density={self.density:g}")
        if self.distribution == "custom" and not self.layer_densities:
            raise UserError("distribution=custom needs layer_densities, a {parameter name: density} map")


def _refuse_replacing_backend_under_ddp(backend: str) -> None:
    """A backend that replaces the layers' parameters (``sparse``) cannot train under DDP."""
    import torch.distributed as dist

    replaces = getattr(BACKENDS.get(backend), "takes_optimizer", False)
    if replaces and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        raise UserError(f"backend {backend!r} cannot train under DistributedDataParallel (torchrun): it "
                        "replaces the layers' parameters, which DDP must hold unchanged, and forms "
                        "RigL's dense gradient on each process without DDP's averaging; use "
                        "backend=masked for multi-process training")


ALL_STRUCTURES = ("unstructured", "n:m", "block", "channel")
"""Every structure kind, for the ``structures_supported`` of a method that keeps them all."""


def selection_options(cfg: SparsityConfig) -> dict[str, Any]:
    """The keyword options of `choose_weights` held by a sparsity config."""
    return {"dense_first": cfg.dense_first, "dense_last": cfg.dense_last, "include": cfg.include,
            "exclude": cfg.exclude, "layer_types": cfg.layer_types, "tied": cfg.tied}


def _part_keys(name: str, parts: int) -> list[str]:
    """Allocation keys of a weight's logical layers: its name, or ``name[0]``, ``name[1]``, ..."""
    return [name] if parts == 1 else [f"{name}[{i}]" for i in range(parts)]


class Sparsifier(Method):
    """A fixed random mask at the chosen allocation; the base of every sparse method."""

    config_class: ClassVar[type] = SparsityConfig
    density_of_all_weights: ClassVar[bool] = True
    """True when ``density`` is the active fraction of all sparsified weights (False for DSN,
    whose density holds inside each channel group's receptive field)."""
    structures_supported: ClassVar[tuple[str, ...]] = ("unstructured",)
    """The structure kinds (`sparsetrain.sparse.STRUCTURES`) whose masks this method keeps after
    every update; any other ``structure`` is refused with one sentence. Not inherited: a subclass
    that does not set it takes only unstructured (it may score or grow differently)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "structures_supported" not in cls.__dict__:
            cls.structures_supported = ("unstructured",)

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                 **kwargs: Any) -> None:
        super().__init__(model, optimizer, **kwargs)
        cfg = self.config
        self.structure: Structure = parse_structure(getattr(cfg, "structure", "unstructured"))
        """Which weights go together (`sparsetrain.sparse.structures`); masks keep it after every update."""
        if self.structure.kind not in self.structures_supported:
            raise UserError(f"{self.name} does not take structure={self.structure.spec} (it takes: "
                            f"{', '.join(self.structures_supported)})")
        self.selection = choose_weights(model, **selection_options(cfg))
        if not self.structure.unstructured:
            self.selection = fit_selection(self.selection, self.structure)
        self.fan_in = {c.name: c.kind.fan_in_dim for c in self.selection.chosen}
        """Weight name -> its input dimension (for the structure's (out, fan-in) matrix)."""
        self.coverage = self.selection.describe(model)
        """One line: what was sparsified and what stays dense, and why (also logged)."""
        log.info(self.coverage)
        self.parts = {c.name: c.parts for c in self.selection.chosen}
        """Weight name -> number of logical layers (equal row blocks) it holds, e.g. 3 for q/k/v."""
        names = self.selection.names
        _refuse_replacing_backend_under_ddp(cfg.backend)
        self.before_attach(names)
        self.weights = attach(model, names, cfg.backend, optimizer)
        if cfg.fuse_activations:
            fuse = getattr(BACKENDS.get(cfg.backend), "fuse_activations", None)
            if fuse is None:
                raise UserError(f"fuse_activations: backend {cfg.backend!r} cannot fuse activations; "
                                "use backend=sparse")
            fuse(model)
        self.targets = self._allocate()
        self.retired = {w.name: RetiredSet(w.numel) for w in self.weights}
        """Per layer, the flat positions that were active after some topology change but are not
        now (the ITOP map is these plus the active weights; a static run keeps none)."""
        self.dead_channels = (DeadChannels(model, lambda: self.optimizer, self.dead_channel_rows)
                              if self.structure.kind == "channel" else None)
        """Under structure=channel: holds each masked channel's bias and batch norm at 0, so it
        outputs exactly 0 and `st.shrink` removes it (`sparsetrain.algorithms.dead_channels`)."""
        self.init_masks()
        self.scale_initial_weights()

    def before_attach(self, names: list[str]) -> None:
        """Runs while the model still has its plain dense layers, before the backend wraps the
        parameters ``names`` (e.g. to load dense weights from a file; the sparse backend then
        converts them)."""

    def _allocate(self) -> dict[str, int]:
        """Active weights per sparsified weight; a weight made of several logical layers (q, k,
        v) gets one allocation per part, and `part_targets` keeps them."""
        cfg = self.config
        shapes = {}
        for c in self.selection.chosen:
            for key in _part_keys(c.name, c.parts):
                shapes[key] = c.logical_shape
        options: dict[str, Any] = {}
        if cfg.distribution in ("er", "erk"):
            options["power"] = cfg.erk_power
        elif cfg.distribution == "custom":
            options["densities"] = {key: d for name, d in cfg.layer_densities.items()
                                    for key in _part_keys(name, self.parts.get(name, 1))}
        elif cfg.distribution == "scores":
            options["scores"] = {key: part for w in self.weights for key, part in
                                 zip(_part_keys(w.name, self.parts[w.name]),
                                     self.initial_scores(w).chunk(self.parts[w.name]))}
        counts = allocate(cfg.distribution, shapes, cfg.density, **options)
        if not self.structure.unstructured:  # whole groups (N:M: exactly N/M of each layer)
            counts = {key: self.structure.round_count(n, shapes[key]) for key, n in counts.items()}
        self.part_targets = {w.name: [counts[k] for k in _part_keys(w.name, self.parts[w.name])]
                             for w in self.weights}
        return {name: sum(parts) for name, parts in self.part_targets.items()}

    def by_part(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``tensors`` (weight name -> a tensor of its shape) keyed by logical layer: a fused
        weight's equal row blocks become ``name[0]``, ``name[1]``, ... (see `join_parts`)."""
        out = {}
        for name, tensor in tensors.items():
            parts = self.parts.get(name, 1)
            out.update(zip(_part_keys(name, parts), tensor.chunk(parts) if parts > 1 else (tensor,)))
        return out

    def join_parts(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The inverse of `by_part`: each weight's part tensors stacked back into one."""
        out = {}
        for w in self.weights:
            keys = _part_keys(w.name, self.parts.get(w.name, 1))
            if keys[0] in tensors:
                out[w.name] = tensors[keys[0]] if len(keys) == 1 else torch.cat([tensors[k] for k in keys])
        return out

    def part_target_counts(self) -> dict[str, int]:
        """The final active count of every logical layer, keyed as `by_part`."""
        return {key: count for w in self.weights
                for key, count in zip(_part_keys(w.name, len(self.part_targets[w.name])), self.part_targets[w.name])}

    def part_densities(self, densities: dict[str, float]) -> dict[str, float]:
        """Per-weight densities (distribution=custom) keyed as `by_part`: each part gets its weight's."""
        return {key: d for name, d in densities.items() for key in _part_keys(name, self.parts.get(name, 1))}

    def initial_scores(self, weight: SparseWeight) -> torch.Tensor:
        """Scores for distribution='scores' (magnitude of the initial weights by default)."""
        return weight.values.abs()

    def init_masks(self) -> None:
        """A uniformly random mask with exactly ``targets[name]`` active weights per layer (and
        exactly ``part_targets`` in each logical part of a fused weight); under a structure, a
        uniformly random choice of whole groups (N:M: of N weights in each group)."""
        for index, w in enumerate(self.weights):
            scores = random_scores(w.shape, generator(self.seed, 0, "init", index), w.mask.device)
            parts = self.part_targets[w.name]
            if len(parts) == 1:
                w.set_mask(self.top_structured(w.name, scores, self.targets[w.name]))
            else:
                w.set_mask(torch.cat([self.top_structured(w.name, block, k)
                                      for block, k in zip(scores.chunk(len(parts)), parts)]))

    def top_structured(self, name: str, scores: torch.Tensor, k: int,
                       allowed: torch.Tensor | None = None) -> torch.Tensor:
        """`topk_mask` under the structure: the mask of ``k`` weights (a whole number of groups,
        see `Structure.round_count`) of one logical layer of weight ``name`` (``scores`` has its
        shape) with the highest group scores (N:M: the N highest of each group), ties to the
        lower position."""
        if self.structure.unstructured:
            return topk_mask(scores, k, allowed=allowed)
        return self.structure.select(scores, k, self.fan_in[name], allowed=allowed)

    def mask_structure(self) -> Structure:
        """The structure the masks hold now: ``structure``, unless a method reaches it in steps
        (gradual pruning to N:M holds n:M, n from M down to N: `GradualPruning.mask_structure`)."""
        return self.structure

    def structure_violations(self) -> dict[str, str]:
        """Weight name -> how its mask breaks the structure it holds now (`mask_structure`;
        empty when every mask keeps it); each logical part of a fused weight is checked on its own."""
        out = {}
        structure = self.mask_structure()
        for w in self.weights:
            for i, part in enumerate(w.mask.chunk(self.parts[w.name])):
                why = structure.violation(part, self.fan_in[w.name])
                if why is not None:
                    out[w.name if self.parts[w.name] == 1 else f"{w.name}[{i}]"] = why
        return out

    @torch.no_grad()
    def scale_initial_weights(self) -> None:
        """Sparse-aware initialization (``sparse_init``, see `sparsetrain.sparse.initialization`):
        rescale each layer's initial weights to the fan-in its first mask leaves it. Called once
        the first mask is final (after `init_masks`; pruning at initialization, after `prepare`)."""
        mode = self.config.sparse_init
        if mode == "layer" and self.structure.kind == "channel":
            mode = "unit"  # a kept channel has its whole fan-in: x 1 (layer would scale it by 1/sqrt(density))
        if mode == "none":
            return
        kinds = {c.name: c.kind for c in self.selection.chosen}
        for w in self.weights:
            kind = kinds.get(w.name)
            if kind is not None and kind.name == "embedding":  # a lookup: no fan-in to correct
                continue
            scale = init_scale(w.mask, mode, kind.fan_in_dim if kind is not None else 1)
            if bool((scale != 1).any()):
                w.load_dense(w.values * scale.to(w.values.device))

    def dead_channel_rows(self) -> dict[str, torch.Tensor]:
        """Weight name -> one bool per output channel (row of its (out, fan-in) matrix): True where
        no weight of the channel is active."""
        return {w.name: ~self.structure.active_groups(w.mask, self.fan_in[w.name]) for w in self.weights}

    def hold_dead_channels(self) -> None:
        """Under structure=channel: zero the bias and batch-norm entries of the channels whose
        mask rows are all zero, and reset the batch norm of channels regrown since the last call
        (`DeadChannels.update`; a no-op before the model's first forward pass, which does it)."""
        if self.dead_channels is not None:
            self.dead_channels.update()

    def after_step(self) -> None:
        self.hold_dead_channels()

    def step(self) -> None:
        for w in self.weights:
            w.mask_grad()
        super().step()
        for w in self.weights:
            w.apply_mask()
            if self._driven_by_hook:  # the update saw unmasked gradients
                w.clear_inactive_state(self.optimizer)

    def _active_indices(self) -> dict[str, torch.Tensor]:
        """Each layer's active flat positions now (pass them to `_record_active` after a change)."""
        return {w.name: w.active_index() for w in self.weights}

    def _record_active(self, before: dict[str, torch.Tensor] | None = None) -> None:
        """Update the ITOP map after the active sets changed from ``before`` (from
        `_active_indices`) to the current ones: positions that left are retired, positions
        that came back are no longer. Without ``before`` nothing is retired."""
        if before is None:
            return
        for w in self.weights:
            old, new = before[w.name].cpu().numpy(), w.active_index().cpu().numpy()
            self._retire(w, torch.from_numpy(np.setdiff1d(old, new, assume_unique=True)),
                         torch.from_numpy(np.setdiff1d(new, old, assume_unique=True)))

    def _retire(self, w: SparseWeight, dropped: torch.Tensor, grown: torch.Tensor) -> None:
        """Retire the ascending positions ``dropped`` that left ``w``'s active set and un-retire
        the ascending positions ``grown`` that joined it."""
        self.retired[w.name].update(dropped, grown)

    @property
    def ever_active(self) -> dict[str, torch.Tensor]:
        """Per layer, a boolean tensor of the weight's shape: True where the weight has ever been
        active (since the first mask). Built on demand from the active set and `retired`."""
        out = {}
        for w in self.weights:
            seen = w.mask.clone()
            seen.view(-1)[self.retired[w.name].positions().to(seen.device)] = True
            out[w.name] = seen
        return out

    @ever_active.setter
    def ever_active(self, maps: dict[str, torch.Tensor]) -> None:
        """Set the ITOP map from dense boolean tensors (e.g. reset it to the current masks)."""
        for w in self.weights:
            retired = maps[w.name].to(w.mask.device).bool() & ~w.mask
            self.retired[w.name].set(torch.nonzero(retired.reshape(-1)).reshape(-1))

    def current_targets(self) -> dict[str, int]:
        """The number of active weights each layer must hold right now."""
        return dict(self.targets)

    def itop_rate(self) -> float:
        total = sum(w.numel for w in self.weights)
        return sum(w.active + len(self.retired[w.name]) for w in self.weights) / total

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step_count, "retired": {k: v.positions() for k, v in self.retired.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Also loads checkpoints that hold a dense ``ever_active`` map (load the model first:
        the map is split against its current masks)."""
        super().load_state_dict(state)
        if "retired" in state:
            for name, value in state["retired"].items():
                self.retired[name].set(value)
        elif "ever_active" in state:
            self.ever_active = state["ever_active"]
        if self.dead_channels is not None:
            self.dead_channels.forget()


def warn_few_updates(method: str, what: str, count: int, interval: int, last: int, total: int,
                     end_option: str) -> None:
    """Warn (`SparsetrainWarning`) when a schedule gives a run of ``total`` steps at most one
    update (every ``interval`` steps up to step ``last``), naming the options that add more."""
    if count > 1:
        return
    what += "" if count == 1 else "s"
    warnings.warn(f"{method}: {count} {what} in this run (one every {interval} optimizer steps until "
                  f"step {last} of {total}); lower update_interval, raise {end_option} or train for "
                  "more epochs", SparsetrainWarning, stacklevel=3)
