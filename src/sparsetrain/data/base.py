"""What every dataset hands back, how validation is carved from train, and where data is cached.

A loader returns a `DatasetSplits` of in-memory tensors. Its test split is fixed (the
same for every run seed) so results across seeds are measured on the same test set;
the validation split is carved from train by `stratified_split`, seeded by the run seed.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from sparsetrain.atomic import atomic_write_bytes
from sparsetrain.errors import UserError
from sparsetrain.registry import Registry

DATASETS: Registry[Callable[..., "DatasetSplits"]] = Registry("dataset")


def register_dataset(name: str, help: str,
                     path_in_identity: bool | Callable[[dict[str, Any]], bool] = False) -> Callable:
    """Decorator registering ``fn(*, seed, val_fraction, data_dir, **opts) -> DatasetSplits``.

    ``path_in_identity`` says whether ``data_dir`` decides *what* data a run sees (the
    user's own files), so that it belongs to the run's identity; a callable decides from
    the dataset options. Leave it False where ``data_dir`` only says where a known dataset
    lives (checksum-verified files) or is cached (generated data).
    """
    return DATASETS.register(name, help=help, path_in_identity=path_in_identity)


@dataclass(frozen=True)
class TensorData:
    """Inputs ``x`` (N, *input_shape) and int64 class labels ``y`` (N,), held in memory."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} rows but y has {len(self.y)}")
        if self.y.dtype != torch.int64:
            raise ValueError(f"labels must be int64, got {self.y.dtype}")

    def __len__(self) -> int:
        return len(self.y)

    @classmethod
    def from_numpy(cls, x: np.ndarray, y: np.ndarray) -> "TensorData":
        x = np.ascontiguousarray(x, dtype=np.float32)
        y = np.ascontiguousarray(y, dtype=np.int64)
        return cls(torch.from_numpy(x), torch.from_numpy(y))


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset's train/val/test splits; ``input_shape`` excludes the batch dimension."""

    name: str
    train: TensorData
    val: TensorData
    test: TensorData
    num_classes: int
    input_shape: tuple[int, ...]
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    """Images: per-channel ``(mean, std)`` with inputs = (pixel - mean) / std, pixels in [0, 1];
    ``((), ())`` when inputs are the pixels themselves; None when not known (not images, or
    a user's arrays)."""


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``fraction`` of the samples of every class; returns sorted ``(keep_idx, held_idx)``.

    The number held out is ``ceil(len(y) * fraction)`` (as scikit-learn's
    ``train_test_split``), shared among classes by largest remainder: each class gets
    the floor of its quota ``n_c * fraction`` and the leftover go to the largest
    fractional parts, ties to the smaller label. ``fraction`` is read as the nearest
    simple fraction (0.1 -> 1/10) so that ties are exact. Which samples of a class are
    held out is drawn from ``seed``.
    """
    if not 0 <= fraction < 1:
        raise UserError(f"fraction must be in [0, 1), got {fraction}")
    y = np.asarray(y)
    frac = Fraction(fraction).limit_denominator(10**6)
    classes, counts = np.unique(y, return_counts=True)
    quotas = [int(n) * frac for n in counts]
    held_counts = [math.floor(q) for q in quotas]
    leftover = math.ceil(len(y) * frac) - sum(held_counts)
    by_remainder = sorted(range(len(classes)), key=lambda c: (-(quotas[c] - held_counts[c]), c))
    for c in by_remainder[:leftover]:
        held_counts[c] += 1

    rng = np.random.default_rng(seed)
    held = []
    for label, k in zip(classes, held_counts):
        members = np.flatnonzero(y == label)
        held.append(rng.permutation(members)[:k])
    held_idx = np.sort(np.concatenate(held)).astype(np.int64) if held else np.empty(0, np.int64)
    keep_mask = np.ones(len(y), dtype=bool)
    keep_mask[held_idx] = False
    return np.flatnonzero(keep_mask).astype(np.int64), held_idx


def carve_validation(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    seed: int,
    val_fraction: float,
    num_classes: int,
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> DatasetSplits:
    """Build `DatasetSplits` with a stratified validation split carved from train by ``seed``."""
    keep, held = stratified_split(y_train, val_fraction, seed)
    return DatasetSplits(
        name=name,
        train=TensorData.from_numpy(x_train[keep], y_train[keep]),
        val=TensorData.from_numpy(x_train[held], y_train[held]),
        test=TensorData.from_numpy(x_test, y_test),
        num_classes=num_classes,
        input_shape=tuple(x_train.shape[1:]),
        normalization=normalization,
    )


def cache_dir(data_dir: str | None = None) -> Path:
    """``data_dir`` if given, else ``$SPARSETRAIN_CACHE``, else ``~/.cache/sparsetrain``."""
    if data_dir is not None:
        return Path(data_dir)
    return Path(os.environ.get("SPARSETRAIN_CACHE", Path.home() / ".cache" / "sparsetrain"))


def cached_arrays(
    prefix: str, key: dict[str, Any], build: Callable[[], dict[str, np.ndarray]], root: Path
) -> dict[str, np.ndarray]:
    """Arrays from ``root/<prefix>-<hash of key>.npz``, built and written atomically if missing."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = root / f"{prefix}-{digest}.npz"
    if path.exists():
        try:
            with np.load(path) as stored:
                return {name: stored[name] for name in stored.files}
        except (OSError, ValueError, zipfile.BadZipFile):
            pass  # unreadable: rebuild it below
    arrays = build()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
    return arrays
