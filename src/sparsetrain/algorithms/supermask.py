"""Untrained subnetworks: learn which weights to keep, never the weights themselves."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from sparsetrain.algorithms.base import Sparsifier, SparsityConfig
from sparsetrain.algorithms.registry import register_method
from sparsetrain.config import option
from sparsetrain.errors import UserError
from sparsetrain.sparse import SparseWeight, generator, topk_mask

SCORES_SUFFIX, INIT_SUFFIX = "_scores", "_init"
INITS = ("signed_constant", "kaiming_normal", "kaiming_uniform", "keep")


@dataclass(frozen=True)
class SupermaskConfig(SparsityConfig):
    """Edge-popup's options; the optimizer you pass trains the scores in place of the weights."""

    distribution: str = option("uniform", "layer-wise density allocation (the reference keeps the same "
                               "fraction k in every layer)", choices=("uniform", "er", "erk", "custom"))
    init: str = option("signed_constant", "the frozen weights: signed_constant (±gain/sqrt(fan_in)), "
                       "kaiming_normal, kaiming_uniform (U(±gain·sqrt(3/fan_in))), or keep (the model's own "
                       "initialization)", choices=INITS)
    scale_fan: bool = option(False, "scale fan_in by the layer density before computing the init's std "
                             "(the paper's scaled variant)")
    train_other: bool = option(False, "let the optimizer also train biases, norms and dense layers (the "
                               "reference trains nothing but the scores)")


def frozen_init(weight: torch.Tensor, kind: str, density: float, gen: torch.Generator) -> torch.Tensor:
    """The frozen weight edge-popup searches in (Ramanujan et al. 2020, section 4.1).

    signed_constant: ``sign(weight) * gain / sqrt(fan)``; kaiming_normal: ``N(0, (gain/sqrt(fan))^2)``;
    kaiming_uniform: ``U(-b, b)`` with ``b = sqrt(3) * gain / sqrt(fan)``; with gain = sqrt(2) (ReLU) and fan = fan_in, times ``density`` for the scaled variants (pass
    density=1 otherwise); keep: ``weight`` unchanged."""
    if kind == "keep":
        return weight.detach().clone()
    fan = nn.init._calculate_correct_fan(weight, "fan_in") * density
    std = nn.init.calculate_gain("relu") / math.sqrt(fan)
    if kind == "signed_constant":
        return weight.detach().sign() * std
    if kind == "kaiming_uniform":
        return (torch.rand(weight.shape, generator=gen) * 2 - 1).to(weight) * (math.sqrt(3.0) * std)
    noise = torch.randn(weight.shape, generator=gen, dtype=torch.float32).to(weight)
    return noise * std


@register_method("edge-popup", help="untrained subnetworks: learn top-k scores over frozen random "
                 "weights (Ramanujan et al. 2020)")
