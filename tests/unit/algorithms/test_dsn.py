"""DSN: group regions, the reference's sorted init, exact counts, and updates that stay in region."""

import math

import pytest
import torch
from torch import nn

import sparsetrain as st
from sparsetrain.algorithms.dsn import regions
from sparsetrain.schedules import DecaySchedule


def _model():
    torch.manual_seed(0)  # one wide kernel (9 taps, 3 groups of 2 channels: regions 3, 6, 9), then dense layers
    return nn.Sequential(nn.Conv1d(2, 6, 9, padding=4, bias=False), nn.ReLU(), nn.Conv1d(6, 3, 1),
                         nn.AdaptiveAvgPool1d(1), nn.Flatten())


def test_regions_are_multiples_of_kernel_over_groups():
    assert regions(39, 3) == [13, 26, 39]
    assert regions(9, 3) == [3, 6, 9] and regions(10, 3) == [3, 6, 9]  # the reference's int(k / c) steps


def test_sorted_init_fills_each_region_tap_by_tap():
    model = _model()
    method = st.create("dsn", model, torch.optim.SGD(model.parameters(), lr=0.1), density=0.5,
                       total_steps=10, steps_per_epoch=1)
    (w,) = method.weights  # the 1x1 conv stays dense
    assert w.name == "0.weight"
    expected = torch.zeros(6, 2, 9, dtype=torch.bool)
    # group 0 (channels 0-1): int(2*2*3 * 0.5) = 6 -> tap 0 for all 4 (out, in) pairs, tap 1 for (0, 0), (0, 1)
    expected[0:2, :, 0] = True
    expected[0, :, 1] = True
    # group 1: int(2*2*6 * 0.5) = 12 -> taps 0, 1, 2; group 2: 18 -> taps 0..3 and (4, 0), (4, 1) at tap 4
    expected[2:4, :, 0:3] = True
    expected[4:6, :, 0:4] = True
    expected[4, :, 4] = True
    assert torch.equal(w.mask, expected)
    assert method.targets == {"0.weight": 36}


@pytest.mark.parametrize("growth, init", [("random", "sorted"), ("gradient", "random")])
def test_updates_drop_smallest_keep_counts_and_stay_inside_each_region(growth, init):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    method = st.create("dsn", model, opt, density=0.5, growth=growth, init=init, update_interval=1,
                       total_steps=10, steps_per_epoch=1)
    (w,) = method.weights
    counts = {0: 6, 1: 12, 2: 18}
    schedule = DecaySchedule(0.5, 8, "cosine")  # stop_fraction 0.8 of 10 steps
    g = torch.Generator().manual_seed(0)
    changes = 0
    for step in range(1, 11):
        before_mask = w.mask.clone()
        opt.zero_grad()
        x = torch.randn(4, 2, 16, generator=g)
        nn.functional.cross_entropy(model(x), torch.randint(0, 3, (4,), generator=g)).backward()
        before = (opt.param_groups[0]["params"][0].detach() - 0.1 * model[0].weight.grad) * before_mask  # after SGD
        method.step()
        for group, (lo, taps) in enumerate([(0, 3), (2, 6), (4, 9)]):
            chunk = w.mask[lo:lo + 2]
            assert not chunk[:, :, taps:].any()  # never outside the group's region
            assert int(chunk.sum()) == counts[group]
            if step <= 8:  # an update: the ceil(rate * active) smallest magnitudes left, the rest stayed
                n_drop = math.ceil(schedule.at(step) * counts[group] - 1e-9)
                order = torch.argsort(before[lo:lo + 2].abs().reshape(-1)[before_mask[lo:lo + 2].reshape(-1)],
                                      descending=True, stable=True)
                kept_positions = torch.nonzero(before_mask[lo:lo + 2].reshape(-1)).reshape(-1)[order[:counts[group] - n_drop]]
                assert chunk.reshape(-1)[kept_positions].all()
        changes += int((w.mask != before_mask).any())
        assert model[0].weight[~w.mask].eq(0).all()
    assert changes >= 5


def test_cli_trains_dsn_on_an_archive_in_aeons_layout(tmp_path, monkeypatch):
    import json
    import sqlite3

    import numpy as np

    from sparsetrain.cli import main

    monkeypatch.setenv("SPARSETRAIN_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    folder = tmp_path / "archives" / "Toy"
    folder.mkdir(parents=True)
    for split, n in (("TRAIN", 24), ("TEST", 12)):
        labels = rng.integers(1, 3, n)
        rows = [",".join(f"{v:.4f}" for v in rng.normal(size=20) + label) + f":{label}" for label in labels]
        (folder / f"Toy_{split}.ts").write_text("@problemName Toy\n@classLabel true 1 2\n@data\n" + "\n".join(rows) + "\n")
    out = tmp_path / "runs"
    assert main(["train", "--method", "dsn", "--model", "dsn", "--dataset", "ucr", "--data-dir", str(tmp_path / "archives"),
                 "--dataset-options", "{name: Toy}", "--model-options", "{width: 4, depth: 1, kernel: 9, pool: 4}",
                 "--epochs", "2", "--batch-size", "8", "--optimizer", "adam", "--lr", "0.0003",
                 "--update-interval", "1", "--no-progress", "--out", str(out)]) == 0
    with sqlite3.connect(out / "results.db") as db:
        method, status, final = db.execute("SELECT method, status, final FROM runs").fetchone()
    assert (method, status) == ("dsn", "finished") and 0 <= json.loads(final)["test_acc"] <= 1
