"""PGD adversarial training as a Trainer callback, composed with SET."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsetrain.algorithms.dynamic import DynamicConfig
from sparsetrain.data import DatasetSplits, TensorData
from sparsetrain.engine.adversarial import AdversarialTraining, AdversarialTrainingConfig
from sparsetrain.engine.config import TrainConfig
from sparsetrain.engine.events import Callback
from sparsetrain.engine.trainer import Trainer
from sparsetrain.errors import UserError

EPS = 0.1


def tiny_splits(n: int = 48) -> DatasetSplits:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 6, 6, generator=g)
    y = (x.flatten(1).mean(1) > 0.5).long() + 2 * (x[:, 0, 0, 0] > 0.5).long()
    part = TensorData(x, y)
    return DatasetSplits("tiny", part, TensorData(x[:8], y[:8]), TensorData(x[:16], y[:16]), 4, (1, 6, 6))


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 32), nn.ReLU(), nn.Linear(32, 4))


class Before(Callback):
    """Runs before the attack: remembers the clean batch and the masks/weights."""

    def __init__(self) -> None:
        self.clean = []
        self.state = None

    def on_batch_start(self, trainer):
        self.clean.append(trainer.batch[0].clone())
        self.state = {k: v.clone() for k, v in trainer.model.state_dict().items()}


class After(Callback):
    """Runs after the attack: checks the batch the loss was computed on."""

    def __init__(self, before: Before) -> None:
        self.before = before
        self.checked = 0

    def on_batch_start(self, trainer):
        for key, value in trainer.model.state_dict().items():  # the attack touched no weight or mask
            assert torch.equal(value, self.before.state[key]), key

    def on_after_backward(self, trainer):
        x, y = trainer.batch
        clean = self.before.clean[-1]
        assert (x - clean).abs().max() <= EPS + 1e-6 and x.min() >= 0 and x.max() <= 1
        assert (x != clean).any()
        with torch.no_grad():  # the loss was computed on these adversarial inputs
            torch.testing.assert_close(trainer.loss.detach(), F.cross_entropy(trainer.model(x), y))
        self.checked += 1


def test_adversarial_training_composes_with_set():
    before = Before()
    after = After(before)
    cfg = AdversarialTrainingConfig(eps=EPS, step_size=0.03, steps=3, eval_steps=3)
    method_config = DynamicConfig(density=0.3, update_interval=2)
    trainer = Trainer(tiny_model(), tiny_splits(), TrainConfig(epochs=2, batch_size=16, lr=0.1, device="cpu"),
                      method="set", method_config=method_config, seed=0,
                      callbacks=[before, AdversarialTraining(cfg), after])
    history = trainer.fit()
    assert after.checked == 6
    for w in trainer.method.weights:  # exact per-layer budget, pruned weights exactly zero
        assert int(w.mask.sum()) == trainer.method.targets[w.name]
        assert (w.parameter[~w.mask] == 0).all()
    assert trainer.method.itop_rate() > trainer.method.density()  # SET did update the topology
    for row in history:
        assert 0 <= row["test_robust_acc"] <= 1


def test_robust_accuracy_at_eps_zero_is_the_clean_accuracy():
    cfg = AdversarialTrainingConfig(eps=0.0, step_size=0.0, steps=1, eval_steps=2, eval_splits=("val", "test"))
    trainer = Trainer(tiny_model(), tiny_splits(), TrainConfig(epochs=2, batch_size=16, lr=0.1, device="cpu"),
                      callbacks=[AdversarialTraining(cfg)])
    for row in trainer.fit():
        assert row["test_robust_acc"] == pytest.approx(row["test_acc"])
        assert row["val_robust_acc"] == pytest.approx(row["val_acc"])


def test_robust_accuracy_per_epoch_falls_below_clean_under_attack():
    cfg = AdversarialTrainingConfig(eps=0.3, step_size=0.1, steps=2, eval_steps=10, eval_step_size=0.1)
    trainer = Trainer(tiny_model(), tiny_splits(), TrainConfig(epochs=1, batch_size=16, lr=0.1, device="cpu"),
                      callbacks=[AdversarialTraining(cfg)])
    row = trainer.fit()[-1]
    assert row["test_robust_acc"] < row["test_acc"]


def test_config_defaults_and_validation():
    cfg = AdversarialTrainingConfig()
    assert (cfg.eps, cfg.step_size, cfg.steps, cfg.eval_steps) == (8 / 255, 2 / 255, 10, 20)
    assert cfg.eval_attack().steps == 20 and cfg.train_attack().steps == 10
    with pytest.raises(UserError):
        AdversarialTrainingConfig(eval_splits=("holdout",))
    with pytest.raises(UserError):
        AdversarialTrainingConfig(steps=0)
