"""A run that starts at epoch k of its schedule (lottery levels rewound to epoch k, open_lth)."""

import torch
from torch import nn

import sparsetrain  # noqa: F401
from sparsetrain.data import DatasetSplits, TensorData
from sparsetrain.engine import Callback, TrainConfig, Trainer


class _Record(Callback):
    def __init__(self):
        self.lrs, self.labels = [], []

    def on_batch_start(self, trainer):
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])
        self.labels.append(trainer.batch[1].tolist())


def _fit(start_epoch):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, generator=g), torch.arange(8) % 2
    data = DatasetSplits("toy", TensorData(x, y), TensorData(x[:0], y[:0]), TensorData(x[:2], y[:2]), 2, (3,))
    config = TrainConfig(epochs=4, start_epoch=start_epoch, batch_size=4, lr=0.1, lr_schedule="step",
                         lr_milestones=(0.5, 0.75), warmup_epochs=1, device="cpu")
    record = _Record()
    torch.manual_seed(0)
    trainer = Trainer(nn.Linear(3, 2), data, config, seed=5, callbacks=[record])
    trainer.fit()
    return record, trainer


def test_a_level_rewound_to_epoch_1_continues_the_schedule_from_step_2():
    # open_lth train(): the lr schedule is stepped start_step = 1 epoch = 2 iterations, then training
    # continues to the end step; level 0's per-step lr here (8 steps, warm-up 2, milestones at 4 and 6):
    level0 = [0.05, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    full, _ = _fit(0)
    rewound, trainer = _fit(1)
    assert torch.allclose(torch.tensor(full.lrs), torch.tensor(level0))
    assert torch.allclose(torch.tensor(rewound.lrs), torch.tensor(level0[2:]))
    assert rewound.labels == full.labels[2:]  # the same batches as level 0's epochs 1..3
    assert [h["epoch"] for h in trainer.history] == [2, 3, 4] and trainer.method.total_steps == 6
