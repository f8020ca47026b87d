"""Training-time augmentations of image batches, written with torch ops and seeded per batch.

``crop_flip`` is the standard CIFAR augmentation of He, Zhang, Ren & Sun, "Deep Residual
Learning for Image Recognition", CVPR 2016, Sec. 4.2: pad 4 pixels on each side, take a
random crop of the original size, and flip it horizontally with probability 1/2. The
padding is zeros of the tensor given, i.e. of the model's (normalized) inputs.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

PADDING = 4


def crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = PADDING) -> torch.Tensor:
    """Each image of ``x`` (N, C, H, W) randomly cropped from its zero-padded copy, then flipped at random.

    Crop offsets are uniform in ``0..2*padding`` for rows and columns; the draws come from
    the CPU ``generator`` (offsets first, then flips), so the result does not depend on the device.
    """
    n, _, h, w = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator).to(x.device)
    flips = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (n, h) rows of the padded image
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (n, w) columns, left to right
    cols = torch.where(flips[:, None], cols.flip(1), cols)  # a flip reads the columns right to left
    padded = F.pad(x, (padding, padding, padding, padding)).permute(0, 2, 3, 1)  # (n, H+2p, W+2p, c)
    out = padded[torch.arange(n, device=x.device)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


AUGMENTATIONS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {"crop_flip": crop_flip}
"""Augmentations by name: ``fn(images (N, C, H, W), generator) -> images of the same shape``."""
