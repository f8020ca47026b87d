"""Layer-wise density allocation: pure functions from layer shapes to per-layer densities.

Every function shares one signature, ``fn(shapes, density, *, dense=(), **options)``,
returns ``{name: density}``, and spends exactly the overall budget ``density * total``:
layers named in ``dense`` are kept at density 1 and count against that budget. Use
`layer_counts` to turn densities into exact integer numbers of active weights.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import torch

from sparsetrain.errors import UserError
from sparsetrain.registry import Registry

Shapes = Mapping[str, Sequence[int]]

DISTRIBUTIONS: Registry[Callable[..., dict[str, float]]] = Registry("distribution")


def _numel(shape: Sequence[int]) -> int:
    return math.prod(shape)


def _check(shapes: Shapes, density: float, dense: Sequence[str]) -> None:
    if not 0 < density <= 1:
        raise UserError(f"density must be in (0, 1]; got {density!r}")
    unknown = sorted(set(dense) - set(shapes))
    if unknown:
        raise UserError(f"dense layer {unknown[0]!r} is not one of: {', '.join(shapes)}")


def _sparse_budget(shapes: Shapes, density: float, dense: set[str]) -> float:
    """Active weights left for the non-dense layers once the dense ones are paid for."""
    total = sum(_numel(s) for s in shapes.values())
    budget = density * total - sum(_numel(shapes[n]) for n in dense)
    if budget < -1e-9:
        raise UserError(f"the layers kept dense already exceed density {density:g}; "
                        "raise density or keep fewer layers dense")
    return max(budget, 0.0)


@DISTRIBUTIONS.register("uniform", help="the same density in every sparse layer")
def uniform(shapes: Shapes, density: float, *, dense: Sequence[str] = ()) -> dict[str, float]:
    """Every non-dense layer gets the same density; the overall density is ``density``."""
    _check(shapes, density, dense)
    dense_set = set(dense)
    sparse_total = sum(_numel(s) for n, s in shapes.items() if n not in dense_set)
    share = _sparse_budget(shapes, density, dense_set) / sparse_total if sparse_total else 1.0
    if share > 1 + 1e-9:
        raise UserError(f"density {density:g} cannot be reached with the given dense layers")
    return {n: 1.0 if n in dense_set else min(share, 1.0) for n in shapes}


def _scaled(shapes: Shapes, density: float, dense: Sequence[str],
            raw: Callable[[Sequence[int]], float]) -> dict[str, float]:
    """Densities proportional to ``raw(shape)`` (capped at 1) that spend the overall budget.

    Solve eps * sum_l raw_l * n_l = budget for the layers not yet dense; any layer whose
    eps * raw_l exceeds 1 is made dense and eps is solved again (Evci et al. 2020, App. J).
    """
    _check(shapes, density, dense)
    dense_set = set(dense)
    while True:
        budget = _sparse_budget(shapes, density, dense_set)
        weighted = sum(raw(s) * _numel(s) for n, s in shapes.items() if n not in dense_set)
        eps = budget / weighted if weighted else 0.0
        overfull = {n for n, s in shapes.items() if n not in dense_set and eps * raw(s) > 1}
        if not overfull:
            return {n: 1.0 if n in dense_set else eps * raw(s) for n, s in shapes.items()}
        dense_set |= overfull


@DISTRIBUTIONS.register("er", help="Erdos-Renyi: density ~ (fan_in + fan_out) / (fan_in * fan_out)")
def er(shapes: Shapes, density: float, *, dense: Sequence[str] = (), power: float = 1.0) -> dict[str, float]:
    """Erdős–Rényi (Mocanu et al. 2018): density ∝ ((n_out + n_in) / (n_out · n_in))^power.

    Kernel dimensions of convolutions are ignored (that is what ERK adds).
    """
    return _scaled(shapes, density, dense, lambda s: ((s[0] + s[1]) / (s[0] * s[1])) ** power
                   if len(s) >= 2 else 1.0)


@DISTRIBUTIONS.register("erk", help="Erdos-Renyi-Kernel: density ~ sum(shape) / prod(shape)")
def erk(shapes: Shapes, density: float, *, dense: Sequence[str] = (), power: float = 1.0) -> dict[str, float]:
    """Erdős–Rényi-Kernel (Evci et al. 2020, "Rigging the Lottery"): density ∝ (Σ dims / Π dims)^power.

    For a conv weight (out, in, kh, kw) the raw density is (out + in + kh + kw) / (out·in·kh·kw);
    for a linear weight (out, in) it reduces to ER. ``power`` < 1 flattens the allocation.
    """
    return _scaled(shapes, density, dense, lambda s: (sum(s) / _numel(s)) ** power)


@DISTRIBUTIONS.register("custom", help="a user-given {layer: density} map")
def custom(shapes: Shapes, density: float, *, dense: Sequence[str] = (),
           densities: Mapping[str, float] | None = None) -> dict[str, float]:
    """The user's own per-layer densities; layers not named get ``density``, dense ones 1."""
    _check(shapes, density, dense)
    densities = dict(densities or {})
    for name, value in densities.items():
        if name not in shapes:
            raise UserError(f"custom density for unknown layer {name!r}; layers are: {', '.join(shapes)}")
        if not 0 <= value <= 1:
            raise UserError(f"custom density of {name!r} must be in [0, 1]; got {value!r}")
    return {n: 1.0 if n in dense else float(densities.get(n, density)) for n in shapes}


