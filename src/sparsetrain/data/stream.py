"""Datasets too large for memory: image files decoded on the fly, in DataLoader workers.

An `ImageFiles` split holds only file paths and labels. Its batches come from
`stream_batches`, a `torch.utils.data.DataLoader` over the sample order the in-memory
path would use (`order`), so a streaming run sees the same batches as a single process
reading from memory would, however many workers decode:

- the order of an epoch is drawn by the caller (the Trainer's per-epoch generator); under
  DDP every rank draws the same order and decodes only its part of each batch (``part``);
- the random crop and flip of sample ``i`` in epoch ``e`` come from a generator seeded by
  ``(run seed, e, i)`` (`sample_generator`), never from a worker's state, so batches do
  not depend on the number of workers and a resumed run repeats exactly.

An image that cannot be decoded is reported as one sentence naming the file, also when a
worker meets it (it travels back as a value, `Unreadable`, and is raised here as a
`UserError`, instead of torch's wrapped traceback).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from sparsetrain.data.transforms import eval_transform, to_normalized, train_transform
from sparsetrain.errors import UserError


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The CPU generator of sample ``index``'s augmentation in ``epoch`` of run ``seed``."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


@dataclass(frozen=True)
class Unreadable:
    """A sample (or a batch holding it) whose file could not be decoded; ``message`` says which."""

    message: str


@dataclass(frozen=True, eq=False)
class ImageFiles(torch.utils.data.Dataset):
    """One split of an image tree: ``paths[i]`` (bytes, UTF-8) has label ``y[i]``.

    ``dataset[(epoch, i)]`` decodes image i to a normalized float32 ``(3, size, size)``
    tensor: with ``train`` the random resized crop and flip seeded by ``(seed, epoch, i)``,
    otherwise the shorter side resized to ``resize`` and the centre crop. Paths are kept
    in one numpy array (no Python object per file), so forked workers share them.
    """

    paths: np.ndarray
    y: torch.Tensor
    train: bool
    size: int
    resize: int
    seed: int

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: np.ndarray, *, train: bool) -> "ImageFiles":
        """The samples at ``index``, with the training (``train``) or evaluation transform."""
        return ImageFiles(self.paths[index], self.y[torch.from_numpy(np.asarray(index, np.int64))],
                          train, self.size, self.resize, self.seed)

    def path(self, i: int) -> str:
        return bytes(self.paths[i]).decode("utf-8", "surrogateescape")

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int] | Unreadable:
        epoch, i = key
        from sparsetrain.data.imagefolder import read_pil  # Pillow is needed only here

        try:
            image = read_pil(self.path(i))
        except UserError as exc:
            return Unreadable(str(exc))
        if self.train:
            image = train_transform(image, self.size, sample_generator(self.seed, epoch, i))
        else:
            image = eval_transform(image, self.resize, self.size)
        return to_normalized(image), int(self.y[i])


def collate(items: Sequence[tuple[torch.Tensor, int] | Unreadable]) -> tuple[torch.Tensor, torch.Tensor] | Unreadable:
    """Stack samples into ``(x, y)``; the first `Unreadable` among them stands for the batch."""
    for item in items:
        if isinstance(item, Unreadable):
            return item
    x = torch.from_numpy(np.stack([x.numpy() for x, _ in items]))  # numpy: no thread pool per batch
    return x, torch.tensor([y for _, y in items], dtype=torch.int64)


class BatchKeys(torch.utils.data.Sampler):
    """The ``(epoch, index)`` keys of each batch of ``order``, made as they are asked for; with
    ``part``, only ``part(n)`` of each batch of n (its first key when that slice is empty)."""

    def __init__(self, order: torch.Tensor, batch_size: int, epoch: int, drop_last: bool,
                 part: Callable[[int], slice] | None = None) -> None:
        self.order, self.batch_size, self.epoch, self.part = order, batch_size, epoch, part
        self.stop = len(order) - len(order) % batch_size if drop_last else len(order)

    def __len__(self) -> int:
        return -(-self.stop // self.batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for start in range(0, self.stop, self.batch_size):
            keys = [(self.epoch, i) for i in self.order[start:start + self.batch_size].tolist()]
            yield (keys[self.part(len(keys))] or keys[:1]) if self.part else keys


def stream_batches(data: ImageFiles, order: torch.Tensor, batch_size: int, *, epoch: int, workers: int,
                   drop_last: bool = False, device: torch.device | str | None = None,
                   part: Callable[[int], slice] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` batches of ``data`` in ``order``, decoded by ``workers`` processes (0: this one);
    with ``part`` only that slice of each batch (see `BatchKeys`)."""
    device = torch.device(device) if device is not None else None
    loader = torch.utils.data.DataLoader(
        data, batch_sampler=BatchKeys(order, batch_size, epoch, drop_last, part), num_workers=workers,
        collate_fn=collate, pin_memory=torch.cuda.is_available() and (device is None or device.type == "cuda"),
        generator=torch.Generator().manual_seed(0))  # workers' base seed; leaves the global RNG alone
    for batch in loader:
        if isinstance(batch, Unreadable):
            raise UserError(batch.message)
        x, y = batch
        if device is not None:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        yield x, y
