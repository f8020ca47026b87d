"""A non-finite (or overflowing) loss stops the Trainer with one sentence naming epoch and step."""

import math

import pytest
import torch
from torch import nn

from sparsetrain.data import DatasetSplits, TensorData
from sparsetrain.engine import TrainConfig, Trainer
from sparsetrain.engine.trainer import DIVERGED_FACTOR
from sparsetrain.errors import DivergedError, UserError


def _data(bad_row=None):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=g)
    y = (x[:, 0] > 0).long()
    if bad_row is not None:
        x[bad_row, 1] = math.inf
    return DatasetSplits("toy", TensorData(x[:32], y[:32]), TensorData(x[:0], y[:0]),
                         TensorData(x[32:], y[32:]), 2, (4,))


def _trainer(data, **config):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    return Trainer(model, data, TrainConfig(epochs=2, batch_size=8, device="cpu", **config))


def test_a_nan_loss_stops_at_its_epoch_and_step_blaming_the_learning_rate():
    trainer = _trainer(_data(), lr=1e30)
    with pytest.raises(DivergedError) as caught:
        trainer.fit()
    message = str(caught.value)
    assert isinstance(caught.value, UserError)  # the CLI prints it and exits with 2
    assert message.startswith("training diverged at epoch 1, step ")
    assert "of 4: the loss is nan" in message and "lr=1e+30" in message
    assert trainer.history == []  # no epoch of a diverged run is recorded
    step = int(message.split("step ")[1].split(" ")[0])
    assert 2 <= step <= 4  # the first step's loss is finite: it is computed before any update


def test_a_non_finite_input_is_named_as_the_likely_cause():
    # row 1 lands in some batch of epoch 1; that batch's loss is nan
    with pytest.raises(DivergedError, match=r"epoch 1, step \d of 4: .*training batch holds "
                                            r"non-finite values \(check the data file\)"):
        _trainer(_data(bad_row=1), lr=0.1).fit()


def test_a_finite_but_exploding_loss_is_diverged_too():
    trainer = _trainer(_data(), lr=0.1)
    huge = DIVERGED_FACTOR * math.log(2) * 1.01
    with pytest.raises(DivergedError, match="epoch 1: the mean training loss is .*over 1000 times"):
        trainer.check_finite({"train_loss": huge, "test_loss": 1.0})
    with pytest.raises(DivergedError, match="epoch 1: test_loss is inf"):
        trainer.check_finite({"train_loss": 0.5, "test_loss": math.inf})
    trainer.check_finite({"train_loss": DIVERGED_FACTOR * math.log(2) * 0.99, "test_loss": 3.0})


def test_a_healthy_run_is_untouched():
    history = _trainer(_data(), lr=0.1).fit()
    assert len(history) == 2 and all(math.isfinite(h["train_loss"]) for h in history)
