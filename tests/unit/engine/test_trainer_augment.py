"""TrainConfig.augment: the model trains on augmented batches, seeded per batch, and resumes exactly."""

import pytest
import torch
from torch import nn

from sparsetrain.data import DatasetSplits, TensorData, batches
from sparsetrain.data.augment import crop_flip
from sparsetrain.engine import Callback, TrainConfig, Trainer
from sparsetrain.errors import ConfigError
from sparsetrain.sparse import generator


def _images() -> DatasetSplits:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, 8, 8, generator=g)
    y = (x[:, 0].mean(dim=(1, 2)) > 0).long()
    part = lambda a, b: TensorData(x[a:b], y[a:b])  # noqa: E731
    return DatasetSplits("toy", part(0, 24), part(24, 32), part(32, 40), 2, (3, 8, 8))


def _trainer(tmp_path, augment="crop_flip", epochs=3, callbacks=()):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))
    config = TrainConfig(epochs=epochs, batch_size=8, lr=0.05, device="cpu", augment=augment)
    return Trainer(model, _images(), config, method="set", seed=5, callbacks=callbacks,
                   checkpoint_path=tmp_path / "last.pt")


def _inputs_seen(trainer):
    seen = []
    trainer.model.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()) if module.training else None)
    return seen


def test_model_sees_each_batch_augmented_from_its_own_seed(tmp_path):
    trainer = _trainer(tmp_path, epochs=2)
    seen = _inputs_seen(trainer)
    trainer.fit()
    expected = []
    for epoch in range(2):
        order = generator(5, epoch, "batches")
        for i, (x, _) in enumerate(batches(trainer.data.train, 8, shuffle=True, generator=order)):
            expected.append(crop_flip(x, generator(5, epoch, i, "augment")))
    assert len(seen) == len(expected) == 6
    assert all(torch.equal(a, b) for a, b in zip(seen, expected))


def test_no_augment_trains_on_the_batches_as_they_are(tmp_path):
    trainer = _trainer(tmp_path, augment="none", epochs=1)
    seen = _inputs_seen(trainer)
    trainer.fit()
    order = generator(5, 0, "batches")
    plain = [x for x, _ in batches(trainer.data.train, 8, shuffle=True, generator=order)]
    assert all(torch.equal(a, b) for a, b in zip(seen, plain)) and len(seen) == 3


class _Interrupt(Callback):
    def on_epoch_end(self, trainer):
        if trainer.epoch == 1:
            raise KeyboardInterrupt


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    straight = _trainer(tmp_path / "a")
    history = straight.fit()
    with pytest.raises(KeyboardInterrupt):
        _trainer(tmp_path / "b", callbacks=[_Interrupt()]).fit()
    resumed = _trainer(tmp_path / "b")
    resumed.fit(resume=True)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in history]
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    plain = _trainer(tmp_path / "c", augment="none")
    assert [h["train_loss"] for h in plain.fit()] != [h["train_loss"] for h in history]


def test_augment_needs_images():
    flat = DatasetSplits("flat", TensorData(torch.zeros(4, 5), torch.zeros(4, dtype=torch.long)),
                         TensorData(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)),
                         TensorData(torch.zeros(2, 5), torch.zeros(2, dtype=torch.long)), 2, (5,))
    with pytest.raises(ConfigError, match=r"augment crop_flip needs image inputs \(C, H, W\); this dataset's inputs are \(5,\)"):
        Trainer(nn.Linear(5, 2), flat, TrainConfig(device="cpu", augment="crop_flip"))
    with pytest.raises(ConfigError, match="augment must be one of none, crop_flip; got 'mixup'"):
        TrainConfig(augment="mixup")
