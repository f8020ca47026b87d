"""The callback that augments every training batch (TrainConfig ``augment``)."""

from __future__ import annotations

from typing import Any

from sparsetrain.data.augment import AUGMENTATIONS
from sparsetrain.engine import distributed
from sparsetrain.engine.events import Callback
from sparsetrain.errors import ConfigError
from sparsetrain.sparse import generator


class Augment(Callback):
    """Replaces each training batch by its augmented copy at BATCH_START.

    The randomness of batch ``i`` of epoch ``e`` comes from a generator seeded by
    ``(seed, e, i)``, so a run is reproducible, a resumed run (which restarts at an epoch
    boundary) augments exactly as the uninterrupted one, and the global RNG is untouched.
    Under DDP each rank's part of the batch gets draws seeded by its rank as well.
    """

    def __init__(self, name: str, seed: int, input_shape: tuple[int, ...]) -> None:
        if len(input_shape) != 3:
            raise ConfigError(f"augment {name} needs image inputs (C, H, W); this dataset's inputs are {tuple(input_shape)}")
        self.name, self.transform, self.seed = name, AUGMENTATIONS[name], seed
        self.index = 0

    def on_epoch_start(self, trainer: Any) -> None:
        self.index = 0

    def on_batch_start(self, trainer: Any) -> None:
        x, y = trainer.batch
        ranked = (distributed.rank(),) if distributed.world_size() > 1 else ()  # DDP: each rank its own draws
        trainer.batch = (self.transform(x, generator(self.seed, trainer.epoch, self.index, "augment", *ranked)), y)
        self.index += 1
