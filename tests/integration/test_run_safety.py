"""One writer per run, nothing left behind, interrupted runs marked and resumed, finished
results kept by a failed retry, and damaged files or store rows refused (issue 14, §3-4)."""

import importlib.util
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import filelock
import pytest
import torch

from sparsetrain.cli import main
from sparsetrain.engine import trainer as trainer_module

FAST = ["--model", "mlp", "--dataset", "digits", "--epochs", "2", "--batch-size", "128",
        "--no-progress", "--model-options", "{widths: [16]}"]
ONE_EPOCH = [*FAST[:5], "1", *FAST[6:]]
SET = ["train", "--method", "set", "--density", "0.2", "--backend", "sparse", "--update-interval", "3"]


pytestmark = pytest.mark.usefixtures("private_cache")


def _rows(out):
    with sqlite3.connect(out / "results.db") as db:
        return db.execute("SELECT run_id, status, final FROM runs").fetchall()


def _stop_after_first_epoch(monkeypatch, exc):
    original = trainer_module.Trainer.save

    def save_then_stop(self, path):
        original(self, path)
        if self.epoch == 1:
            raise exc

    monkeypatch.setattr(trainer_module.Trainer, "save", save_then_stop)
    return original


def _interrupted_run(out, monkeypatch):
    """Train the SET run into ``out``, stopped by Ctrl-C after epoch 1; returns its arguments."""
    args = [*SET, "--out", str(out), *FAST]
    original = _stop_after_first_epoch(monkeypatch, KeyboardInterrupt())
    assert main(args) == 130
    monkeypatch.setattr(trainer_module.Trainer, "save", original)
    return args


