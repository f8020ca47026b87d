"""One training loop that fires named events (see `events.py` for its pseudocode)."""

from __future__ import annotations

import inspect
import math
import time
import warnings
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from sparsetrain.algorithms import Method, create
from sparsetrain.data import DatasetSplits, ImageFiles, TensorData, batches
from sparsetrain.engine import distributed
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


DDP_OPTIONS = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters


def resolve_device(name: str) -> torch.device:
    """The device option as a device; under torchrun with NCCL, this rank's own GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None and distributed.is_distributed() and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return device


class Trainer:
    """Trains ``model`` on ``data`` with sparsity method ``method`` (a registered name).

    After `fit`, ``history`` holds one metrics dict per epoch. With ``checkpoint_path``
    a checkpoint is written atomically after every epoch; `fit(resume=True)` continues
    from it and reproduces the uninterrupted run exactly (same batches, masks, RNG).

    Launched by torchrun (``torchrun --nproc-per-node N``), the N processes train one run with
    `DistributedDataParallel`: ``batch_size`` stays the examples per optimizer step, and each
    rank takes its contiguous part of every batch of the one-process order (`distributed.shard`),
    so the run follows the one-process run (up to float rounding, and BatchNorm statistics,
    which each rank computes over its own part). After every optimizer step the ranks prove
    they hold the same masks (`distributed.MaskGuard`); rank 0 alone writes checkpoints.
    """

    def __init__(self, model: nn.Module, data: DatasetSplits, config: TrainConfig, *,
                 method: str = "dense", method_config: Any = None, seed: int = 0,
                 callbacks: Iterable[Callback] = (), checkpoint_path: str | Path | None = None) -> None:
        self.config = config
        distributed.init_from_env()  # under torchrun: join the other ranks
        self.world = distributed.world_size()
        self.device = resolve_device(config.device)
        distributed.check_device(self.device)
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
        self.mask_guard = distributed.MaskGuard(self.method.weights)
        self.mask_guard.check("after the first masks were drawn", force=True)  # before DDP copies rank 0's
        self.train_model = self._data_parallel()
        """The model the training forward runs through: `model` itself, or its DDP wrapper."""
        self.epoch = config.start_epoch
        self.history: list[dict[str, float]] = []
        self.loss: torch.Tensor | None = None
        self.step_loss = math.nan
        """The mean loss of the last step's whole batch (over every rank under DDP)."""
        self.batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def _data_parallel(self) -> nn.Module:
        if self.world == 1:
            return self.model
        # buffers are not broadcast at every forward: masks are proven equal by the mask guard,
        # and the other buffers (BatchNorm statistics) are copied from rank 0 before each evaluation
        no_sync = {"forward_sync_buffers" if "forward_sync_buffers" in DDP_OPTIONS else "broadcast_buffers": False}
        return nn.parallel.DistributedDataParallel(
            self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None, **no_sync)

    def fire(self, event: Event) -> None:
        for callback in self.callbacks:
            callback.run(event, self)

    # --- the loop ---------------------------------------------------------------------
    def fit(self, resume: bool = False) -> list[dict[str, float]]:
        if resume and self.checkpoint_path and self.checkpoint_path.exists():
            self.load(self.checkpoint_path)
        self.fire(Event.FIT_START)
        self.method.prepare(batches(self.data.train, self.config.batch_size, shuffle=True,  # no-op once prepared
                                    generator=generator(self.seed, "prepare"), device=self.device,
                                    epoch=-1, workers=self.config.workers))
        self.mask_guard.check("when training starts", force=True)
        while self.epoch < self.config.epochs:
            self.fire(Event.EPOCH_START)
            started = time.perf_counter()
            train_metrics = self.train_epoch()
            self.sync_buffers()
            metrics = {"epoch": self.epoch + 1, **train_metrics,
                       **self.evaluate(self.data.val, "val"), **self.evaluate(self.data.test, "test"),
                       "lr": self.optimizer.param_groups[0]["lr"], "density": self.method.density(),
                       "itop_rate": self.method.itop_rate(), "epoch_time_s": time.perf_counter() - started}
            metrics = distributed.broadcast_object(metrics)  # every rank decides on rank 0's numbers
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
        for step, (x, y) in enumerate(batches(self.data.train, self.config.batch_size, shuffle=True, generator=order,
                                              epoch=self.epoch, workers=self.config.workers,
                                              part=distributed.shard if self.world > 1 else None), 1):
            x, y, share = self.local_part(x, y, step)
            self.batch = (x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True))
            self.fire(Event.BATCH_START)
            x, y = self.batch
            self.optimizer.zero_grad(set_to_none=True)
            with self.precision.autocast():
                logits = self.train_model(x)
                self.loss = F.cross_entropy(logits, y)
            loss_sum, hits, count, bad_x = self.step_totals(logits, y, x, share)
            self.step_loss = loss_sum / count
            if not math.isfinite(loss_sum):
                raise self.diverged(step, self.step_loss, x, bad_x > 0)
            self.precision.backward(self.loss if share == 1 else self.loss * share)
            self.precision.unscale(self.optimizer)  # callbacks see true gradients
            self.fire(Event.AFTER_BACKWARD)
            self.precision.step(self.method, self.optimizer)  # fp16: skipped with the method on inf/NaN
            self.mask_guard.check(f"after step {step} of epoch {self.epoch + 1}")
            self.scheduler.step()
            total_loss += loss_sum
            correct += int(hits)
            seen += int(count)
            self.fire(Event.BATCH_END)
        return {"train_loss": total_loss / seen, "train_acc": correct / seen}

    def local_part(self, x: torch.Tensor, y: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        """This rank's part of the global batch ``(x, y)`` and the factor its mean loss is scaled by
        before backward, ``local size x ranks / global size``, so that DDP's average of the ranks'
        gradients is the gradient of the global batch's mean loss even when the parts differ in
        size. A rank whose part is empty (a last batch smaller than the number of ranks) runs the
        first example with factor 0: every rank must take part in each backward. A streamed
        dataset hands each rank only its part (it decodes no other), so ``(x, y)`` is that part."""
        if self.world == 1:
            return x, y, 1.0
        n = min(self.config.batch_size, len(self.data.train) - (step - 1) * self.config.batch_size)
        part = distributed.shard(n)
        size = part.stop - part.start
        if isinstance(self.data.train, TensorData):
            x, y = (x[:1], y[:1]) if size == 0 else (x[part], y[part])
        return x, y, size * self.world / n

    def step_totals(self, logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor,
                    share: float) -> tuple[float, float, float, float]:
        """(loss sum, correct, examples, ranks with non-finite inputs) of the global batch; under
        DDP summed over the ranks, so that every rank stops at the same step of a diverged run."""
        n = len(y) if share else 0
        totals = [float(self.loss.detach()) * n, float((logits.argmax(1) == y).sum()) if n else 0.0, float(n)]
        if self.world == 1:
            return (*totals, 0.0)
        bad = 0.0 if bool(torch.isfinite(x).all()) else 1.0
        return tuple(distributed.all_reduce_sum([*totals, bad]).tolist())

    @torch.no_grad()
    def sync_buffers(self) -> None:
        """Under DDP, copy rank 0's buffers other than masks (BatchNorm statistics) to every rank
        before evaluation, so all ranks evaluate, and checkpoint, the same model."""
        if self.world == 1:
            return
        masks = {id(w.mask) for w in self.method.weights}
        distributed.broadcast_tensors(b for b in self.model.buffers() if id(b) not in masks)

    def diverged(self, step: int, loss: float, x: torch.Tensor, bad_data: bool = False) -> DivergedError:
        """The error for a non-finite loss at ``step`` (1-based) of the current epoch."""
        if bad_data or not bool(torch.isfinite(x).all()):
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
    def evaluate(self, data: TensorData | ImageFiles, prefix: str) -> dict[str, float]:
        if len(data) == 0:
            return {}
        self.model.eval()
        total_loss, correct = 0.0, 0
        streamed = not isinstance(data, TensorData)
        size = self.config.batch_size if streamed else 1024  # streamed: decoded images are big
        split = streamed and self.world > 1  # each rank decodes and scores its part of every batch
        for start, (x, y) in zip(range(0, len(data), size), batches(
                data, size, shuffle=False, device=self.device, workers=self.config.workers,
                part=distributed.shard if split else None)):
            if split:
                part = distributed.shard(min(size, len(data) - start))
                if part.stop == part.start:
                    continue  # no sample of this batch is this rank's (it was handed the first one)
            with self.precision.autocast():
                logits = self.model(x)
            total_loss += float(F.cross_entropy(logits.float(), y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
        if split:
            total_loss, correct = distributed.all_reduce_sum([total_loss, correct]).tolist()
        return {f"{prefix}_loss": total_loss / len(data), f"{prefix}_acc": correct / len(data)}

    # --- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs; under DDP every rank's RNG state too (call it on every rank)."""
        state = {"epoch": self.epoch, "model": self.model.state_dict(),
                 "method": self.method.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "rng": rng_state(),
                 "scaler": self.precision.state_dict(),
                 "history": self.history}
        if self.world > 1:
            state.update(world_size=self.world, rank_rng=distributed.all_gather_object(state["rng"]))
        return state

    def save(self, path: str | Path) -> None:
        """Write the checkpoint atomically (under DDP, rank 0 writes; every rank must call it)."""
        state = self.state_dict()
        if distributed.is_main():
            save_checkpoint(state, path)

    def load(self, path: str | Path) -> None:
        """Continue from the checkpoint at ``path``; a damaged or foreign checkpoint is a
        UserError naming the file (checked before any kernel sees its sparse layers)."""
        state = load_checkpoint(path, map_location=self.device)
        written_by = state.get("world_size", 1) if isinstance(state.get("world_size", 1), int) else 0
        if written_by != self.world:
            raise UserError(f"checkpoint {str(path)!r} was written by a run on {written_by} process(es), "
                            f"this one has {self.world}: resume it with torchrun --nproc-per-node "
                            f"{written_by} (plain sparsetrain for 1), or start over with --restart")
        try:
            self.model.load_state_dict(state["model"])
            self.method.load_state_dict(state["method"])
            self.optimizer.load_state_dict(state["optimizer"])
            check_optimizer_state(self.optimizer)
            self.scheduler.load_state_dict(state["scheduler"])
            self.precision.load_state_dict(state.get("scaler", {}))
            rng = state["rank_rng"][distributed.rank()] if self.world > 1 else state["rng"]
            set_rng_state({k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in rng.items()})
            self.history = list(state["history"])
            self.epoch = int(state["epoch"])
        except Exception as exc:  # any damage: a KeyError, a size mismatch, bad CSR, a wrong type
            raise damaged_checkpoint(path, exc) from None
        if not 0 <= self.epoch <= self.config.epochs or len(self.history) != self.epoch:
            raise UserError(f"checkpoint {str(path)!r} is damaged: it is at epoch {self.epoch} with "
                            f"{len(self.history)} epochs of history (this run has {self.config.epochs})")
