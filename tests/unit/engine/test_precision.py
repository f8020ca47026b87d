"""The Trainer's precision option: bf16 autocast trains a masked method, and an fp16 step the
GradScaler skips leaves weights, masks, optimizer state and the method's counter untouched."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsetrain.algorithms.rigl import RigLConfig
from sparsetrain.algorithms.base import SparsityConfig
from sparsetrain.data import DatasetSplits, TensorData
from sparsetrain.engine import Callback, TrainConfig, Trainer
from sparsetrain.errors import UserError
from sparsetrain.experiments.spec import build_spec


def splits(n: int = 96) -> DatasetSplits:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 10, generator=g)
    y = (x[:, :5].sum(1) > 0).long() + 2 * (x[:, 5] > 0).long()
    return DatasetSplits("toy", TensorData(x, y), TensorData(x[:16], y[:16]), TensorData(x[:32], y[:32]), 4, (10,))


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 4))


def rigl_trainer(precision: str, epochs: int = 4, device: str = "cpu", **options) -> Trainer:
    config = TrainConfig(epochs=epochs, batch_size=16, lr=0.1, device=device, precision=precision, **options)
    method = RigLConfig(density=0.3, distribution="uniform", update_interval=2, drop_fraction=0.5)
    return Trainer(model(), splits(), config, method="rigl", method_config=method, seed=1)


class Dtypes(Callback):
    """Records the dtype of the logits the loss was computed from."""

    def __init__(self) -> None:
        self.seen: set[torch.dtype] = set()

    def on_fit_start(self, trainer):
        trainer.model[-1].register_forward_hook(lambda m, i, out: self.seen.add(out.dtype))


def test_bf16_autocast_trains_rigl_keeping_masks_and_density(device):
    trainer = rigl_trainer("bf16", epochs=6, device=device)
    dtypes = Dtypes()
    trainer.callbacks.append(dtypes)
    history = trainer.fit()
    assert dtypes.seen == {torch.bfloat16}  # the forward really ran under bf16 autocast
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]
    assert history[-1]["test_acc"] > 0.6 > history[0]["test_acc"]  # 4 classes
    method = trainer.method
    assert method.step_count == 6 * 6
    for w in method.weights:
        assert int(w.mask.sum()) == method.targets[w.name] == round(0.3 * w.numel)
        assert not w.values[~w.mask].any()
        assert w.values.dtype == torch.float32  # autocast keeps fp32 master weights


def _snapshot(trainer: Trainer) -> dict[str, torch.Tensor]:
    state = {f"model.{k}": v.clone() for k, v in trainer.model.state_dict().items()}
    for i, (p, s) in enumerate(trainer.optimizer.state.items()):
        state.update({f"opt.{i}.{k}": v.clone() for k, v in s.items() if torch.is_tensor(v)})
    return state


def _one_step(trainer: Trainer, x: torch.Tensor, y: torch.Tensor, poison: bool) -> bool:
    trainer.optimizer.zero_grad(set_to_none=True)
    with trainer.precision.autocast():
        loss = F.cross_entropy(trainer.model(x), y)
    trainer.precision.backward(loss)
    if poison:
        trainer.model[0].weight.grad[0, 0] = float("inf")
    trainer.precision.unscale(trainer.optimizer)
    return trainer.precision.step(trainer.method, trainer.optimizer)


def test_fp16_step_skipped_by_the_grad_scaler_leaves_everything_untouched(device):
    trainer = rigl_trainer("fp16", device=device)
    assert isinstance(trainer.precision.scaler, torch.amp.GradScaler)
    x, y = splits().train.x[:16].to(device), splits().train.y[:16].to(device)
    assert _one_step(trainer, x, y, poison=False)  # creates momentum; step 1 (not an update step)
    assert trainer.method.step_count == 1
    before, scale = _snapshot(trainer), trainer.precision.scaler.get_scale()
    assert any(k.startswith("opt.") for k in before)
    # step 2 would be a RigL topology update (update_interval=2): skipped, it must not happen
    assert not _one_step(trainer, x, y, poison=True)
    after = _snapshot(trainer)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert trainer.method.step_count == 1
    assert trainer.precision.scaler.get_scale() == scale / 2
    masks = {w.name: w.mask.clone() for w in trainer.method.weights}
    assert _one_step(trainer, x, y, poison=False)  # the next clean step is the update step
    assert trainer.method.step_count == 2
    assert any(not torch.equal(masks[w.name], w.mask) for w in trainer.method.weights)


def test_fp16_training_learns_and_resumes_the_scaler(tmp_path, device):
    trainer = rigl_trainer("fp16", epochs=3, device=device)
    history = trainer.fit()
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert trainer.method.step_count <= 3 * 6
    trainer.save(tmp_path / "c.pt")
    again = rigl_trainer("fp16", epochs=3, device=device)
    again.load(tmp_path / "c.pt")
    assert again.precision.scaler.get_scale() == trainer.precision.scaler.get_scale()


def test_fp16_refuses_a_method_that_cannot_run_from_the_optimizer_hook():
    config = TrainConfig(epochs=1, batch_size=16, device="cpu", precision="fp16")
    with pytest.raises(UserError, match="precision=fp16 needs a method that runs from the optimizer's step hook"):
        Trainer(model(), splits(), config, method="edge-popup", seed=0)


@pytest.mark.parametrize("option", [{"precision": "bf16"}, {"compile": True}, {"channels_last": True}])
def test_speed_and_precision_options_refuse_the_sparse_backend(option):
    config = TrainConfig(epochs=1, batch_size=16, device="cpu", **option)
    with pytest.raises(UserError, match="needs backend=masked"):
        Trainer(model(), splits(), config, method="static", seed=0,
                method_config=SparsityConfig(density=0.5, backend="sparse"))


def test_precision_is_part_of_a_run_identity_and_speed_options_are_not():
    base = {"method": "rigl", "model": "mlp", "dataset": "digits"}
    plain = build_spec(base)
    assert plain.resolved()["precision"] == "fp32"
    assert build_spec({**base, "precision": "bf16"}).config_hash != plain.config_hash
    assert build_spec({**base, "compile": True, "channels_last": True}).config_hash == plain.config_hash
