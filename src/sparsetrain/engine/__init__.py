"""The training loop: a Trainer firing named events, checkpoints, optimizers and schedules."""

from sparsetrain.engine.checkpoint import load_checkpoint, save_checkpoint
from sparsetrain.engine.config import TrainConfig
from sparsetrain.engine.events import Callback, Event
from sparsetrain.engine.optim import LRFactor, make_optimizer, make_scheduler
from sparsetrain.engine.trainer import Trainer, resolve_device

__all__ = ["Callback", "Event", "LRFactor", "TrainConfig", "Trainer", "load_checkpoint",
           "make_optimizer", "make_scheduler", "resolve_device", "save_checkpoint"]
