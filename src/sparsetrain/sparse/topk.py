"""Exact, deterministic top-k selection and seeded randomness for masks.

Ties are broken by position (lower flat index wins), so a layer always gets exactly
``k`` active weights and two runs with the same inputs choose the same ones.
"""

from __future__ import annotations

import hashlib

import torch


def topk_mask(scores: torch.Tensor, k: int, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean mask (shape of ``scores``) of the ``k`` highest scores among ``allowed`` positions.

    Raises ``ValueError`` if fewer than ``k`` positions are allowed.
    """
    flat = scores.detach().reshape(-1).float()
    if allowed is not None:
        allowed_flat = allowed.reshape(-1)
        available = int(torch.count_nonzero(allowed_flat))
    else:
        allowed_flat = None
        available = flat.numel()
    if not 0 <= k <= available:
        raise ValueError(f"cannot choose {k} positions out of {available}")
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if k == 0:
        return mask.view_as(scores)
    if allowed_flat is not None:
        candidates = torch.nonzero(allowed_flat, as_tuple=False).reshape(-1)
        chosen = candidates[_top_positions(flat[candidates], k)]
    else:
        chosen = _top_positions(flat, k)
    mask[chosen] = True
    return mask.view_as(scores)


def _top_positions(values: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the ``k`` largest ``values``, ties to the lower position: the first ``k``
    of a stable descending sort, found in linear time (every value above the k-th largest,
    then the lowest positions holding exactly the k-th largest)."""
    if k == values.numel():
        return torch.arange(k, device=values.device)
    kth = torch.topk(values, k, sorted=False).values.min()
    if torch.isnan(values).any() or torch.isnan(kth):  # NaN orders as largest: keep the sort
        return torch.argsort(values, descending=True, stable=True)[:k]
    above = values > kth
    ties = torch.nonzero(values == kth).reshape(-1)[: k - int(torch.count_nonzero(above))]
    above[ties] = True
    return torch.nonzero(above).reshape(-1)


def seed_for(*parts: object) -> int:
    """A 63-bit seed derived from ``parts`` (e.g. run seed, step, layer index)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()
    return int(digest[:15], 16)


def generator(*parts: object) -> torch.Generator:
    """A CPU generator seeded from ``parts``; identical on every process and device."""
    return torch.Generator(device="cpu").manual_seed(seed_for(*parts))


def random_scores(shape: torch.Size | tuple[int, ...], gen: torch.Generator,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """Uniform scores drawn on the CPU from ``gen`` (so masks do not depend on the device)."""
    return torch.rand(tuple(shape), generator=gen).to(device)
