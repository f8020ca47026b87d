import sqlite3

import numpy as np
import pytest
import torch

from sparsetrain.errors import UserError
from sparsetrain.experiments import SCHEMA_VERSION, ResultsStore

CONFIG = {"method": "rigl", "model": "lenet5", "dataset": "digits", "density": 0.1, "lr": 0.1}


@pytest.fixture
def store(tmp_path):
    with ResultsStore(tmp_path / "sub" / "results.db") as s:
        yield s


def start(store, config_hash="abc", seed=0, config=CONFIG, **kw):
    run_id = ResultsStore.run_id(config_hash, seed)
    store.start(run_id, config_hash=config_hash, seed=seed, config=config, **kw)
    return run_id


def test_run_id_is_hash_and_seed():
    assert ResultsStore.run_id("abc123", 4) == "abc123/seed_4"


def test_created_on_first_use_with_parent_dirs(tmp_path):
    path = tmp_path / "a" / "b" / "results.db"
    store = ResultsStore(path)
    assert not path.exists()
    assert store.get_run("missing") is None
    assert path.exists()
    store.close()
    with sqlite3.connect(path) as db:
        version = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    assert int(version[0]) == SCHEMA_VERSION


def test_newer_schema_version_is_refused(tmp_path):
    path = tmp_path / "results.db"
    with ResultsStore(path) as store:
        store.get_run("x")
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = ? WHERE key='schema_version'", (SCHEMA_VERSION + 1,))
    with pytest.raises(UserError, match="schema version"):
        ResultsStore(path).get_run("x")


def test_a_file_that_is_not_a_database_is_a_user_error(tmp_path):
    path = tmp_path / "results.db"
    path.write_text("not sqlite at all, just some text that is long enough" * 20)
    with pytest.raises(UserError, match="not a results store"):
        ResultsStore(path).get_run("x")


def test_wal_mode(store):
    store.get_run("x")
    assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_round_trip(store):
    run_id = start(store)
    store.log_epoch(run_id, 1, {"train_loss": 1.5, "test_acc": 0.5})
    store.log_epoch(run_id, 2, {"train_loss": 1.0, "test_acc": 0.7})
    layers = [{"name": "fc1", "shape": [10, 4], "density": 0.5, "active": 20, "total": 40,
               "flops": 40}]
    store.finish(run_id, {"test_acc": 0.7, "active_weights": 20}, layers)

    run = store.get_run(run_id)
    assert run["run_id"] == "abc/seed_0"
    assert (run["config_hash"], run["seed"]) == ("abc", 0)
    assert (run["method"], run["model"], run["dataset"]) == ("rigl", "lenet5", "digits")
    assert run["density"] == pytest.approx(0.1)
    assert run["config"] == CONFIG
    assert run["status"] == "finished"
    assert run["final"] == {"test_acc": 0.7, "active_weights": 20}
    assert run["layers"] == layers
    assert run["error"] is None
    assert run["finished_at"] >= run["started_at"]
    assert run["duration_s"] == pytest.approx(run["finished_at"] - run["started_at"])
    assert store.epochs(run_id) == [
        {"epoch": 1, "train_loss": 1.5, "test_acc": 0.5},
        {"epoch": 2, "train_loss": 1.0, "test_acc": 0.7},
    ]


def test_log_epoch_upserts(store):
    run_id = start(store)
    store.log_epoch(run_id, 1, {"loss": 2.0})
    store.log_epoch(run_id, 1, {"loss": 1.0})
    assert store.epochs(run_id) == [{"epoch": 1, "loss": 1.0}]


def test_finish_duration_override(store):
    run_id = start(store)
    store.finish(run_id, {"test_acc": 0.5}, [], duration_s=12.5)
    assert store.get_run(run_id)["duration_s"] == 12.5


def test_status_transitions_and_is_finished(store):
    assert not store.is_finished("abc/seed_0")
    run_id = start(store)
    assert store.get_run(run_id)["status"] == "running"
    assert not store.is_finished(run_id)
    store.fail(run_id, "CUDA out of memory")
    run = store.get_run(run_id)
    assert run["status"] == "failed"
    assert run["error"] == "CUDA out of memory"
    assert not store.is_finished(run_id)

    start(store)  # retry
    run = store.get_run(run_id)
    assert run["status"] == "running" and run["error"] is None
    store.finish(run_id, {"test_acc": 0.9}, [])
    assert store.is_finished(run_id)

    start(store)  # re-running a finished run clears its results
    run = store.get_run(run_id)
    assert run["status"] == "running"
    assert run["final"] is None and run["finished_at"] is None
    assert not store.is_finished(run_id)


