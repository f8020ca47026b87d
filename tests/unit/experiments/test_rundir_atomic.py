import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from sparsetrain.experiments import (
    RunDir,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_text,
)
from sparsetrain import atomic


def test_paths(tmp_path):
    rd = RunDir(tmp_path, "abc123", 3)
    assert rd.path == tmp_path / "abc123" / "seed_3"
    assert rd.config_path == rd.path / "config.yaml"
    assert rd.metrics_path == rd.path / "metrics.jsonl"
    assert rd.checkpoint_dir == rd.path / "checkpoints"
    assert rd.last_checkpoint == rd.path / "checkpoints" / "last.pt"
    assert not rd.path.exists()
    assert rd.create() is rd
    assert rd.checkpoint_dir.is_dir()


def test_root_may_be_a_string(tmp_path):
    assert RunDir(str(tmp_path), "h", 0).path == Path(tmp_path) / "h" / "seed_0"


def test_atomic_write_replaces_content_and_leaves_no_temp(tmp_path):
    path = tmp_path / "new" / "file.txt"
    atomic_write_text(path, "first")
    assert path.read_text() == "first"
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    assert os.listdir(path.parent) == ["file.txt"]


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = tmp_path / "file.txt"
    path.write_text("old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["file.txt"]


def test_atomic_torch_save_round_trip(tmp_path):
    path = tmp_path / "ckpt" / "last.pt"
    state = {"w": torch.arange(6.0).reshape(2, 3), "step": 7}
    atomic_torch_save(state, path)
    loaded = torch.load(path)
    assert loaded["step"] == 7
    assert torch.equal(loaded["w"], state["w"])
    assert os.listdir(path.parent) == ["last.pt"]


def test_write_config_is_sorted_yaml(tmp_path):
    rd = RunDir(tmp_path, "h", 0)
    config = {"seed": 0, "method": "rigl", "density": np.float32(0.5), "dense": ("fc3",)}
    rd.write_config(config)
    text = rd.config_path.read_text()
    assert text.index("dense") < text.index("density") < text.index("method") < text.index("seed")
    assert yaml.safe_load(text) == {"seed": 0, "method": "rigl", "density": 0.5, "dense": ["fc3"]}
    assert rd.read_config() == yaml.safe_load(text)


def test_append_and_truncate_metrics(tmp_path):
    rd = RunDir(tmp_path, "h", 0)
    rd.append_metrics({"event": "start"})
    for epoch in range(1, 5):
        rd.append_metrics({"epoch": epoch, "loss": np.float32(1.0 / epoch)})
    lines = rd.metrics_path.read_text().splitlines()
    assert len(lines) == 5
    assert [r.get("epoch") for r in rd.read_metrics()] == [None, 1, 2, 3, 4]

    rd.truncate_after_epoch(2)
    records = rd.read_metrics()
    assert records == [{"event": "start"}, {"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5}]
    rd.append_metrics({"epoch": 3, "loss": 0.25})
    assert [r.get("epoch") for r in rd.read_metrics()] == [None, 1, 2, 3]


def test_torn_last_line_is_skipped(tmp_path):
    rd = RunDir(tmp_path, "h", 0)
    rd.append_metrics({"epoch": 1})
    with open(rd.metrics_path, "a") as f:
        f.write('{"epoch": 2, "lo')
    assert rd.read_metrics() == [{"epoch": 1}]
    rd.truncate_after_epoch(5)
    assert rd.metrics_path.read_text() == '{"epoch": 1}\n'
