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
        available = int(allowed_flat.sum())
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
        order = torch.argsort(flat[candidates], descending=True, stable=True)
        chosen = candidates[order[:k]]
    else:
        chosen = torch.argsort(flat, descending=True, stable=True)[:k]
    mask[chosen] = True
    return mask.view_as(scores)


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
