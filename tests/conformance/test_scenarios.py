"""Every registered scenario: switched on by its example config, seeded, touching only train."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from sparsetrain.data import DatasetSplits, TensorData
from sparsetrain.experiments import ExperimentConfig
from sparsetrain.scenarios import SCENARIOS, ScenarioContext, active_scenarios, apply_scenarios, describe


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 6, generator=g)
    y = torch.arange(120) % 4
    test = TensorData(torch.randn(40, 6, generator=g), torch.arange(40) % 4)
    return DatasetSplits("toy", TensorData(x, y), TensorData(x[:0], y[:0]), test, 4, (6,))


def _config(example):
    values = {f.name: f.default for f in dataclasses.fields(ExperimentConfig)}
    return SimpleNamespace(**{**values, **example})


@pytest.mark.parametrize("name", SCENARIOS.names())
def test_scenario_changes_train_only_and_is_seeded(name, tmp_path):
    example = SCENARIOS.get(name).example
    assert example, f"scenario {name} declares no example config"
    config = _config(example)
    assert active_scenarios(config) == [name] and describe(config) != "clean"
    assert describe(_config({})) == "clean"

    def context(seed):
        return ScenarioContext(seed=seed, make_model=lambda: nn.Linear(6, 4), batch_size=32,
                               cache_dir=tmp_path)

    data = _data()
    a, b = apply_scenarios(data, config, context(0)), apply_scenarios(data, config, context(0))
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.train.y, b.train.y)
    changed = len(a.train) != len(data.train) or not torch.equal(a.train.y, data.train.y)
    assert changed
    assert a.test is data.test and a.val is data.val and a.num_classes == data.num_classes
    other = apply_scenarios(data, config, context(1))
    assert not (torch.equal(other.train.x, a.train.x) and torch.equal(other.train.y, a.train.y))