class EdgePopup(Sparsifier):
    """Ramanujan et al. 2020, "What's Hidden in a Randomly Weighted Neural Network?", CVPR
    (reference: allenai/hidden-networks, ``utils/conv_type.py`` ``SubnetConv``); the untrained
    sparse subnetworks of Huang et al. 2022 (LoG) use the same search.

    Every sparse weight keeps its initial value forever. Each has a score (Kaiming-uniform
    initialized, a=sqrt(5), as the reference); the forward pass uses ``init * mask`` where the
    mask holds the ``k`` largest ``|score|`` of the layer, and the straight-through gradient of
    a score is ``dL/dw_eff * init * sign(score)`` at every position, pruned or not. The
    optimizer you pass trains the scores instead of the weights (they take the weights' places
    in its parameter groups, so its learning rate, momentum, weight decay and schedule apply,
    as in the reference where only the scores require gradients); biases and norms stay at
    their initialization unless ``train_other``. Scores and frozen weights are module buffers
    ``<param>_scores`` and ``<param>_init``, saved with the model.
    """

    name = "edge-popup"
    runs_from_hook = False  # the scores get their gradient before the optimizer steps them
    config_class: ClassVar[type] = SupermaskConfig
    trains_weights: ClassVar[bool] = False

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, **kwargs: Any) -> None:
        if optimizer is None:
            raise UserError("edge-popup trains scores: pass the optimizer that should train them")
        super().__init__(model, optimizer, **kwargs)
        self._swap_into_optimizer()

    def init_masks(self) -> None:
        """Freeze the initial weights, draw the scores, and keep the top-k scores per layer."""
        cfg = self.config
        for index, w in enumerate(self.weights):
            density = self.targets[w.name] / w.numel if cfg.scale_fan else 1.0
            init = frozen_init(w.values.float(), cfg.init, density, generator(self.seed, 0, "init", index))
            scores = torch.empty(w.shape, device=init.device)
            self.init_scores(scores, generator(self.seed, 0, "scores", index))
            w.module.register_buffer(_leaf(w) + SCORES_SUFFIX, scores)
            w.module.register_buffer(_leaf(w) + INIT_SUFFIX, init)
            w.set_mask(torch.zeros(w.shape, dtype=torch.bool))
        self.select()

    def scale_initial_weights(self) -> None:
        """Nothing: the frozen weights are the init (``scale_fan`` is the supermask's own scaling)."""

    def init_scores(self, scores: torch.Tensor, gen: torch.Generator) -> None:
        """Kaiming-uniform with a=sqrt(5) (bound 1/sqrt(fan_in)), as the reference."""
        nn.init.kaiming_uniform_(scores, a=math.sqrt(5), generator=gen)

    def ranking(self, w: SparseWeight) -> torch.Tensor:
        """What the top-k ranks: |score|."""
        return self.scores(w).abs()

    def score_grad(self, w: SparseWeight, grad: torch.Tensor) -> torch.Tensor:
        """The straight-through gradient of the scores from ``grad`` = dL/d(effective weight):
        through the mask as identity and through |score| (the ranking)."""
        return grad * self.frozen(w) * self.scores(w).sign()

    def select(self) -> None:
        """Every layer's mask: its own top-k ``ranking`` (``targets`` entries)."""
        for w in self.weights:
            self._set_mask(w, topk_mask(self.ranking(w), self.targets[w.name]))

    def scores(self, w: SparseWeight) -> torch.Tensor:
        return getattr(w.module, _leaf(w) + SCORES_SUFFIX)

    def frozen(self, w: SparseWeight) -> torch.Tensor:
        return getattr(w.module, _leaf(w) + INIT_SUFFIX)

    def _swap_into_optimizer(self) -> None:
        """Put each weight's scores where the weight was in the optimizer's parameter groups and
        take out everything else (unless ``train_other``)."""
        swap = {id(w.parameter): self.scores(w) for w in self.weights}
        for group in self.optimizer.param_groups:
            kept = []
            for p in group["params"]:
                if id(p) in swap:
                    kept.append(swap[id(p)])
                elif self.config.train_other:
                    kept.append(p)
                else:
                    p.requires_grad_(False)
            group["params"] = kept
        missing = [w.name for w in self.weights
                   if not any(s is self.scores(w) for g in self.optimizer.param_groups for s in g["params"])]
        if missing:
            raise UserError(f"edge-popup: the optimizer does not hold the weights {missing}; build it over "
                            "model.parameters() before creating the method")
        for w in self.weights:
            w.want_dense_grad(True)

    @torch.no_grad()
    def _set_mask(self, w: SparseWeight, mask: torch.Tensor) -> None:
        """Mask ``mask`` (ties broken to the lower position by the caller); weights = init there."""
        if not torch.equal(mask.to(w.mask.device), w.mask):
            w.set_mask(mask)
            w.load_dense(self.frozen(w))

    @torch.no_grad()
    def step(self) -> None:
        """Straight-through score gradients, one optimizer step on the scores, new top-k masks."""
        for w in self.weights:
            grad = w.dense_grad()
            scores = self.scores(w)
            scores.grad = None if grad is None else self.score_grad(w, grad.to(scores))
            w.parameter.grad = None
        self.optimizer.step()
        self.step_count += 1
        before = self._active_indices()
        self.select()
        for w in self.weights:
            w.want_dense_grad(True)
        self._record_active(before)


def _leaf(w: SparseWeight) -> str:
    """The weight's attribute name on its module ("weight")."""
    return w.name.rpartition(".")[2]
