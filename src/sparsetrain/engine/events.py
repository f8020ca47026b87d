"""The named events of the training loop; callbacks implement ``on_<event>(trainer)``.

The loop, in pseudocode (each name below is an `Event`):

    FIT_START
    method.prepare(train batches)            # once: pruning at initialization reads data here
    for epoch in range(start_epoch, epochs):
        EPOCH_START
        for x, y in train batches:          # order drawn from a generator seeded by (seed, epoch)
            BATCH_START
            loss = criterion(model(x), y); loss.backward()
            AFTER_BACKWARD                   # gradients are dense and unmasked here
            method.step()                    # optimizer step + masks + topology update
            BATCH_END
        EVAL                                 # validation and test metrics
        EPOCH_END                            # epoch metrics complete; checkpoints are written
    FIT_END
"""

from __future__ import annotations

from enum import Enum


class Event(str, Enum):
    FIT_START = "fit_start"
    EPOCH_START = "epoch_start"
    BATCH_START = "batch_start"
    AFTER_BACKWARD = "after_backward"
    BATCH_END = "batch_end"
    EVAL = "eval"
    EPOCH_END = "epoch_end"
    FIT_END = "fit_end"


class Callback:
    """Base class for hooks; override any ``on_<event>(self, trainer)`` you need."""

    def run(self, event: Event, trainer: object) -> None:
        handler = getattr(self, f"on_{event.value}", None)
        if handler is not None:
            handler(trainer)
