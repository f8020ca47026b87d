"""Datasets by name, as in-memory train/val/test tensors, and minibatches over them.

    splits = load("mnist1d", seed=1, val_fraction=0.1)
    for x, y in batches(splits.train, 128, shuffle=True, generator=torch.Generator().manual_seed(1)):
        ...

Built in: the embedded ``mnist1d`` and ``digits``, and readers of files in ``data_dir``:
``cifar10``/``cifar100`` (python batches), ``mnist``/``fashion_mnist`` (IDX), ``imagefolder``,
``npz`` and ``ucr`` (UCR/UEA archives); ``imagenet_folder`` streams an ImageNet-layout tree
from disk (splits of `ImageFiles`, decoded in DataLoader workers). A new dataset is a function decorated with
``@register_dataset(name, help=...)`` taking ``(*, seed, val_fraction, data_dir, **opts)``
and returning `DatasetSplits`; its keyword options become the options `load` accepts.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch

from sparsetrain.data.base import (
    DATASETS,
    DatasetSplits,
    TensorData,
    register_dataset,
    stratified_split,
)
from sparsetrain.data.files import MAX_CLASSES
from sparsetrain.data.stream import ImageFiles, stream_batches
from sparsetrain.errors import UserError

_COMMON = ("seed", "val_fraction", "data_dir")


def list_datasets() -> list[str]:
    """Names of the registered datasets, sorted."""
    return DATASETS.names()


def dataset_options(name: str, /) -> dict[str, Any]:
    """The extra options a dataset's loader takes, with their defaults."""
    return DATASETS.options(name, fixed=_COMMON)


def load(
    name: str, /, *, seed: int = 0, val_fraction: float = 0.1, data_dir: str | None = None, **opts: Any
) -> DatasetSplits:
    """Load dataset ``name``; validation is ``val_fraction`` of train, stratified and drawn from ``seed``."""
    DATASETS.check_options(name, opts, fixed=_COMMON)
    if not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise UserError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    return DATASETS.get(name)(seed=seed, val_fraction=val_fraction, data_dir=data_dir, **opts)


def check_splits(data: DatasetSplits, where: str) -> None:
    """What a dataset must satisfy before a run trains on it: finite inputs, at least two
    training classes, and no test class that training never shows (a reader loads any
    well-formed file; these are checked by the runner)."""
    if not 1 <= data.num_classes <= MAX_CLASSES:
        raise UserError(f"{where} has {data.num_classes} classes; labels must be class indices 0..K-1 "
                        f"with K at most {MAX_CLASSES}")
    for split in ("train", "val", "test"):
        part = getattr(data, split)
        if isinstance(part, TensorData) and part.x.is_floating_point() and len(part) and not torch.isfinite(part.x).all():
            raise UserError(f"{where} has NaN or infinite values in its {split} inputs; "
                            "clean or drop those samples")
    seen = set(torch.cat([data.train.y, data.val.y]).unique().tolist())
    if len(seen) < 2:
        raise UserError(f"{where}: the training set holds only class {sorted(seen)[0] if seen else None}; "
                        "a classifier needs samples of at least two classes")
    unseen = sorted(set(data.test.y.unique().tolist()) - seen)
    if unseen:
        raise UserError(f"{where}: test labels {', '.join(map(str, unseen[:5]))} never occur in the "
                        "training set; every test class needs training samples")


def batches(
    data: TensorData | ImageFiles,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    device: torch.device | str | None = None,
    epoch: int = 0,
    workers: int = 0,
    part: Callable[[int], slice] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` minibatches covering ``data`` once, in an order drawn from ``generator``.

    ``generator`` must be a CPU generator (the default one when None). With ``drop_last``
    a final batch smaller than ``batch_size`` is skipped. Streamed data (`ImageFiles`) is
    decoded by ``workers`` DataLoader processes, its augmentation seeded by ``epoch``
    and each sample's index; in-memory data ignores both. Under DDP, ``part(n)`` is this
    rank's slice of a global batch of n samples (``distributed.shard``): a streamed dataset
    then decodes and yields only that part of each batch (its first sample when the part is
    empty), while in-memory data still yields the whole batch.
    """
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    n = len(data)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if isinstance(data, ImageFiles):
        return stream_batches(data, order, batch_size, epoch=epoch, workers=workers,
                              drop_last=drop_last, device=device, part=part)
    return _tensor_batches(data, order, batch_size, drop_last, device)


def _tensor_batches(data: TensorData, order: torch.Tensor, batch_size: int, drop_last: bool,
                    device: torch.device | str | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        x, y = data.x[idx], data.y[idx]
        if device is not None:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        yield x, y


def in_memory(data: DatasetSplits) -> bool:
    """Whether every split of ``data`` is held in memory (not streamed from disk)."""
    return all(isinstance(getattr(data, split), TensorData) for split in ("train", "val", "test"))


def path_in_identity(name: str, options: dict[str, Any] | None = None) -> bool:
    """Whether dataset ``name`` with ``options`` reads the user's own files from ``data_dir``,
    so that the folder is part of what a run computes (see `register_dataset`)."""
    rule = DATASETS.info(name).get("path_in_identity", False)
    return bool(rule(dict(options or {}))) if callable(rule) else bool(rule)


from sparsetrain.data import digits, mnist1d  # noqa: E402,F401  (registers the built-in datasets)
from sparsetrain.data import cifar, idx, imagefolder, imagenet, npz, ucr  # noqa: E402,F401  (readers of files)
from sparsetrain.data import graph  # noqa: E402,F401  (generated graph: csbm)

__all__ = [
    "DATASETS",
    "DatasetSplits",
    "ImageFiles",
    "TensorData",
    "batches",
    "check_splits",
    "dataset_options",
    "in_memory",
    "list_datasets",
    "load",
    "path_in_identity",
    "register_dataset",
    "stratified_split",
]
