"""Weight averaging of sparse networks: Lottery Pools and sparse model soups.

Models are handled as state_dicts. Floating-point entries (weights, biases, batch-norm
statistics) are averaged; every other entry (boolean masks, counters) is taken from the
first model. The caller supplies ``evaluate(model) -> validation accuracy`` and, where the
model has batch norm, ``recalibrate(model)`` (e.g. ``torch.optim.swa_utils.update_bn``
over the training data), so nothing here depends on the training loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from sparsetrain.errors import UserError
from sparsetrain.sparse import SparseWeight, topk_mask

State = dict[str, torch.Tensor]
DEFAULT_ALPHAS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
"""The interpolation grid of the Lottery Pools README commands (``--interpolation_value_list``)."""
FINE_ALPHAS = tuple(round(0.05 * i, 2) for i in range(1, 20))
"""0.05, 0.10, ..., 0.95: the finer grid used before (19 values)."""


def interpolate(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], alpha: float) -> State:
    """``(1 - alpha) * a + alpha * b`` for floating entries; other entries from ``a``."""
    return {k: torch.lerp(v, b[k].to(v), alpha) if v.is_floating_point() else v.clone()
            for k, v in a.items()}


def uniform_soup(states: Sequence[Mapping[str, torch.Tensor]]) -> State:
    """The element-wise mean of ``states`` (Wortsman et al. 2022, "Model soups", uniform soup).

    The states must share their non-floating entries (one mask): a soup of sparse runs keeps
    that mask, and averaging weights that are 0 outside it keeps them 0.
    """
    if not states:
        raise UserError("a soup needs at least one model")
    first = states[0]
    for other in states[1:]:
        for k, v in first.items():
            if not v.is_floating_point() and not torch.equal(v, other[k]):
                raise UserError(f"soup ingredients must share one mask; {k!r} differs")
    return {k: torch.stack([s[k].to(v) for s in states]).mean(0) if v.is_floating_point() else v.clone()
            for k, v in first.items()}


@torch.no_grad()
def recalibrate_bn(model: nn.Module, inputs: Iterable[torch.Tensor]) -> None:
    """Re-estimate batch-norm statistics as the sparse-model-soups reference code does
    (ZIB-IOL/SMS, ``BaseRunner.recalibrate_bn``): reset every batch norm's running
    statistics (mean 0, variance 1), then forward ``inputs`` (the training data, unshuffled,
    in training batches) in train mode, so each batch norm updates with its own momentum
    (0.1 by default: an exponential average starting from the reset values, not a
    cumulative one). The model's mode is restored afterwards. No-op without batch norm."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for m in norms:
        m.reset_running_stats()
    was_training = model.training
    model.train()
    for x in inputs:
        model(x)
    model.train(was_training)


def _load(model: nn.Module, state: Mapping[str, torch.Tensor],
          recalibrate: Callable[[nn.Module], None] | None) -> None:
    model.load_state_dict(state)
    if recalibrate is not None:
        recalibrate(model)


def greedy_soup(states: Sequence[Mapping[str, torch.Tensor]], model: nn.Module,
                evaluate: Callable[[nn.Module], float],
                recalibrate: Callable[[nn.Module], None] | None = None) -> tuple[State, list[int]]:
    """Greedy soup (Wortsman et al. 2022; sparse: Zimmer et al. 2024, ZIB-IOL/SMS
    ``GreedySoup``): sort the ingredients by their own validation accuracy, start from the
    best, and add each next one if the uniform soup of the chosen ones does not lose
    validation accuracy. With ``recalibrate`` (e.g. `recalibrate_bn` on training data) every
    ingredient and every mix is recalibrated before it is evaluated, and so is the final
    soup. Returns the soup (as ``model`` now holds it) and the chosen indices."""
    scores = []
    for s in states:
        _load(model, s, recalibrate)
        scores.append(evaluate(model))
    order = sorted(range(len(states)), key=lambda i: -scores[i])
    chosen = [order[0]]
    best = scores[order[0]]
    for i in order[1:]:
        _load(model, uniform_soup([states[j] for j in chosen + [i]]), recalibrate)
        accuracy = evaluate(model)
        if accuracy >= best:
            chosen.append(i)
            best = accuracy
    _load(model, uniform_soup([states[j] for j in chosen]), recalibrate)
    return {k: v.clone() for k, v in model.state_dict().items()}, chosen


def neighbour_order(index: int, count: int, limit: int | None = None) -> list[int]:
    """Ticket indices by distance from ``index``: index-1, index+1, index-2, index+2, ...
    (the candidate order of the Lottery Pools reference code), at most ``limit`` of them."""
    order = []
    for step in range(1, count):
        order += [i for i in (index - step, index + step) if 0 <= i < count]
    return order[:limit] if limit is not None else order


@dataclass
class PoolsResult:
    state: State
    val_acc: float
    ticket_val_acc: float
    accepted: list[tuple[int, float]] = field(default_factory=list)  # (candidate index, alpha)


@torch.no_grad()
def reprune(weights: Sequence[SparseWeight], count: int) -> None:
    """Keep the ``count`` largest |w| over ``weights`` (one global ranking) as their new masks,
    keeping the values at the positions kept."""
    values = [w.values.clone() for w in weights]
    flat = torch.cat([v.abs().reshape(-1).float() for v in values])
    keep = topk_mask(flat, count)
    for w, v, part in zip(weights, values, keep.split([w.numel for w in weights])):
        mask = part.view(w.shape)
        w.set_mask(mask)
        w.parameter.copy_(v * mask)


def lottery_pools(model: nn.Module, weights: Sequence[SparseWeight], ticket: Mapping[str, torch.Tensor],
                  candidates: Sequence[Mapping[str, torch.Tensor]], evaluate: Callable[[nn.Module], float],
                  recalibrate: Callable[[nn.Module], None] | None = None,
                  alphas: Sequence[float] = DEFAULT_ALPHAS) -> PoolsResult:
    """Lottery Pools (Yin et al. 2023, "Lottery Pools: Winning More by Interpolating Tickets
    without Increasing Training or Inference Cost", AAAI), greedy interpolation.

    Start from ``ticket`` (a state_dict of ``model``, whose sparsified weights are ``weights``).
    For each candidate in order (neighbouring tickets, see `neighbour_order`) and each alpha:
    mix ``(1 - alpha) * current + alpha * candidate``, re-prune by global magnitude to the
    ticket's number of active weights, recalibrate batch norm, and measure validation
    accuracy. The best alpha replaces the current model only if it beats the best validation
    accuracy so far (which starts at the ticket's own), so the result never has a lower
    validation accuracy than the ticket. ``model`` ends holding the returned state.
    """
    model.load_state_dict(ticket)
    count = sum(w.active for w in weights)
    best = ticket_acc = evaluate(model)
    current = {k: v.clone() for k, v in ticket.items()}
    accepted: list[tuple[int, float]] = []
    for index, candidate in enumerate(candidates):
        round_best, round_state, round_alpha = -1.0, None, None
        for alpha in alphas:
            model.load_state_dict(interpolate(current, candidate, alpha))
            reprune(weights, count)
            if recalibrate is not None:
                recalibrate(model)
            accuracy = evaluate(model)
            if accuracy > round_best:
                round_best, round_alpha = accuracy, alpha
                round_state = {k: v.clone() for k, v in model.state_dict().items()}
        if round_state is not None and round_best > best:
            best, current = round_best, round_state
            accepted.append((index, float(round_alpha)))
    model.load_state_dict(current)
    return PoolsResult(current, best, ticket_acc, accepted)
