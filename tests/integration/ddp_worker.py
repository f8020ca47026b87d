"""One rank of the DDP tests, launched by ``torchrun --nproc-per-node 2`` from test_ddp.py.

Each rank writes what it saw to ``<out>/rank<r>.pt``; the test compares the ranks with each
other and with the same runs in one process (`run`, imported by the test).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

import sparsetrain as st
from sparsetrain.data import DatasetSplits, TensorData
from sparsetrain.engine import Callback, TrainConfig, Trainer, distributed
from sparsetrain.errors import UserError

METHODS = {"static": {}, "set": {"update_interval": 5}, "rigl": {"update_interval": 5},
           "granet": {"update_interval": 5, "initial_density": 0.6}}
BATCH = 21  # 200 examples: nine batches of 21 (ranks 10 + 11) and one of 11 (5 + 6); 10 steps an epoch
EPOCHS = 5  # 50 steps
UPDATE_STEP = 5  # the first topology update


def toy_data() -> DatasetSplits:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(260, 12, generator=g)
    y = (x[:, :4].sum(1) > 0).long() + (x[:, 4] > 0.5).long()
    return DatasetSplits("toy", TensorData(x[:200], y[:200]), TensorData(x[:0], y[:0]),
                         TensorData(x[200:], y[200:]), 3, (12,))


def toy_model(dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 3))


class Record(Callback):
    """Per step: the whole batch's loss; at the first update step, the first layer's gradient
    as the method reads it (after backward, before the step masks it)."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.grad: torch.Tensor | None = None

    def on_after_backward(self, trainer: Trainer) -> None:
        if len(self.losses) + 1 == UPDATE_STEP:
            self.grad = trainer.model[0].weight.grad.detach().clone()

    def on_batch_end(self, trainer: Trainer) -> None:
        self.losses.append(trainer.step_loss)


def run(method: str, **train: object) -> dict:
    """One run of ``method`` (in one process, or on this rank); what the test compares."""
    record = Record()
    config = TrainConfig(epochs=EPOCHS, batch_size=BATCH, lr=0.05, weight_decay=0.0, device="cpu", **train)
    trainer = Trainer(toy_model(), toy_data(), config, method=method, seed=3, callbacks=[record],
                      method_config=st.algorithms.config_class(method)(density=0.3, **METHODS[method]))
    trainer.fit()
    return {"losses": record.losses, "grad": record.grad,
            "masks": {w.name: w.mask.clone() for w in trainer.method.weights},
            "test_acc": trainer.history[-1]["test_acc"]}


class Interrupt(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer: Trainer) -> None:
        if trainer.epoch == self.epoch:  # after the checkpoint of that epoch
            raise KeyboardInterrupt


class FlipOnRankOne(Callback):
    """Rank 1 changes one mask entry at step 3: the ranks' masks diverge there."""

    def __init__(self) -> None:
        self.steps = 0

    def on_after_backward(self, trainer: Trainer) -> None:
        self.steps += 1
        if self.steps == 3 and distributed.rank() == 1:
            trainer.method.weights[0].mask.view(-1)[0] ^= True


def resumed_run(folder: Path) -> dict:
    """RigL with dropout (each rank its own RNG): 3 epochs straight, then 3 epochs stopped after
    epoch 2 and resumed; the final weights of both."""
    config = TrainConfig(epochs=3, batch_size=BATCH, lr=0.05, device="cpu")
    options = st.algorithms.config_class("rigl")(density=0.3, update_interval=4)
    out = {}
    for name, stops in (("straight", None), ("resumed", 2)):
        path = folder / f"{name}.pt"
        trainer = Trainer(toy_model(0.3), toy_data(), config, method="rigl", method_config=options, seed=1,
                          checkpoint_path=path, callbacks=[Interrupt(stops)] if stops else [])
        try:
            trainer.fit()
        except KeyboardInterrupt:
            trainer = Trainer(toy_model(0.3), toy_data(), config, method="rigl", method_config=options, seed=1,
                              checkpoint_path=path)
            trainer.fit(resume=True)
        out[name] = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        out[name + "_history"] = [{k: v for k, v in h.items() if k != "epoch_time_s"} for h in trainer.history]
    return out


class Losses(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_batch_end(self, trainer: Trainer) -> None:
        self.losses.append(trainer.step_loss)


def streamed_run(tree: Path) -> dict:
    """SET on a streamed image tree (imagenet_folder, batches of 10 of 48 images, 12 test images):
    the losses, the masks, the test metrics, and the samples this process decoded (training
    ones as (epoch, index), test ones as ("eval", index))."""
    from sparsetrain.data import ImageFiles, load

    decoded: list[tuple[int, int]] = []
    original = ImageFiles.__getitem__

    def counting(self: ImageFiles, key: tuple[int, int]):
        decoded.append(key if self.train else ("eval", key[1]))
        return original(self, key)

    ImageFiles.__getitem__ = counting  # type: ignore[method-assign]
    try:
        data = load("imagenet_folder", data_dir=str(tree), seed=0, val_fraction=0.0, size=8, resize=8)
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(192, 16), nn.ReLU(), nn.Linear(16, 3))
        losses = Losses()
        trainer = Trainer(model, data, TrainConfig(epochs=2, batch_size=10, lr=0.05, device="cpu"), method="set",
                          method_config=st.algorithms.config_class("set")(density=0.5, update_interval=2),
                          seed=0, callbacks=[losses])
        trainer.fit()
    finally:
        ImageFiles.__getitem__ = original  # type: ignore[method-assign]
    return {"losses": losses.losses, "decoded": decoded,
            "test": [(h["test_loss"], h["test_acc"]) for h in trainer.history],
            "masks": {w.name: w.mask.clone() for w in trainer.method.weights}}


def main(folder: Path) -> None:
    distributed.init_from_env()
    rank = distributed.rank()
    saves: list[str] = []
    if rank == 1:  # rank 1 must never write a checkpoint: count its attempts
        import sparsetrain.engine.trainer as trainer_module
        trainer_module.save_checkpoint = lambda state, path: saves.append(str(path))
    result = {"world": distributed.world_size(), "runs": {m: run(m) for m in METHODS}}
    result.update(resumed_run(folder))
    try:
        Trainer(toy_model(), toy_data(), TrainConfig(epochs=1, batch_size=BATCH, device="cpu"), method="set",
                method_config=st.algorithms.config_class("set")(density=0.3), callbacks=[FlipOnRankOne()]).fit()
        result["mismatch"] = None
    except distributed.MaskMismatchError as exc:
        result["mismatch"] = str(exc)
    try:
        st.create("set", toy_model(), None, density=0.3, backend="sparse", total_steps=10)
        result["sparse"] = None
    except UserError as exc:
        result["sparse"] = str(exc)
    wrapped = nn.parallel.DistributedDataParallel(toy_model())
    result["wrapped_names"] = [w.name for w in st.create("static", wrapped, None, density=0.3).weights]
    result["saves"] = saves
    result["streamed"] = streamed_run(folder / "tree")
    torch.save(result, folder / f"rank{rank}.pt")
    distributed.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
