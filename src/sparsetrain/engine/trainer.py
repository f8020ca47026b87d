"""One training loop that fires named events (see `events.py` for its pseudocode)."""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from sparsetrain.algorithms import Method, create
from sparsetrain.data import DatasetSplits, TensorData, batches
from sparsetrain.engine.augment import Augment
from sparsetrain.engine.checkpoint import (check_optimizer_state, damaged_checkpoint, load_checkpoint, rng_state,
                                          save_checkpoint, set_rng_state)
from sparsetrain.engine.config import TrainConfig
from sparsetrain.engine.events import Callback, Event
from sparsetrain.engine.optim import make_optimizer, make_scheduler
from sparsetrain.engine.precision import Precision, apply_speed_options
from sparsetrain.errors import DivergedError, UserError
from sparsetrain.sparse import generator


DIVERGED_FACTOR = 1000.0
"""An epoch whose mean cross-entropy exceeds this many times ln(classes) (the loss of a
uniform guess) is diverged: logits that far off are overflowing, not learning."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    """Trains ``model`` on ``data`` with sparsity method ``method`` (a registered name).

    After `fit`, ``history`` holds one metrics dict per epoch. With ``checkpoint_path``
    a checkpoint is written atomically after every epoch; `fit(resume=True)` continues
    from it and reproduces the uninterrupted run exactly (same batches, masks, RNG).
    """

    def __init__(self, model: nn.Module, data: DatasetSplits, config: TrainConfig, *,
                 method: str = "dense", method_config: Any = None, seed: int = 0,
                 callbacks: Iterable[Callback] = (), checkpoint_path: str | Path | None = None) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        self.data = data
        self.seed = seed
        self.callbacks = list(callbacks)
        if config.augment != "none":  # first, so other callbacks see the augmented batch
            self.callbacks.insert(0, Augment(config.augment, seed, data.input_shape))
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.steps_per_epoch = -(-len(data.train) // config.batch_size)
        self.total_steps = self.steps_per_epoch * (config.epochs - config.start_epoch)  # steps this run takes
        self.optimizer = make_optimizer(self.model, config)
        self.scheduler = make_scheduler(self.optimizer, config, self.steps_per_epoch)
        with warnings.catch_warnings():  # stepping before any optimizer step is the point here
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(config.start_epoch * self.steps_per_epoch):
                self.scheduler.step()
        self.method: Method = create(method, self.model, self.optimizer, config=method_config,
                                     total_steps=self.total_steps,
                                     steps_per_epoch=self.steps_per_epoch, seed=seed)
        self.precision = Precision(config.precision, self.device)
        apply_speed_options(self.model, self.method, config)
        self.epoch = config.start_epoch
        self.history: list[dict[str, float]] = []
        self.loss: torch.Tensor | None = None
        self.batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def fire(self, event: Event) -> None:
        for callback in self.callbacks:
            callback.run(event, self)

    # --- the loop ---------------------------------------------------------------------
    def fit(self, resume: bool = False) -> list[dict[str, float]]:
        if resume and self.checkpoint_path and self.checkpoint_path.exists():
            self.load(self.checkpoint_path)
        self.fire(Event.FIT_START)
        self.method.prepare(batches(self.data.train, self.config.batch_size, shuffle=True,  # no-op once prepared
                                    generator=generator(self.seed, "prepare"), device=self.device))
        while self.epoch < self.config.epochs:
            self.fire(Event.EPOCH_START)
            started = time.perf_counter()
            train_metrics = self.train_epoch()
            metrics = {"epoch": self.epoch + 1, **train_metrics,
                       **self.evaluate(self.data.val, "val"), **self.evaluate(self.data.test, "test"),
                       "lr": self.optimizer.param_groups[0]["lr"], "density": self.method.density(),
                       "itop_rate": self.method.itop_rate(), "epoch_time_s": time.perf_counter() - started}
            self.check_finite(metrics)
            self.history.append(metrics)
            self.fire(Event.EVAL)
            self.epoch += 1
            if self.checkpoint_path:
                self.save(self.checkpoint_path)
            self.fire(Event.EPOCH_END)
        self.fire(Event.FIT_END)
        return self.history

    def train_epoch(self) -> dict[str, float]:
        self.model.train()
        order = generator(self.seed, self.epoch, "batches")
        total_loss, correct, seen = 0.0, 0, 0
        for step, (x, y) in enumerate(batches(self.data.train, self.config.batch_size, shuffle=True,
                                              generator=order, device=self.device), 1):
            self.batch = (x, y)
            self.fire(Event.BATCH_START)
            x, y = self.batch
            self.optimizer.zero_grad(set_to_none=True)
            with self.precision.autocast():
                logits = self.model(x)
                self.loss = F.cross_entropy(logits, y)
            if not torch.isfinite(self.loss):
                raise self.diverged(step, float(self.loss.detach()), x)
            self.precision.backward(self.loss)
            self.precision.unscale(self.optimizer)  # callbacks see true gradients
            self.fire(Event.AFTER_BACKWARD)
            self.precision.step(self.method, self.optimizer)  # fp16: skipped with the method on inf/NaN
            self.scheduler.step()
            total_loss += float(self.loss.detach()) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            self.fire(Event.BATCH_END)
        return {"train_loss": total_loss / seen, "train_acc": correct / seen}

    def diverged(self, step: int, loss: float, x: torch.Tensor) -> DivergedError:
        """The error for a non-finite loss at ``step`` (1-based) of the current epoch."""
        if not bool(torch.isfinite(x).all()):
            cause = "the training batch holds non-finite values (check the data file)"
        else:
            cause = (f"the learning rate (lr={self.config.lr:g}) or weight decay "
                     f"({self.config.weight_decay:g}) is too high for this model and optimizer")
        return DivergedError(f"training diverged at epoch {self.epoch + 1}, step {step} of "
                             f"{self.steps_per_epoch}: the loss is {loss}; likely cause: {cause}")

    def check_finite(self, metrics: dict[str, float]) -> None:
        """Stop the run (`DivergedError`) when an epoch's losses are not finite (the weights
        diverged even if every training loss was), or when its mean training loss exceeds
        `DIVERGED_FACTOR` times that of a uniform guess (ln C): finite, but not training."""
        bad = sorted(k for k, v in metrics.items() if k.endswith("_loss") and not math.isfinite(v))
        limit = DIVERGED_FACTOR * math.log(max(self.data.num_classes, 2))
        if bad:
            what = f"{bad[0]} is {metrics[bad[0]]}"
        elif metrics["train_loss"] > limit:
            what = (f"the mean training loss is {metrics['train_loss']:.3g}, over {DIVERGED_FACTOR:g} "
                    f"times that of a uniform guess (ln {self.data.num_classes})")
        else:
            return
        raise DivergedError(
            f"training diverged in epoch {self.epoch + 1}: {what}; likely cause: the learning rate "
            f"(lr={self.config.lr:g}) or weight decay ({self.config.weight_decay:g}) is too high, "
            "or the data hold non-finite values")

    @torch.no_grad()
    def evaluate(self, data: TensorData, prefix: str) -> dict[str, float]:
        if len(data) == 0:
            return {}
        self.model.eval()
        total_loss, correct = 0.0, 0
        for x, y in batches(data, 1024, shuffle=False, device=self.device):
            with self.precision.autocast():
                logits = self.model(x)
            total_loss += float(F.cross_entropy(logits.float(), y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
        return {f"{prefix}_loss": total_loss / len(data), f"{prefix}_acc": correct / len(data)}

    # --- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "model": self.model.state_dict(),
                "method": self.method.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": rng_state(),
                "scaler": self.precision.state_dict(),
                "history": self.history}

    def save(self, path: str | Path) -> None:
        save_checkpoint(self.state_dict(), path)

    def load(self, path: str | Path) -> None:
        """Continue from the checkpoint at ``path``; a damaged or foreign checkpoint is a
        UserError naming the file (checked before any kernel sees its sparse layers)."""
        state = load_checkpoint(path, map_location=self.device)
        try:
            self.model.load_state_dict(state["model"])
            self.method.load_state_dict(state["method"])
            self.optimizer.load_state_dict(state["optimizer"])
            check_optimizer_state(self.optimizer)
            self.scheduler.load_state_dict(state["scheduler"])
            self.precision.load_state_dict(state.get("scaler", {}))
            set_rng_state({k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in state["rng"].items()})
            self.history = list(state["history"])
            self.epoch = int(state["epoch"])
        except Exception as exc:  # any damage: a KeyError, a size mismatch, bad CSR, a wrong type
            raise damaged_checkpoint(path, exc) from None
        if not 0 <= self.epoch <= self.config.epochs or len(self.history) != self.epoch:
            raise UserError(f"checkpoint {str(path)!r} is damaged: it is at epoch {self.epoch} with "
                            f"{len(self.history)} epochs of history (this run has {self.config.epochs})")