def test_a_second_process_skips_a_run_another_one_holds(tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["train", "--method", "dense", "--out", str(out), *ONE_EPOCH]
    assert main(args) == 0
    (run_id, _, _), = _rows(out)
    metrics = (out / run_id / "metrics.jsonl").read_text()
    capsys.readouterr()
    with filelock.FileLock(out / run_id / "run.lock", timeout=0):  # as another process's RunLock
        assert main(args + ["--force"]) == 0
    err = capsys.readouterr().err
    assert f"run {run_id} is being trained by another process" in err and "skipping it" in err
    assert (out / run_id / "metrics.jsonl").read_text() == metrics  # nothing written twice
    assert _rows(out)[0][1] == "finished"
    assert main(args + ["--force"]) == 0  # released: the lock is taken and dropped again
    assert len((out / run_id / "metrics.jsonl").read_text().splitlines()) == 1


def test_sigterm_marks_the_run_interrupted_and_train_resumes_by_default(tmp_path, capsys, monkeypatch):
    out = tmp_path / "runs"
    args = [*SET, "--out", str(out), *FAST]
    original = _stop_after_first_epoch(monkeypatch, None)

    def save_then_terminate(self, path):
        original(self, path)
        if self.epoch == 1:  # what `timeout` or SLURM sends; the handler main installed raises
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(trainer_module.Trainer, "save", save_then_terminate)
    assert main(args) == 128 + signal.SIGTERM
    assert "interrupted" in capsys.readouterr().err
    (run_id, status, _), = _rows(out)
    assert status == "interrupted"
    assert signal.getsignal(signal.SIGTERM) is not None  # main put the previous handler back
    stale = out / run_id / "checkpoints" / ".last.pt.x1y2.tmp"  # a kill inside a checkpoint write
    stale.write_bytes(b"half a checkpoint")
    monkeypatch.setattr(trainer_module.Trainer, "save", original)
    assert main(args) == 0
    assert "resuming after epoch 1 of 2" in capsys.readouterr().out
    assert not stale.exists()
    assert _rows(out)[0][1] == "finished"
    lines = (out / run_id / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2


def test_restart_starts_over_instead_of_resuming(tmp_path, capsys, monkeypatch):
    out = tmp_path / "runs"
    args = _interrupted_run(out, monkeypatch)
    capsys.readouterr()
    epochs_run = []
    monkeypatch.setattr(trainer_module.Trainer, "train_epoch",
                        lambda self, f=trainer_module.Trainer.train_epoch: epochs_run.append(self.epoch) or f(self))
    assert main(args + ["--restart"]) == 0
    assert "resuming" not in capsys.readouterr().out
    assert epochs_run == [0, 1]  # both epochs trained again


def test_a_failed_force_retry_keeps_the_finished_result(tmp_path, monkeypatch):
    out = tmp_path / "runs"
    args = [*SET, "--out", str(out), *FAST]
    assert main(args) == 0
    (run_id, status, final), = _rows(out)
    folder = out / run_id
    before = {p: p.read_bytes() for p in (folder / "metrics.jsonl", folder / "checkpoints" / "last.pt")}
    with sqlite3.connect(out / "results.db") as db:
        epochs = db.execute("SELECT epoch, metrics FROM epochs ORDER BY epoch").fetchall()
    _stop_after_first_epoch(monkeypatch, RuntimeError("disk on fire"))
    with pytest.raises(RuntimeError, match="disk on fire"):
        main(args + ["--force"])
    assert _rows(out) == [(run_id, "finished", final)]
    with sqlite3.connect(out / "results.db") as db:
        assert db.execute("SELECT epoch, metrics FROM epochs ORDER BY epoch").fetchall() == epochs
    assert {p: p.read_bytes() for p in before} == before
    assert not list(folder.rglob("*.finished"))


def test_a_damaged_checkpoint_stops_resume_and_export_with_exit_2(tmp_path, capsys, monkeypatch):
    out = tmp_path / "runs"
    args = _interrupted_run(out, monkeypatch)
    (run_id, _, _), = _rows(out)
    path = out / run_id / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=True)
    key = next(k for k in state["model"] if k.endswith(".indices"))
    state["model"][key] = state["model"][key] + 100_000_000
    torch.save(state, path)
    capsys.readouterr()
    assert main(args) == 2  # a segfault (exit 139) before the checks
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "column index 100000" in err[0]
    assert main(["export", run_id[:8], "--out", str(out), "--dest", str(tmp_path / "exp")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0]
    assert not (tmp_path / "exp").exists()


def test_export_never_builds_a_path_from_a_damaged_store_row(tmp_path, capsys):
    out = tmp_path / "a" / "runs"
    assert main([*SET, "--out", str(out), *ONE_EPOCH]) == 0
    (run_id, _, _), = _rows(out)
    with sqlite3.connect(out / "results.db") as db:
        db.execute("UPDATE runs SET config_hash = '../../escape'")
    capsys.readouterr()
    assert main(["export", run_id[:8], "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'../../escape' is not a run folder name" in err
    assert not (tmp_path / "escape").exists() and not (tmp_path / "a" / "escape").exists()


def test_a_worker_ends_when_its_parent_dies(tmp_path):
    """A parent starts a worker that asks for SIGTERM at its parent's death; killing the
    parent with SIGKILL (no chance to clean up) must end the worker within seconds."""
    module = Path(importlib.util.find_spec("sparsetrain").origin).parent / "experiments" / "process.py"
    worker = f"""
import importlib.util, os, sys, time
spec = importlib.util.spec_from_file_location("process", {str(module)!r})
process = importlib.util.module_from_spec(spec); spec.loader.exec_module(process)
process.interrupt_on_terminate()
process.exit_with_parent(int(sys.argv[1]))
open({str(tmp_path / 'ready')!r}, 'w').close()
try:
    time.sleep(60)
except KeyboardInterrupt:
    # written whole, then renamed: the test never reads a half-written file
    with open({str(tmp_path / 'ended.tmp')!r}, 'w') as f:
        f.write(str(process.parent_alive(int(sys.argv[1]))))
    os.replace({str(tmp_path / 'ended.tmp')!r}, {str(tmp_path / 'ended')!r})
"""
    parent = f"""
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", {worker!r}, str(os.getpid())])
print(child.pid, flush=True)
time.sleep(60)
"""
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    deadline = time.monotonic() + 30
    while not (tmp_path / "ready").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while not (tmp_path / "ended").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert (tmp_path / "ended").read_text() == "False"  # it saw its parent gone
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