@DISTRIBUTIONS.register("scores", help="global top-k of a pruning criterion's scores")
def by_scores(shapes: Shapes, density: float, *, dense: Sequence[str] = (),
              scores: Mapping[str, torch.Tensor] | None = None) -> dict[str, float]:
    """Keep the globally highest ``scores`` (e.g. |w| or SNIP) and read off each layer's density."""
    _check(shapes, density, dense)
    if scores is None or set(scores) != set(shapes):
        raise UserError("the 'scores' distribution needs one score tensor per layer")
    dense_set = set(dense)
    budget = round(_sparse_budget(shapes, density, dense_set))
    names = [n for n in shapes if n not in dense_set]
    result = {n: 1.0 for n in dense_set}
    if not names:
        return result
    flat = torch.cat([scores[n].detach().reshape(-1).float().cpu() for n in names])
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[torch.argsort(flat, descending=True, stable=True)[:budget]] = True
    for name, part in zip(names, torch.split(keep, [_numel(shapes[n]) for n in names])):
        result[name] = float(part.sum()) / part.numel()
    return {n: result[n] for n in shapes}


def layer_counts(shapes: Shapes, densities: Mapping[str, float],
                 total: int | None = None) -> dict[str, int]:
    """Exact active-weight counts: floor each layer, then hand out the rest by largest remainder.

    ``total`` defaults to round(Σ density_l · n_l); each layer ends within one weight of
    density_l · n_l and the counts sum to ``total`` exactly.
    """
    wanted = {n: densities[n] * _numel(s) for n, s in shapes.items()}
    counts = {n: min(math.floor(w + 1e-9), _numel(shapes[n])) for n, w in wanted.items()}
    if total is None:
        total = round(sum(wanted.values()))
    remainder = total - sum(counts.values())
    order = sorted(shapes, key=lambda n: -(wanted[n] - counts[n]))
    for name in order:
        if remainder <= 0:
            break
        if counts[name] < _numel(shapes[name]) and wanted[name] - counts[name] > 1e-9:
            counts[name] += 1
            remainder -= 1
    return counts


def allocate(name: str, shapes: Shapes, density: float, *, dense: Sequence[str] = (),
             **options) -> dict[str, int]:
    """Per-layer active counts from a registered distribution; the total is round(density · N)."""
    densities = DISTRIBUTIONS.get(name)(shapes, density, dense=dense, **options)
    if name == "custom":
        return layer_counts(shapes, densities)
    overall = round(density * sum(_numel(s) for s in shapes.values()))
    return layer_counts(shapes, densities, total=overall)
