"""A diverged run stops with exit code 2, is stored as `diverged`, and the store stays valid JSON."""

import json
import math
import sqlite3

import pytest

from sparsetrain.cli import main
from sparsetrain.experiments.store import ResultsStore, finite, to_json

FAST = ["--model", "mlp", "--dataset", "digits", "--epochs", "2", "--batch-size", "64",
        "--no-progress", "--model-options", "{widths: [32]}"]


pytestmark = pytest.mark.usefixtures("private_cache")


def _invalid_json(db_path):
    """Cells of the store's JSON columns that SQLite's json_valid rejects."""
    with sqlite3.connect(db_path) as db:
        runs = db.execute("SELECT count(*) FROM runs WHERE (config IS NOT NULL AND NOT json_valid(config)) "
                          "OR (final IS NOT NULL AND NOT json_valid(final)) "
                          "OR (layers IS NOT NULL AND NOT json_valid(layers))").fetchone()[0]
        return runs + db.execute("SELECT count(*) FROM epochs WHERE NOT json_valid(metrics)").fetchone()[0]


@pytest.mark.parametrize("flags", [
    ["--method", "dense", "--lr", "1e6"],
    ["--method", "rigl", "--density", "0.1", "--lr", "1e6"],
    ["--method", "set", "--density", "0.1", "--backend", "sparse", "--lr", "1e6"],
    ["--method", "snip", "--density", "0.1", "--lr", "1e6"],
    ["--method", "dense", "--optimizer", "adam", "--lr", "1e6"],  # finite but ~1e21: diverged too
], ids=["dense", "rigl", "set-sparse", "snip", "adam"])
def test_a_diverging_run_stops_with_exit_2_and_is_stored_as_diverged(tmp_path, capsys, flags):
    out = tmp_path / "runs"
    assert main(["train", *flags, "--out", str(out), *FAST]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if not line.startswith("sparsetrain: warning:")]  # e.g. a schedule too short for any update
    assert len(err) == 1 and err[0].startswith("sparsetrain: error: training diverged")
    assert "epoch 1" in err[0] and "lr=1e+06" in err[0]
    assert "Traceback" not in err[0]
    with ResultsStore(out / "results.db") as store:
        (row,) = store.runs(status=None)
        assert row["status"] == "diverged" and row["error"] in err[0] and row["final"] is None
        assert store.runs() == []  # never among the finished runs that reports average
        assert store.runs(status="diverged") == [row]
    assert _invalid_json(out / "results.db") == 0


def test_the_store_and_metrics_file_never_hold_nan(tmp_path):
    assert finite({"a": [1.0, math.nan, (math.inf, -math.inf)], "b": 2}) == {"a": [1.0, None, [None, None]], "b": 2}
    text = to_json({"loss": math.nan, "acc": 0.5})
    assert json.loads(text) == {"acc": 0.5, "loss": None}
    import numpy as np
    import torch
    assert json.loads(to_json({"n": np.float32("nan"), "t": torch.tensor([1.0, math.inf])})) == \
        {"n": None, "t": [1.0, None]}
    with ResultsStore(tmp_path / "results.db") as store:
        store.start("h/seed_0", config_hash="h", seed=0, config={"lr": math.inf})
        store.log_epoch("h/seed_0", 1, {"test_loss": math.nan})
        store.finish("h/seed_0", {"test_loss": -math.inf}, [])
        assert store.epochs("h/seed_0") == [{"epoch": 1, "test_loss": None}]
    assert _invalid_json(tmp_path / "results.db") == 0
    from sparsetrain.experiments.rundir import RunDir
    run_dir = RunDir(tmp_path, "h", 0)
    run_dir.append_metrics({"epoch": 1, "loss": math.nan})
    assert json.loads(run_dir.metrics_path.read_text()) == {"epoch": 1, "loss": None}
