"""The ITOP bookkeeping of one layer: positions that were active once and are not now."""

from __future__ import annotations

import numpy as np
import torch


class RetiredSet:
    """Flat positions of one weight that were active at some time and are not now (Liu et al.
    2021: ever active = active now ∪ retired).

    Stored as a sorted int32 list while that is small (a static run keeps nothing, a dynamic
    one 4 bytes per retired position), and as a bitmap of the layer (numel / 8 bytes) from
    the moment the list would be larger: memory follows exploration and never exceeds an
    eighth of a byte per position, and an update costs O(dropped + grown) on the bitmap.
    """

    def __init__(self, numel: int) -> None:
        self.numel = numel
        self._list: np.ndarray | None = np.zeros(0, np.int32 if numel < 2**31 else np.int64)
        self._words: np.ndarray | None = None
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def update(self, dropped: torch.Tensor, grown: torch.Tensor) -> None:
        """``dropped`` (ascending positions) left the active set, ``grown`` (ascending) joined it."""
        from sparsetrain.sparse.select import flip_bits, retire  # numba: imported on first use
        dropped = dropped.cpu().to(torch.int64).numpy()
        grown = grown.cpu().to(torch.int64).numpy()
        if self._words is not None:
            self._count += int(flip_bits(self._words, dropped, grown))
            return
        self._list = retire(self._list, dropped, grown, self.numel)
        self._count = len(self._list)
        if self._list.nbytes > self.numel // 8:
            self._to_bitmap()

    def _to_bitmap(self) -> None:
        from sparsetrain.sparse.select import flip_bits
        self._words = np.zeros((self.numel + 63) // 64, np.uint64)
        self._count = int(flip_bits(self._words, self._list.astype(np.int64), np.zeros(0, np.int64)))
        self._list = None

    def positions(self) -> torch.Tensor:
        """The retired positions, ascending (int64)."""
        if self._words is None:
            return torch.from_numpy(self._list.astype(np.int64))
        from sparsetrain.sparse.select import bit_positions
        return torch.from_numpy(bit_positions(self._words, self._count))

    def set(self, positions: torch.Tensor) -> None:
        """Replace the set by ``positions`` (ascending, distinct, in [0, numel)); anything else
        (e.g. from a damaged checkpoint) is a ValueError, since the kernels index with them."""
        if not isinstance(positions, torch.Tensor) or positions.dim() != 1 or \
                positions.dtype not in (torch.int32, torch.int64):
            raise ValueError("retired positions must be a 1-d integer tensor")
        if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= self.numel
                                  or bool((positions[1:] <= positions[:-1]).any())):
            raise ValueError(f"retired positions must be distinct, ascending and in 0..{self.numel - 1}")
        values = positions.cpu().numpy()
        self._list, self._words = values.astype(np.int32 if self.numel < 2**31 else np.int64), None
        self._count = len(values)
        if self._list.nbytes > self.numel // 8:
            self._to_bitmap()

    def nbytes(self) -> int:
        """Bytes held (list or bitmap)."""
        return (self._list if self._words is None else self._words).nbytes