def test_finish_or_fail_unknown_run_raises(store):
    with pytest.raises(KeyError):
        store.finish("nope/seed_0", {}, [])
    with pytest.raises(KeyError):
        store.fail("nope/seed_0", "boom")


def test_start_without_resume_clears_epochs(store):
    run_id = start(store)
    for epoch in range(1, 4):
        store.log_epoch(run_id, epoch, {"loss": float(epoch)})
    start(store)
    assert store.epochs(run_id) == []


def test_resume_keeps_earlier_epochs_and_drops_later(store):
    run_id = start(store)
    for epoch in range(1, 6):
        store.log_epoch(run_id, epoch, {"loss": float(epoch)})
    start(store, resume_from_epoch=3)
    assert [e["epoch"] for e in store.epochs(run_id)] == [1, 2, 3]
    assert store.get_run(run_id)["status"] == "running"


def test_runs_filters_and_order(store):
    a = start(store, "h1", 0, {"method": "rigl", "model": "mlp", "dataset": "digits"})
    b = start(store, "h1", 1, {"method": "rigl", "model": "mlp", "dataset": "digits"})
    c = start(store, "h2", 0, {"method": "set", "model": "mlp", "dataset": "mnist1d"})
    d = start(store, "h3", 0, {"method": "set", "model": "lenet5", "dataset": "digits"})
    for run_id in (a, b, c):
        store.finish(run_id, {"test_acc": 0.5}, [])

    assert [r["run_id"] for r in store.runs()] == [a, b, c]
    assert [r["run_id"] for r in store.runs(status=None)] == [a, b, c, d]
    assert [r["run_id"] for r in store.runs(status="running")] == [d]
    assert [r["run_id"] for r in store.runs(method="set")] == [c]
    assert [r["run_id"] for r in store.runs(None, method="set", model="lenet5")] == [d]
    assert [r["run_id"] for r in store.runs(dataset="digits")] == [a, b]
    assert [r["run_id"] for r in store.runs(config_hash="h1")] == [a, b]
    assert [r["run_id"] for r in store.runs(config_hash=["h1", "h2"])] == [a, b, c]
    assert store.runs(method="snip") == []
    with pytest.raises(UserError, match="allowed filters"):
        store.runs(optimizer="sgd")
    with pytest.raises(UserError, match="status"):
        store.runs(status="done")


def test_numpy_and_torch_values_are_stored_as_json(store):
    config = {"method": "rigl", "density": np.float32(0.25), "sizes": (1, 2)}
    run_id = start(store, config=config)
    store.log_epoch(run_id, np.int64(1), {"loss": np.float32(0.5), "acc": torch.tensor(0.75)})
    store.finish(
        run_id,
        {"test_acc": np.float64(0.9), "active_weights": np.int64(12), "hist": np.arange(3)},
        [{"name": "fc", "density": torch.tensor(0.5, dtype=torch.float64)}],
    )
    run = store.get_run(run_id)
    assert run["density"] == 0.25
    assert run["config"] == {"method": "rigl", "density": 0.25, "sizes": [1, 2]}
    assert run["final"] == {"test_acc": 0.9, "active_weights": 12, "hist": [0, 1, 2]}
    assert type(run["final"]["active_weights"]) is int
    assert run["layers"] == [{"name": "fc", "density": 0.5}]
    assert store.epochs(run_id) == [{"epoch": 1, "loss": 0.5, "acc": 0.75}]


def test_store_is_shared_between_connections(tmp_path):
    path = tmp_path / "results.db"
    with ResultsStore(path) as writer, ResultsStore(path) as reader:
        run_id = start(writer)
        writer.finish(run_id, {"test_acc": 0.8}, [])
        assert reader.is_finished(run_id)


def test_close_and_reopen(tmp_path):
    path = tmp_path / "results.db"
    store = ResultsStore(path)
    run_id = start(store)
    store.close()
    assert store.get_run(run_id)["status"] == "running"
    store.close()
