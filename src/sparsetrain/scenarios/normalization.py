"""Pixel space vs model space: corruptions and attacks work on pixels in [0, 1].

A dataset may hand the model normalised inputs ``(pixel - mean) / std`` per channel.
`Normalization` converts between the two; `PixelModel` wraps a model that expects
normalised inputs so that it takes pixels (attacks then see the valid range [0, 1]).
The built-in datasets (digits, mnist1d) feed pixels directly: `Normalization.identity()`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sparsetrain.errors import UserError


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``mean`` and ``std`` (empty tuples: inputs already are pixels in [0, 1])."""

    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std):
            raise UserError(f"normalization mean and std must have the same length, got {self.mean} and {self.std}")
        if any(s <= 0 for s in self.std):
            raise UserError(f"normalization std must be positive, got {self.std}")

    @classmethod
    def identity(cls) -> "Normalization":
        return cls()

    @property
    def is_identity(self) -> bool:
        return not self.mean

    def _shape(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        view = (1, -1) + (1,) * (x.dim() - 2)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(view)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(view)
        return mean, std

    def apply(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels (N, C, ...) in [0, 1] -> model inputs."""
        if self.is_identity:
            return pixels
        mean, std = self._shape(pixels)
        return (pixels - mean) / std

    def invert(self, inputs: torch.Tensor) -> torch.Tensor:
        """Model inputs (N, C, ...) -> pixels."""
        if self.is_identity:
            return inputs
        mean, std = self._shape(inputs)
        return inputs * std + mean


class PixelModel(nn.Module):
    """``model`` behind its input normalisation: takes pixels in [0, 1], returns logits."""

    def __init__(self, model: nn.Module, normalization: Normalization | None = None) -> None:
        super().__init__()
        self.model = model
        self.normalization = normalization or Normalization.identity()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalization.apply(pixels))
