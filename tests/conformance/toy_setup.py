"""The toy data and model every method's conformance tests train on (masked and sparse backends)."""

import torch
from torch import nn

from sparsetrain.data import DatasetSplits, TensorData

FAST = {"update_interval": 3, "drop_fraction": 0.5, "min_kernel": 3, "channel_interval": 1}
# min_kernel: dsn sparsifies the 3-tap conv; channel_interval: chase prunes channels every 3 steps


def toy_data() -> DatasetSplits:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 1, 12, generator=g)
    y = (x.sum(dim=(1, 2)) > 0).long() + (x[:, 0, 0] > 1).long()
    part = lambda a, b: TensorData(x[a:b], y[a:b])  # noqa: E731
    return DatasetSplits("toy", part(0, 64), part(64, 80), part(80, 96), 3, (1, 12))


def toy_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(60, 16), nn.ReLU(),
                         nn.Linear(16, 3))
