"""--structure through the CLI for the pruning methods: train gmp, lottery levels, on digits."""

import sqlite3

import pytest
import torch

from sparsetrain.cli import main
from sparsetrain.experiments import ResultsStore
from sparsetrain.experiments.pruning import base_values
from sparsetrain.experiments.rundir import RunDir

FAST = ["--model", "mlp", "--dataset", "digits", "--epochs", "1", "--batch-size", "64",
        "--no-progress", "--model-options", "{widths: [32]}"]

pytestmark = pytest.mark.usefixtures("private_cache")


def _runs(out, where):
    with sqlite3.connect(out / "results.db") as db:
        return db.execute(f"SELECT run_id, config_hash, seed, density FROM runs WHERE {where}").fetchall()


def _masks(out, row):
    state = torch.load(RunDir(out, row[1], row[2]).last_checkpoint, weights_only=True)["model"]
    return {k: v for k, v in state.items() if k.endswith("_mask")}


def _whole_channels(mask):
    return bool((mask.all(1) | ~mask.any(1)).all())


def test_gmp_and_lottery_keep_whole_channels_and_prune_keeps_the_structure(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["train", "--method", "gmp", "--structure", "channel", "--density", "0.25", "--update-interval",
                 "4", "--out", str(out)] + FAST) == 0
    (gmp,) = _runs(out, "method = 'gmp'")
    masks = _masks(out, gmp)
    assert set(masks) == {"net.1.weight_mask", "net.3.weight_mask"}
    assert all(_whole_channels(m) for m in masks.values())
    # uniform 0.25 of each layer in whole channels: 8 of 32 (64 inputs), round(2.5)->3 of 10 (32 inputs)
    assert sorted(int(m.all(1).sum()) for m in masks.values()) == [3, 8]
    # `sparsetrain prune` of this run keeps its structure (the keys a derived run takes from its parent)
    with ResultsStore(out / "results.db") as store:
        assert base_values(store.get_run(gmp[0]))["structure"] == "channel"
    # the lottery levels take --structure
    assert main(["lottery", "--levels", "1", "--prune-fraction", "0.5", "--structure", "channel",
                 "--out", str(out)] + FAST) == 0
    (level,) = _runs(out, "method = 'imp'")
    masks = _masks(out, level)
    assert level[3] == 0.5 and all(_whole_channels(m) for m in masks.values())
    assert 0 < sum(int(m.sum()) for m in masks.values()) < sum(m.numel() for m in masks.values())
    capsys.readouterr()
    assert main(["lottery", "--levels", "1", "--structure", "2:4", "--out", str(out)] + FAST) == 2
    err = capsys.readouterr().err
    assert "structure 2:4 fixes every layer's density" in err and "Traceback" not in err
