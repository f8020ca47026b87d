"""Pruning after training: one-shot (or a few rounds of) pruning of a trained model, then fine-tuning.

A method here prunes the model's trained weights when it is built (or the weights of
``checkpoint``), so the training that follows is fine-tuning of a fixed mask:

- ``prune-global``: global magnitude (one threshold over all layers; Han et al. 2015);
- ``prune-layer``: magnitude within each layer at a layer-wise distribution (uniform, ERK, ...);
- ``prune-lamp``: global ranking of LAMP scores (Lee et al., ICLR 2021);
- ``prune-dp``: layer-adaptive densities by dynamic programming over output distortion
  (Xu et al., ICCV 2023; see `layer_dp`), needs calibration inputs (`calibrate`);
- ``imp``: one level of iterative magnitude pruning for lottery tickets (Frankle & Carbin
  2019): global magnitude, then the weights are rewound (``rewind_to``).

With ``rounds`` > 1, round r of R prunes to density ``density ** (r / R)`` at step
(r - 1) / R of training, and the steps in between fine-tune (iterative pruning as in
Han et al. 2015 and Xu et al. 2023).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from itertools import islice
from typing import Any, ClassVar, Collection, Iterable, Sequence

import torch
from torch import nn

from sparsetrain import criteria
from sparsetrain.algorithms.base import ALL_STRUCTURES, Sparsifier, SparsityConfig
from sparsetrain.algorithms.layer_dp import CURVES, distortion_table, dp_counts, dp_masks, level_counts
from sparsetrain.algorithms.pruning import apply_masks, distribution_options, grouping_of, masks_from_scores
from sparsetrain.algorithms.registry import register_method
from sparsetrain.config import check_range, option
from sparsetrain.errors import UserError, load_error
from sparsetrain.sparse import SparseWeight, dense_model, dense_state

REWIND_INIT = "init"


@dataclass(frozen=True)
class PruneConfig(SparsityConfig):
    """Which trained weights are pruned, how often, and where training restarts from."""

    distribution: str = option("uniform", "layer-wise density allocation (prune-layer only)",
                               choices=("uniform", "er", "erk", "custom"))
    checkpoint: str | None = option(None, "trained weights to prune: a Trainer checkpoint or a state_dict file, "
                                    "read with weights_only (default: the model's current weights)")
    rewind_to: str | None = option(None, "weights training restarts from after the prune: none = the pruned "
                                   "trained weights (fine-tuning, learning-rate rewinding); 'init' = the model's "
                                   "weights before the checkpoint was loaded; or a weights file (rewinding to step k)")
    rounds: int = option(1, "pruning rounds spread evenly over training, each to density ** (r / rounds)")
    dp_levels: int = option(100, "prune-dp: density levels per layer in the distortion table")
    dp_calibration: int = option(1024, "prune-dp: training inputs in the calibration set")
    dp_curve: str = option("worst", "prune-dp: layer distortion = worst case over calibration samples of the "
                           "per-sample output MSE (the reference's --worst_case_curve, used by all its published "
                           "commands) or the mean over samples", choices=CURVES)
    sparse_init: str = option("none", "pruning after training keeps the trained (or rewound) weights as they are",
                              choices=("none",))

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("rounds", self.rounds, 1)
        check_range("dp_levels", self.dp_levels, 1)
        check_range("dp_calibration", self.dp_calibration, 1)
        if self.rewind_to not in (None, REWIND_INIT) and not Path(self.rewind_to).is_file():
            raise UserError(f"rewind_to must be 'init' or an existing weights file; {self.rewind_to!r} does not exist")
        if self.checkpoint is not None and not Path(self.checkpoint).is_file():
            raise UserError(f"checkpoint {self.checkpoint!r} does not exist")


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A model state_dict from ``path``: a Trainer checkpoint (its "model" entry) or a plain
    state_dict, loaded with ``weights_only=True``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file
        raise load_error("weights file", path, exc) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"weights file {str(path)!r} holds no model state_dict")
    return state


MASK_SUFFIX = "_mask"
"""A dense checkpoint stores the mask of parameter ``p`` as the boolean entry ``p_mask``."""


def _storage_keys(model: nn.Module, weight: SparseWeight) -> set[str]:
    """State-dict keys of the layer holding ``weight`` in its own format (all but ``bias``)."""
    module_name = weight.name.rpartition(".")[0]
    prefix = module_name + "." if module_name else ""
    module = model.get_submodule(module_name)
    own = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
    return {prefix + k for k, _ in own if k != "bias"}


@torch.no_grad()
def load_weights(model: nn.Module, state: dict[str, torch.Tensor], *, floats_only: bool = False,
                 weights: Sequence[SparseWeight] = (), masks_of: Collection[str] = ()) -> None:
    """Copy ``state`` (a plain, masked or sparse-backend model's state_dict, see `dense_state`)
    into ``model``.

    Entries the model lacks are ignored, and the model's boolean buffers (masks) may be
    absent from ``state`` (a dense parent has none); the mask ``<param>_mask`` of a parameter
    named in ``masks_of`` that the model lacks is registered as a buffer beside it (so a
    backend attached next starts from it). ``floats_only`` copies only floating-point entries (weights, not masks). A weight of
    ``weights`` the model does not hold as a dense parameter (sparse backend) is written
    through `SparseWeight.load_dense` at its active positions.
    """
    own = model.state_dict()
    through = {w.name: w for w in weights if w.name not in own}
    shapes = {**{n: p.shape for n, p in model.named_parameters()}, **{n: w.shape for n, w in through.items()}}
    state = dense_state(state, shapes)  # a sparse-backend checkpoint in the masked format
    stored = set().union(*(_storage_keys(model, w) for w in through.values()))
    missing = [k for k, v in own.items() if k not in state and v.dtype != torch.bool and k not in stored]
    missing += [n for n in through if n not in state]
    if missing:
        raise UserError(f"the weights do not fit this model: {missing[0]!r} is missing")
    for key, value in state.items():
        if key in through:
            if through[key].shape != value.shape:
                raise UserError(f"the weights do not fit this model: {key!r} has shape "
                                f"{tuple(value.shape)}, the model {tuple(through[key].shape)}")
            through[key].load_dense(value)
            continue
        if key not in own and not floats_only and key.endswith(MASK_SUFFIX) and key[: -len(MASK_SUFFIX)] in masks_of:
            _register_mask(model, key, value)
            continue
        if key not in own or (floats_only and not own[key].is_floating_point()):
            continue
        if own[key].shape != value.shape:
            raise UserError(f"the weights do not fit this model: {key!r} has shape "
                            f"{tuple(value.shape)}, the model {tuple(own[key].shape)}")
        own[key].copy_(value)


def _register_mask(model: nn.Module, key: str, mask: torch.Tensor) -> None:
    """Register ``mask`` as the buffer ``key`` (``<module>.<param>_mask``) if that parameter exists."""
    module_name, _, buffer = key.rpartition(".")
    param = buffer[: -len(MASK_SUFFIX)]
    try:
        module = model.get_submodule(module_name)
    except AttributeError:
        return
    tensor = module._parameters.get(param)
    if tensor is None:
        return
    if tensor.shape != mask.shape:
        raise UserError(f"the weights do not fit this model: {key!r} has shape "
                        f"{tuple(mask.shape)}, the model {tuple(tensor.shape)}")
    module.register_buffer(buffer, mask.to(device=tensor.device, dtype=torch.bool).clone())


class AfterTraining(Sparsifier):
    """Base: prune trained weights by `scores` with `ranking`, then fine-tune the fixed mask.

    With a ``structure`` each prune keeps whole groups ranked by ``group_scores`` (the L2 norm
    of their magnitudes by default), each layer's count (``layer``) or the global prefix
    rounded to whole groups; N:M keeps the N largest of every M (with several ``rounds``,
    through n:M masks down to N, see `Grouping.at_density`)."""

    config_class: ClassVar[type] = PruneConfig
    ranking: ClassVar[str] = "global"  # "global": one ranking over all layers; "layer": per layer
    criterion: ClassVar[str] = "magnitude"  # a name in `sparsetrain.criteria.CRITERIA`
    grouped_criterion: ClassVar[str] = "magnitude"
    """The per-weight criterion a structured prune aggregates per group."""
    group_scores: ClassVar[Any] = "norm"
    """How a structured prune scores a group (see `sparsetrain.algorithms.pruning.GROUP_SCORES`)."""

    def before_attach(self, names: list[str]) -> None:
        """Load ``checkpoint`` into the still dense model (with its masks, if it has any: the
        backend attached next starts from them), remembering the weights before for rewinding."""
        self.start = {k: v.clone() for k, v in self.model.state_dict().items() if v.is_floating_point()}
        if self.config.checkpoint is not None:
            load_weights(self.model, read_weights(self.config.checkpoint), masks_of=names)

    def init_masks(self) -> None:
        cfg = self.config
        if cfg.rounds > 1 and not self.total_steps:
            raise UserError(f"{self.name} with rounds > 1 needs total_steps to spread the rounds over training")
        self.inputs: torch.Tensor | None = None
        self.round = 0
        self.rewind_state = None
        if cfg.rewind_to is not None:
            self.rewind_state = self.start if cfg.rewind_to == REWIND_INIT else read_weights(cfg.rewind_to)
        self.start = None
        self.prune_round()

    def rewind(self) -> None:
        """After the first prune: restart from the ``rewind_to`` weights under the new mask."""
        if self.rewind_state is not None:
            load_weights(self.model, self.rewind_state, floats_only=True, weights=self.weights)
            for w in self.weights:
                w.apply_mask()
            self.rewind_state = None

    # --- what a variant overrides --------------------------------------------------------
    def scores(self) -> dict[str, torch.Tensor]:
        """Higher = kept: the registered criterion `criterion` over the sparse weights
        (`grouped_criterion` under a structure, aggregated per group by `group_scores`)."""
        structured = grouping_of(self) is not None
        return criteria.score(self.grouped_criterion if structured else self.criterion, self.model,
                              weights=self.weights)

    # --- the fixed order: density of the round -> scores -> top-k -> masks -> optimizer state
    def round_density(self, r: int) -> float:
        return self.config.density ** (r / self.config.rounds)

    @torch.no_grad()
    def prune_round(self) -> None:
        """Prune to the next round's density (among the currently active weights)."""
        density = self.round_density(self.round + 1)
        total = round(density * sum(w.numel for w in self.weights))
        masks = self.masks_for(density, total)
        if masks is None:  # waits for calibration inputs
            return
        before = self._active_indices()
        apply_masks(self.weights, masks, self.optimizer)
        self.targets = {w.name: w.active for w in self.weights}
        if self.round == 0:  # the dense weights before the first prune do not count as explored
            self.ever_active = {w.name: w.mask.clone() for w in self.weights}
        else:
            self._record_active(before)
        self.round += 1
        if self.round == 1:
            self.rewind()

    def masks_for(self, density: float, total: int) -> dict[str, torch.Tensor] | None:
        """Masks keeping ``total`` = round(density * N) weights among the active ones (whole
        groups of the structure, the total rounded to them)."""
        grouping = grouping_of(self, self.group_scores)
        step = None if grouping is None else grouping.at_density(density)
        if grouping is not None and step is None:  # N:M at this density keeps all M
            return {w.name: w.mask.clone() for w in self.weights}
        return masks_from_scores(self.scores(), density, allocation=self.ranking,
                                 distribution=self.config.distribution,
                                 allowed={w.name: w.mask.clone() for w in self.weights}, grouping=step,
                                 **distribution_options(self.config))

    def step(self) -> None:
        if self.round == 0:
            raise UserError(f"{self.name} needs calibration inputs: call prepare(batches) once before "
                            "the first step (the Trainer does this)")
        super().step()
        due = self.round * self.total_steps // self.config.rounds if self.total_steps else None
        if self.round < self.config.rounds and due is not None and self.step_count >= due:
            self.prune_round()

    def prepare(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        """Calibration batches (read by prune-dp only; the others prune when built)."""

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "round": self.round}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.round = int(state["round"])
        self.targets = {w.name: w.active for w in self.weights}


@register_method("prune-global", help="prune a trained model by global magnitude, then fine-tune (Han et al. 2015)")
class GlobalMagnitude(AfterTraining):
    """Han et al. 2015, "Learning both Weights and Connections for Efficient Neural Networks":
    keep the largest |w| over all pruned layers; the fixed mask is then fine-tuned."""

    name = "prune-global"
    structures_supported = ALL_STRUCTURES


@register_method("prune-layer", help="prune a trained model by magnitude within each layer at a distribution")
class LayerMagnitude(AfterTraining):
    """Layer-wise magnitude pruning: each layer keeps its largest |w| at the density the
    ``distribution`` gives it (uniform by default), then fine-tunes."""

    name = "prune-layer"
    structures_supported = ALL_STRUCTURES
    ranking = "layer"


@register_method("prune-lamp", help="prune a trained model by global LAMP scores, then fine-tune (Lee et al. 2021)")
class LAMP(AfterTraining):
    """Lee et al. 2021, "Layer-adaptive Sparsity for the Magnitude-based Pruning", ICLR: rank
    every weight globally by its LAMP score (`sparsetrain.criteria.lamp`), then fine-tune.

    With block or channel structure, groups are ranked globally by Torch-Pruning's group LAMP
    (`sparsetrain.criteria.lamp_groups`: squared group norms, LAMP-normalised within each
    layer). With N:M, LAMP is monotone in |w| inside a layer, so the N kept of every M are the
    N largest magnitudes: N:M LAMP equals N:M magnitude pruning."""

    name = "prune-lamp"
    structures_supported = ALL_STRUCTURES
    criterion = "lamp"
    group_scores = staticmethod(criteria.lamp_groups)


@register_method("prune-dp", help="layer-adaptive densities by DP over output distortion (Xu et al. 2023)")
class LayerAdaptiveDP(AfterTraining):
    """Xu et al. 2023, "Efficient Joint Optimization of Layer-Adaptive Weight Pruning in Deep
    Neural Networks", ICCV; reference code Akimoto-Cris/RD_PRUNE. Each layer's output-distortion
    curve (by default the worst per-sample MSE of the network output over the calibration
    inputs, as the reference's published ``--worst_case_curve`` commands; ``dp_curve="mean"``
    for the mean, when only that layer is magnitude-pruned, at ``dp_levels`` + 1 densities) feeds an exact DP over layers for the densities that minimise the summed
    distortion under the active-weight budget (`layer_dp`); each layer then keeps its
    largest |w|. The calibration set is the first ``dp_calibration`` training inputs given to
    `prepare` (the Trainer calls it; in your own loop call ``method.prepare(iter(loader))``)."""

    name = "prune-dp"
    structures_supported = ("unstructured",)  # its distortion table prunes single weights per level

    needs_data = True

    def prepare(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        """Join training batches until ``dp_calibration`` inputs, then prune if not yet pruned
        (after a resume this only restores the calibration set for later rounds)."""
        if self.inputs is not None or batches is None:
            return
        inputs, seen = [], 0
        for x, _ in islice(iter(batches), 10_000):
            inputs.append(x)
            seen += len(x)
            if seen >= self.config.dp_calibration:
                break
        if inputs:
            self.calibrate(torch.cat(inputs)[: self.config.dp_calibration])

    def calibrate(self, inputs: torch.Tensor) -> None:
        """Prune using ``inputs`` as the calibration set (once)."""
        self.inputs = inputs.detach()
        if self.round == 0:
            self.prune_round()

    def masks_for(self, density: float, total: int) -> dict[str, torch.Tensor] | None:
        if self.inputs is None:
            return None
        net = dense_model(self.model, self.weights)  # the sparse backend's layers made dense on a copy
        params = {w.name: net.get_parameter(w.name) for w in self.weights}
        counts = {w.name: level_counts(w.numel, w.active, self.config.dp_levels) for w in self.weights}
        allowed = {w.name: w.mask.clone() for w in self.weights}
        table = distortion_table(net, params, self.inputs, counts, allowed, curve=self.config.dp_curve)
        chosen = dp_counts(table, counts, total)
        return dp_masks({w.name: w.values for w in self.weights}, chosen, total, allowed)


@register_method("imp", help="one level of iterative magnitude pruning with rewinding (lottery tickets)")
class IMP(AfterTraining):
    """Frankle & Carbin 2019, "The Lottery Ticket Hypothesis"; Frankle et al. 2020 (rewinding
    to step k); Renda et al. 2020 (learning-rate rewinding). One level: global magnitude
    pruning of the previous level's trained weights (``checkpoint``) to ``density``, then
    the weights are rewound (``rewind_to``: 'init', a weights file, or none = keep the trained
    weights and retrain with the full schedule). `experiments.lottery` chains the levels."""

    name = "imp"
    structures_supported = ALL_STRUCTURES
