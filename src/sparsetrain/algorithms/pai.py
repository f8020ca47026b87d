"""Pruning at initialization: score the untrained network once, prune, train the fixed mask."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from typing import Any, ClassVar, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from sparsetrain.algorithms.base import ALL_STRUCTURES, Sparsifier, SparsityConfig
from sparsetrain.algorithms.pruning import (
    ALLOCATIONS, apply_masks, distribution_options, grouping_of, masks_from_scores,
)
from sparsetrain.algorithms.registry import register_method
from sparsetrain.config import check_range, option
from sparsetrain.criteria import CRITERIA, score
from sparsetrain.errors import UserError
from sparsetrain.sparse.initialization import SPARSE_INITS

ROUND_SCHEDULES = ("exponential", "linear")
BN_MODES = ("eval", "train")


@contextmanager
def scoring_mode(model: nn.Module, mode: str) -> Iterator[None]:
    """Run the block with ``model`` in ``mode`` ("eval" or "train"); afterwards the model's
    mode and every batch-norm running statistic are as before (scoring changes nothing)."""
    was_training = model.training
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    saved = [{k: v.clone() for k, v in m.named_buffers(recurse=False)} for m in norms]
    model.train(mode == "train")
    try:
        yield
    finally:
        model.train(was_training)
        with torch.no_grad():
            for m, buffers in zip(norms, saved):
                for k, v in buffers.items():
                    getattr(m, k).copy_(v)


@dataclass(frozen=True)
class PaIConfig(SparsityConfig):
    """Which criterion prunes the network before training, and how."""

    renamed: ClassVar[dict[str, str]] = {"allocation": "ranking"}

    criterion: str = option("snip", "pruning criterion (see `sparsetrain list criteria`)",
                            choices=tuple(CRITERIA.names()))
    ranking: str = option("global", "global ranking, layer-wise at `distribution`, or the global "
                             "ranking's per-layer ratios with random positions", choices=ALLOCATIONS)
    rounds: int = option(1, "pruning rounds before training; the density reaches `density` at the last")
    round_schedule: str = option("exponential", "density after round r of R: density^(r/R) "
                                 "(exponential) or 1 - (1 - density) r/R (linear)", choices=ROUND_SCHEDULES)
    prune_batches: int = option(1, "training batches joined into the one batch the criterion reads")
    temperature: float = option(200.0, "GraSP only: logits are divided by this (200 in the reference code)")
    bn_mode: str = option("eval", "mode the network is scored in: eval (batch norm uses its running "
                          "statistics, as ganguli-lab/Synaptic-Flow's prune_loop for every pruner) or train "
                          "(batch statistics, as alecwangcq/GraSP); SynFlow always scores in eval mode",
                          choices=BN_MODES)
    sparse_init: str = option("none", "rescale the kept initial weights once the mask is drawn: none (the "
                              "references of SNIP, GraSP and SynFlow train the kept weights as initialized; a "
                              "criterion keeps chosen weights, not a random sample, and x 1/sqrt(density) made "
                              "GraSP collapse to chance on MNIST-1D), layer or unit (as for random masks)",
                              choices=SPARSE_INITS)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("rounds", self.rounds, 1)
        check_range("prune_batches", self.prune_batches, 1)
        check_range("temperature", self.temperature, 0, low_open=True)


class PrunesBeforeTraining:
    """Mixin for a `Sparsifier` whose masks are drawn in `prepare` from training batches: dense
    until then, `step()` before `prepare` is an error, and the drawn targets are saved."""

    needs_data = True

    def __init__(self, model, optimizer=None, **kwargs: Any) -> None:
        super().__init__(model, optimizer, **kwargs)
        self.prepared = False

    def init_masks(self) -> None:
        """Dense until `prepare` prunes."""
        for w in self.weights:
            w.set_mask(torch.ones_like(w.mask))

    def _finish_prepare(self) -> None:
        """Call at the end of `prepare`: the masks now are the targets and the ITOP map, and the
        initial weights are rescaled to them (``sparse_init``)."""
        self.targets = {w.name: w.active for w in self.weights}
        self.ever_active = {w.name: w.mask.clone() for w in self.weights}
        self.scale_initial_weights()  # the weights are still the initial ones; the mask is now final
        self.hold_dead_channels()
        self.prepared = True

    def step(self) -> None:
        if not self.prepared:
            raise UserError(f"{self.name} prunes before training: call prepare(batches) once before "
                            "the first step (the Trainer does this)")
        super().step()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "prepared": self.prepared, "targets": dict(self.targets)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.prepared = bool(state.get("prepared", True))
        self.targets = {k: int(v) for k, v in state.get("targets", self.targets).items()}


@register_method("pai", help="prune once at initialization with any criterion, then train the fixed mask")
class PaI(PrunesBeforeTraining, Sparsifier):
    """Pruning at initialization with any registered criterion and allocation.

    The network starts dense. `prepare(batches)` (called by the Trainer before the first
    step) scores it on ``prune_batches`` training batches and prunes to ``density`` in
    ``rounds`` rounds (each round re-scores the network pruned so far and keeps the top of
    what is left); training then keeps the mask fixed. `step()` before `prepare` is an error.
    ``snip``, ``grasp`` and ``synflow`` are this method with the paper's criterion and rounds.

    The network is scored in eval mode by default (``bn_mode``), whatever mode it is in
    (the Trainer keeps it in train mode): batch norm then normalises with its running
    statistics, as ``prune_loop`` of ganguli-lab/Synaptic-Flow does for SNIP, GraSP and
    SynFlow. ``bn_mode="train"`` scores with batch statistics, as alecwangcq/GraSP does;
    the two keep different weights wherever batch norm follows a pruned layer. Either
    way the model's mode and running statistics are left as they were.

    With a ``structure`` the criterion's per-weight scores are summed over each group (a
    saliency is additive: the sum estimates removing the whole group, and keeps GraSP's sign);
    ``ranking`` is as without one: global ranking compares groups by their mean score, each
    layer-wise count is rounded to whole groups. N:M keeps the N highest-scored weights of
    every M; with several ``rounds`` it passes through n:M masks, n = round(d_r · M), down to N.
    """

    name = "pai"
    config_class: ClassVar[type] = PaIConfig
    structures_supported = ALL_STRUCTURES

    def round_density(self, r: int) -> float:
        """Density after round ``r`` of ``rounds`` (the last round reaches ``density``)."""
        cfg = self.config
        if cfg.round_schedule == "exponential":
            return cfg.density ** (r / cfg.rounds)
        return 1 - (1 - cfg.density) * r / cfg.rounds

    def _batch(self, batches: Iterable | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        taken = list(islice(iter(batches), self.config.prune_batches)) if batches is not None else []
        if not taken:
            return None
        return torch.cat([x for x, _ in taken]), torch.cat([y for _, y in taken])

    def prepare(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        if self.prepared:
            return
        cfg = self.config
        batch = self._batch(batches)
        if batch is None and (CRITERIA.info(cfg.criterion)["needs_batch"] or cfg.criterion == "synflow"):
            raise UserError(f"{self.name} with criterion {cfg.criterion!r} needs training batches in prepare()")
        own = {"temperature": cfg.temperature} if "temperature" in CRITERIA.options(cfg.criterion) else {}
        grouping = grouping_of(self, "sum")
        for r in range(1, cfg.rounds + 1):
            step = None if grouping is None else grouping.at_density(self.round_density(r))
            if grouping is not None and step is None:  # N:M: this round keeps all M
                continue
            with scoring_mode(self.model, cfg.bn_mode):
                scores = score(cfg.criterion, self.model, batch, weights=self.weights,
                               loss_fn=F.cross_entropy, seed=self.seed * 100_003 + r, **own)
            masks = masks_from_scores(scores, self.round_density(r), allocation=cfg.ranking,
                                      distribution=cfg.distribution, allowed={w.name: w.mask for w in self.weights},
                                      seed=self.seed, step=r, grouping=step, **distribution_options(cfg, scores))
            apply_masks(self.weights, masks, self.optimizer)
        self._finish_prepare()


@dataclass(frozen=True)
class SNIPConfig(PaIConfig):
    criterion: str = option("snip", "pruning criterion (see `sparsetrain list criteria`)",
                            choices=tuple(CRITERIA.names()))


@register_method("snip", help="prune at init by |g * w| on a batch, global ranking (Lee et al. 2019)")
class SNIP(PaI):
    """Lee et al. 2019, "SNIP: Single-shot Network Pruning based on Connection Sensitivity",
    ICLR: one batch, one round, keep the globally highest |g ⊙ w|, scored in eval mode as
    ganguli-lab/Synaptic-Flow (``Pruners/pruners.py`` SNIP under ``prune_loop``)."""

    name = "snip"
    structures_supported = ALL_STRUCTURES
    config_class: ClassVar[type] = SNIPConfig


@dataclass(frozen=True)
class GraSPConfig(PaIConfig):
    criterion: str = option("grasp", "pruning criterion (see `sparsetrain list criteria`)",
                            choices=tuple(CRITERIA.names()))


@register_method("grasp", help="prune at init keeping gradient flow, removes highest -theta*Hg (Wang et al. 2020)")
class GraSP(PaI):
    """Wang et al. 2020, "Picking Winning Tickets Before Training by Preserving Gradient
    Flow", ICLR: one round, global ranking, removes the weights with the highest −θ ⊙ Hg
    (see `sparsetrain.criteria.grasp`), logits at temperature 200 as in the reference code
    (alecwangcq/GraSP, ``pruner/GraSP.py``). Scored in eval mode by default as
    ganguli-lab/Synaptic-Flow; ``bn_mode="train"`` scores with batch statistics as alecwangcq's."""

    name = "grasp"
    structures_supported = ALL_STRUCTURES
    config_class: ClassVar[type] = GraSPConfig


@dataclass(frozen=True)
class SynFlowConfig(PaIConfig):
    criterion: str = option("synflow", "pruning criterion (see `sparsetrain list criteria`)",
                            choices=tuple(CRITERIA.names()))
    rounds: int = option(100, "pruning rounds before training; the density reaches `density` at the last")


@register_method("synflow", help="data-free iterative synaptic-flow pruning at init, 100 rounds (Tanaka et al. 2020)")
class SynFlow(PaI):
    """Tanaka et al. 2020, "Pruning neural networks without any data by iteratively conserving
    synaptic flow", NeurIPS: 100 rounds, density^(r/100) after round r, global ranking, each
    round re-scores the pruned network (as ``prune_loop`` in ganguli-lab/Synaptic-Flow)."""

    name = "synflow"
    structures_supported = ALL_STRUCTURES
    config_class: ClassVar[type] = SynFlowConfig
