"""Sparse-aware FLOPs, the layer table, and the drop-fraction / learning-rate schedules."""

import math

import pytest
import torch
from torch import nn

from sparsetrain import analysis
from sparsetrain.backends.masked import MaskedWeight
from sparsetrain.engine.optim import LRFactor
from sparsetrain.schedules import DecaySchedule, UpdateSchedule


def test_layer_table_counts_two_flops_per_active_multiply_accumulate():
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 4))
    conv = MaskedWeight(model, "0.weight")
    conv.set_mask(torch.tensor([[[True, False, True]], [[False, True, False]]]))  # 3 of 6
    rows = analysis.layer_table(model, (1, 10))
    # conv: output length 10 - 3 + 1 = 8 positions -> 2 * 3 * 8 = 48 FLOPs (dense: 2 * 6 * 8 = 96)
    # no filter is all masked: the shrunk model is the dense one, both channels active
    assert rows[0] == {"name": "0.weight", "shape": [2, 1, 3], "structure": "unstructured", "total": 6,
                       "active": 3, "density": 0.5, "channels": 2, "active_channels": 2, "flops": 48,
                       "dense_flops": 96, "shrunk_flops": 96}
    # the linear layer has no mask: all 64 weights, one position -> 128 FLOPs
    assert rows[1]["flops"] == 128 and rows[1]["density"] == 1.0
    t = analysis.totals(rows)
    assert (t["active_weights"], t["total_weights"], t["flops"], t["dense_flops"]) == (67, 70, 176, 224)
    text = analysis.describe(rows, itop_rate=0.75)
    assert "1 multiply-accumulate = 2 FLOPs" in text and "ITOP rate" in text and "0.7500" in text


def test_layer_table_counts_active_channels_and_the_shrunk_models_flops():
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 3, 1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 5))
    first = MaskedWeight(model, "0.weight")
    mask = torch.ones(4, 2, 3, 3, dtype=torch.bool)
    mask[1] = False  # filter 1 dead, its batch norm zero: shrink removes it
    mask[2] = False  # filter 2 masked, but relu(beta) of batch norm 2 still reaches the next conv
    first.set_mask(mask)
    with torch.no_grad():
        model[1].weight[1] = model[1].bias[1] = 0
        model[1].bias[2] = 0.5
    rows = analysis.layer_table(model, (2, 5, 5), structure="channel")
    assert [r["structure"] for r in rows] == ["channel", "dense", "dense"]
    assert [(r["active_channels"], r["channels"]) for r in rows] == [(2, 4), (3, 3), (5, 5)]
    # 25 positions; shrunk: conv 3 x 2 x 3 x 3 = 54 weights, 1x1 conv 3 x 3 = 9, linear 5 x 3 = 15
    assert [r["shrunk_flops"] for r in rows] == [2 * 54 * 25, 2 * 9 * 25, 2 * 15]
    assert [r["dense_flops"] for r in rows] == [2 * 72 * 25, 2 * 12 * 25, 2 * 15]
    assert analysis.totals(rows)["shrunk_flops"] == 2 * 54 * 25 + 2 * 9 * 25 + 2 * 15
    text = analysis.describe(rows)
    assert "2/4" in text and "shrunk model (st.shrink, dead channels removed, run dense): 3,180 FLOPs" in text
    mlp = analysis.layer_table(nn.Sequential(nn.Linear(3, 2)), (3,))
    assert mlp[0]["shrunk_flops"] is None and analysis.totals(mlp)["shrunk_flops"] is None  # not a CNN


def test_linear_layer_applied_to_tokens_counts_every_token():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(3, 5)

        def forward(self, x):  # (B, 7, 3) -> (B, 7, 5)
            return self.proj(x)

    rows = analysis.layer_table(Tokens(), (7, 3))
    assert rows[0]["flops"] == 2 * 15 * 7


def test_cosine_drop_fraction_matches_the_rigl_formula():
    schedule = DecaySchedule(0.3, stop=100, kind="cosine")
    for step in (0, 25, 50, 99):
        assert schedule.at(step) == pytest.approx(0.15 * (1 + math.cos(math.pi * step / 100)))
    assert schedule.at(100) == 0.0 and schedule.at(150) == 0.0
    assert DecaySchedule(0.3, 100, "linear").at(25) == pytest.approx(0.225)
    assert DecaySchedule(0.3, 100, "constant").at(99) == 0.3


def test_update_schedule_every_interval_until_stop():
    schedule = UpdateSchedule(interval=10, stop=35)
    assert [s for s in range(0, 60) if schedule.is_update(s)] == [10, 20, 30]


def test_lr_factor_warmup_then_cosine_and_step():
    cosine = LRFactor(total_steps=110, warmup_steps=10, kind="cosine")
    assert [cosine(s) for s in (0, 4, 9)] == [pytest.approx(0.1), pytest.approx(0.5), pytest.approx(1.0)]
    assert cosine(60) == pytest.approx(0.5)  # half-way through the 100 cosine steps
    step = LRFactor(total_steps=100, warmup_steps=0, kind="step", milestones=(0.5, 0.75), gamma=0.1)
    assert [step(s) for s in (49, 50, 74, 75)] == [1.0, pytest.approx(0.1), pytest.approx(0.1), pytest.approx(0.01)]
