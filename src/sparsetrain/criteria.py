"""Pruning criteria: pure functions from a model (and maybe a batch) to per-weight scores.

Every criterion shares one signature::

    fn(model, batch=None, *, weights=None, loss_fn=F.cross_entropy, seed=0, **own_options)
        -> {parameter name: scores}

- ``batch`` is ``(x, y)``; criteria that need data raise a `UserError` without one
  (see ``CRITERIA.info(name)["needs_batch"]``). SynFlow only reads the input shape.
- ``weights`` chooses what is scored: ``None`` (every Linear/Conv weight, as
  `sparsetrain.sparse.select_weights`), a list of parameter names, or a sparsifier's
  ``weights`` (a list of `SparseWeight`). With `SparseWeight` objects the existing mask is
  respected: positions that are pruned score ``-inf`` so only active weights can be kept.
  `SparseWeight`s are read through the protocol (``w.values``), so criteria work on every
  backend; criteria that run the network (gradient, taylor, snip, grasp, synflow) run it on
  the model itself when each weight is a dense parameter of it (masked backend), else on a
  `dense_twin` (a deep copy whose sparse layers are dense again, same function).
- Higher score = more worth keeping, for every criterion (GraSP is sign-flipped to match;
  see its docstring). Scores are float tensors of the parameter's shape and device.

Criteria never change the model: no ``.grad`` is written, no weight is modified.
Turn scores into masks with `sparsetrain.algorithms.pruning.masks_from_scores`.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sparsetrain.errors import UserError
from sparsetrain.registry import Registry
from sparsetrain.sparse import SparseWeight, dense_model, generator, random_scores, select_weights

Scores = dict[str, torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor]
WeightsArg = Sequence[str] | Sequence[SparseWeight] | None

CRITERIA: Registry[Callable[..., Scores]] = Registry("criterion")


def register_criterion(name: str, help: str, needs_batch: bool = False) -> Callable:
    """Decorator adding a criterion under ``name``; ``needs_batch`` says it reads (x, y)."""
    return CRITERIA.register(name, help=help, needs_batch=needs_batch)


def list_criteria() -> list[str]:
    return CRITERIA.names()


def score(name: str, model: nn.Module, batch: Batch | None = None, **options: Any) -> Scores:
    """Scores of criterion ``name`` (options: weights, loss_fn, seed, and the criterion's own)."""
    return CRITERIA.get(name)(model, batch, **options)


# --- shared plumbing ------------------------------------------------------------------
def _targets(model: nn.Module, weights: WeightsArg) -> list[tuple[str, torch.Tensor | None]]:
    """(parameter name, mask or None) for every weight to score."""
    if weights is None:
        return [(n, None) for n in select_weights(model)]
    out = []
    for w in weights:
        if isinstance(w, SparseWeight):
            out.append((w.name, w.mask))
        else:
            out.append((str(w), None))
    return out


def _param(model: nn.Module, name: str) -> torch.Tensor:
    try:
        return model.get_parameter(name)
    except AttributeError:
        raise UserError(f"the model has no parameter {name!r} to score") from None


def _sparse_weights(weights: WeightsArg) -> list[SparseWeight]:
    return [w for w in weights or () if isinstance(w, SparseWeight)]


def _dense_values(model: nn.Module, weights: WeightsArg, targets) -> dict[str, torch.Tensor]:
    """Every target as a dense tensor (zeros where inactive), detached."""
    by_name = {w.name: w for w in _sparse_weights(weights)}
    return {n: by_name[n].values.detach() if n in by_name else _param(model, n).detach()
            for n, _ in targets}


def _scoring_model(model: nn.Module, weights: WeightsArg) -> nn.Module:
    """The network a criterion differentiates: ``model`` itself when every `SparseWeight` is a
    dense parameter of it, else its `dense_twin` (e.g. the sparse backend's CSR layers)."""
    return dense_model(model, _sparse_weights(weights))


def _finish(raw: Mapping[str, torch.Tensor], targets) -> Scores:
    """Detach to float and put -inf where an existing mask has pruned the weight."""
    out: Scores = {}
    for name, mask in targets:
        s = raw[name].detach().float().clone()
        s = torch.nan_to_num(s, nan=0.0)
        if mask is not None:
            s.masked_fill_(~mask.to(s.device), float("-inf"))
        out[name] = s
    return out


def _need_batch(name: str, batch: Batch | None) -> Batch:
    if batch is None:
        raise UserError(f"criterion {name!r} needs a data batch (x, y)")
    return batch


def _gradients(model: nn.Module, batch: Batch, names: list[str],
               loss_fn: Callable, scale: float = 1.0, create_graph: bool = False):
    """Gradients of ``loss_fn(model(x) / scale, y)`` w.r.t. the named parameters (no .grad written)."""
    x, y = batch
    params = [_param(model, n) for n in names]
    loss = loss_fn(model(x) / scale, y)
    return params, torch.autograd.grad(loss, params, create_graph=create_graph)


# --- the criteria ---------------------------------------------------------------------
@register_criterion("magnitude", help="|w| (Han et al. 2015)")
def magnitude(model: nn.Module, batch: Batch | None = None, *, weights: WeightsArg = None,
              loss_fn: Callable = F.cross_entropy, seed: int = 0) -> Scores:
    """|w|: Han et al. 2015, "Learning both Weights and Connections for Efficient Neural Networks"."""
    targets = _targets(model, weights)
    return _finish({n: v.abs() for n, v in _dense_values(model, weights, targets).items()}, targets)


@register_criterion("random", help="uniform random scores from a generator seeded by seed")
def random(model: nn.Module, batch: Batch | None = None, *, weights: WeightsArg = None,
           loss_fn: Callable = F.cross_entropy, seed: int = 0) -> Scores:
    """Uniform random scores (random pruning; Liu et al. 2022, "The Unreasonable Effectiveness
    of Random Pruning"). Drawn on the CPU from a generator seeded by (seed, layer index), so
    the same seed gives the same scores on every device."""
    targets = _targets(model, weights)
    raw = {}
    for index, (n, mask) in enumerate(targets):
        p = mask if mask is not None else _param(model, n)
        raw[n] = random_scores(p.shape, generator(seed, "criterion-random", index), p.device)
    return _finish(raw, targets)


@register_criterion("gradient", help="|dL/dw| on a batch", needs_batch=True)
def gradient(model: nn.Module, batch: Batch | None = None, *, weights: WeightsArg = None,
             loss_fn: Callable = F.cross_entropy, seed: int = 0) -> Scores:
    """|∂L/∂w| of the loss on the batch (the growth criterion of RigL, Evci et al. 2020)."""
    targets = _targets(model, weights)
    names = [n for n, _ in targets]
    _, grads = _gradients(_scoring_model(model, weights), _need_batch("gradient", batch), names, loss_fn)
    return _finish({n: g.abs() for n, g in zip(names, grads)}, targets)


@register_criterion("taylor", help="first-order Taylor |w * dL/dw| on a batch", needs_batch=True)
def taylor(model: nn.Module, batch: Batch | None = None, *, weights: WeightsArg = None,
           loss_fn: Callable = F.cross_entropy, seed: int = 0) -> Scores:
    """|w · ∂L/∂w|: the first-order Taylor estimate of the loss change when w is removed
    (Molchanov et al. 2019, "Importance Estimation for Neural Network Pruning", per weight).
    On one batch this is the same number as SNIP; it is kept as its own name for use
    during and after training."""
    targets = _targets(model, weights)
    names = [n for n, _ in targets]
    params, grads = _gradients(_scoring_model(model, weights), _need_batch("taylor", batch), names, loss_fn)
    return _finish({n: (p.detach() * g).abs() for n, p, g in zip(names, params, grads)}, targets)


@register_criterion("snip", help="connection sensitivity |g * w| on a batch (Lee et al. 2019)",
                    needs_batch=True)
def snip(model: nn.Module, batch: Batch | None = None, *, weights: WeightsArg = None,
         loss_fn: Callable = F.cross_entropy, seed: int = 0) -> Scores:
    """|∂L/∂w ⊙ w|: Lee et al. 2019, "SNIP: Single-shot Network Pruning based on Connection
    Sensitivity", ICLR. The paper divides by the sum over all weights; that positive factor
    changes no ranking, so the raw |g ⊙ w| is returned."""
    targets = _targets(model, weights)
    names = [n for n, _ in targets]
    params, grads = _gradients(_scoring_model(model, weights), _need_batch("snip", batch), names, loss_fn)
    return _finish({n: (g * p.detach()).abs() for n, p, g in zip(names, params, grads)}, targets)


@register_criterion("grasp", help="gradient-signal preservation theta * Hg (Wang et al. 2020)",
                    needs_batch=True)
def grasp(model: nn.Module, batch: Batch | None = None, *, weights: WeightsArg = None,
          loss_fn: Callable = F.cross_entropy, seed: int = 0, temperature: float = 200.0) -> Scores:
    """θ ⊙ Hg, the negated GraSP score: Wang et al. 2020, "Picking Winning Tickets Before
    Training by Preserving Gradient Flow", ICLR.

    The paper scores S(−θ) = −θ ⊙ Hg, where g = ∇L and Hg = ∇(gᵀ∇L) with g held fixed,
    and removes the weights with the HIGHEST S; the reference code (alecwangcq/GraSP,
    ``pruner/GraSP.py``) does the same: it keeps ``score <= threshold`` of the top-k removed.
    We return θ ⊙ Hg = −S so that, as for every criterion here, the highest scores are
    kept: the pruned weights are exactly those with the highest −θ ⊙ Hg. Logits are divided
    by ``temperature`` (T = 200 in the reference). Unlike the reference we score the
    network as it is (no Xavier re-initialisation of Linear layers on a copy) and use one
    batch for both g and Hg (the reference's two half-batches give the same ranking up to a
    positive factor when the halves are equal).
    """
    targets = _targets(model, weights)
    names = [n for n, _ in targets]
    batch = _need_batch("grasp", batch)
    net = _scoring_model(model, weights)
    params, g = _gradients(net, batch, names, loss_fn, scale=temperature)
    _, g_graph = _gradients(net, batch, names, loss_fn, scale=temperature, create_graph=True)
    z = sum((gi.detach() * gf).sum() for gi, gf in zip(g, g_graph))
    hg = torch.autograd.grad(z, params, allow_unused=True)
    hg = [torch.zeros_like(p) if h is None else h for p, h in zip(params, hg)]
    return _finish({n: p.detach() * h for n, p, h in zip(names, params, hg)}, targets)


@register_criterion("synflow", help="data-free synaptic flow |w * dR/dw| (Tanaka et al. 2020)")
def synflow(model: nn.Module, batch: Batch | None = None, *, weights: WeightsArg = None,
            loss_fn: Callable = F.cross_entropy, seed: int = 0,
            input_shape: Sequence[int] | None = None) -> Scores:
    """|θ ⊙ ∂R/∂θ| with R = 1ᵀ f(1; |θ|): Tanaka et al. 2020, "Pruning neural networks
    without any data by iteratively conserving synaptic flow", NeurIPS.

    As in the reference (ganguli-lab/Synaptic-Flow): every parameter and floating buffer is
    replaced by its absolute value (on a float64 copy, so the model is untouched and deep
    nets do not overflow), batch norm runs in eval mode, the input is a single all-ones
    sample. The data are never read: ``batch`` only supplies the input shape (or pass
    ``input_shape``). This is one round; the iteration over 100 rounds with an
    exponential density schedule belongs to the pruning procedure (`sparsetrain.algorithms.pai`).
    For a bias-free linear network the score of a weight is |w| times the summed products
    of |weights| along all input-output paths through it.
    """
    targets = _targets(model, weights)
    names = [n for n, _ in targets]
    if input_shape is None:
        if batch is None:
            raise UserError("criterion 'synflow' needs an input shape: pass a batch or input_shape")
        input_shape = tuple(batch[0].shape[1:])
    net = _scoring_model(model, weights)  # already a copy unless the model is dense
    twin = (copy.deepcopy(model) if net is model else net).double().eval()
    with torch.no_grad():
        for t in list(twin.parameters()) + list(twin.buffers()):
            if t.is_floating_point():
                t.abs_()
    params = [_param(twin, n) for n in names]
    device = params[0].device
    ones = torch.ones((1, *input_shape), dtype=torch.float64, device=device)
    grads = torch.autograd.grad(twin(ones).sum(), params, allow_unused=True)
    raw = {n: (p.detach() * (torch.zeros_like(p) if g is None else g)).abs()
           for n, p, g in zip(names, params, grads)}
    return _finish(raw, targets)


def lamp_scores(values: torch.Tensor) -> torch.Tensor:
    """LAMP of one layer: w_u² / Σ_{v ≥ u} w_v², with weights sorted by ascending |w|.

    Ties keep their flat-index order (stable sort); a layer of zeros scores 0.
    """
    sq = values.detach().float().reshape(-1) ** 2
    sorted_sq, order = torch.sort(sq, stable=True)
    tail = sorted_sq.flip(0).cumsum(0).flip(0)  # Σ of this and every larger weight
    ratio = torch.where(tail > 0, sorted_sq / tail.clamp_min(torch.finfo(tail.dtype).tiny),
                        torch.zeros_like(tail))
    out = torch.empty_like(sq)
    out[order] = ratio
    return out.view_as(values)


@register_criterion("lamp", help="layer-adaptive magnitude w^2 / sum of larger w^2 (Lee et al. 2021)")
def lamp(model: nn.Module, batch: Batch | None = None, *, weights: WeightsArg = None,
         loss_fn: Callable = F.cross_entropy, seed: int = 0) -> Scores:
    """LAMP: Lee et al. 2021, "Layer-adaptive Sparsity for the Magnitude-based Pruning", ICLR.

    Within each layer, sort weights by |w| ascending; weight u scores w_u² / Σ_{v ≥ u} w_v²
    (the sum over itself and every weight after it). Ranked globally, this gives a
    layer-wise sparsity without a hand-set distribution. Pruned weights (0) sort first and
    so do not enter the sums of the weights still active.
    """
    targets = _targets(model, weights)
    return _finish({n: lamp_scores(v) for n, v in _dense_values(model, weights, targets).items()}, targets)


def lamp_groups(structure: Any, magnitudes: torch.Tensor, fan_in_dim: int = 1) -> torch.Tensor:
    """LAMP over the groups of one layer (block, channel; ``structure`` from
    `sparsetrain.sparse.structures`), as Torch-Pruning's ``LAMPImportance`` (VainF/Torch-Pruning
    ``pruner/importance.py``): a group's importance is its squared L2 norm s_g = Σ w² over the
    group, normalised as LAMP: s_g / Σ of s_h over the groups h sorted at or after g by
    ascending s. Ranked globally like per-weight LAMP; for single-weight groups it is `lamp`.
    ``magnitudes`` holds |w| (or w) in the layer's shape; the result is one score per group."""
    squared = structure.group_sums(magnitudes.float() ** 2, fan_in_dim)
    return lamp_scores(squared.sqrt())
