"""`sparsetrain train` end to end on tiny files in the real formats (CIFAR-10, MNIST, UCR, npz)."""

import pickle
import sqlite3
import struct

import numpy as np
import pytest
import yaml

from sparsetrain.cli import main

COMMON = ["--epochs", "1", "--batch-size", "8", "--no-progress", "--method", "rigl", "--density", "0.3"]


def _rows(out):
    with sqlite3.connect(out / "results.db") as db:
        return db.execute("SELECT run_id, status, dataset FROM runs").fetchall()


def write_tiny_cifar10(folder, per_batch=4):
    """The official layout and structure (dict with bytes keys, uint8 (N, 3072) data, list labels)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, per_batch).tolist(),
                 b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"filenames": [b"x.png"] * per_batch}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=3))


def test_train_on_cifar10_files_with_augmentation(tmp_path, capsys):
    write_tiny_cifar10(tmp_path / "data" / "cifar-10-batches-py")
    out = tmp_path / "runs"
    args = ["train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--model", "vgg11",
            "--model-options", "{width: 0.125}", "--augment", "crop_flip", "--out", str(out)] + COMMON
    # the tiny files are not the official ones: verification refuses them, nothing is stored
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "data_batch_1' has MD5" in err and "verify=false" in err and len(err.strip().splitlines()) == 1
    assert not (out / "results.db").exists()

    assert main(args + ["--dataset-options", "{verify: false}"]) == 0
    ((run_id, status, dataset),) = _rows(out)
    assert (status, dataset) == ("finished", "cifar10")
    config = yaml.safe_load((out / run_id / "config.yaml").read_text())
    assert config["augment"] == "crop_flip" and config["dataset_options"] == {"verify": False}
    assert "test accuracy" in capsys.readouterr().out


def _idx(path, array):
    path.write_bytes(bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
                     + array.astype(np.uint8).tobytes())


def test_train_on_mnist_idx_and_ucr_and_npz(tmp_path):
    rng = np.random.default_rng(1)
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    for prefix, n in (("train", 20), ("t10k", 6)):
        _idx(mnist / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _idx(mnist / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    ucr = tmp_path / "ucr" / "Tiny"
    ucr.mkdir(parents=True)
    for split, n in (("TRAIN", 20), ("TEST", 6)):
        rows = [f"{i % 2 + 1}\t" + "\t".join(f"{v:.4f}" for v in rng.normal(size=24)) for i in range(n)]
        (ucr / f"Tiny_{split}.tsv").write_text("\n".join(rows) + "\n")
    np.savez(tmp_path / "own.npz", x=rng.normal(size=(30, 12)), y=np.arange(30) % 3)

    out = tmp_path / "runs"
    runs = [["--dataset", "mnist", "--data-dir", str(mnist), "--model", "lenet5"],
            ["--dataset", "ucr", "--data-dir", str(tmp_path / "ucr"), "--dataset-options", "{name: Tiny}",
             "--model", "cnn1d", "--model-options", "{channels: [4, 8]}"],
            ["--dataset", "npz", "--data-dir", str(tmp_path / "own.npz"), "--model", "mlp",
             "--model-options", "{widths: [16]}"]]
    for extra in runs:
        assert main(["train", "--out", str(out)] + COMMON + extra) == 0
    assert sorted((r[1], r[2]) for r in _rows(out)) == [("finished", "mnist"), ("finished", "npz"), ("finished", "ucr")]


def test_other_files_are_another_run_the_same_files_are_not(tmp_path, capsys):
    rng = np.random.default_rng(2)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        np.savez(tmp_path / name / "d.npz", x=rng.normal(size=(20, 4)), y=np.arange(20) % 2)
    out = tmp_path / "runs"
    base = ["train", "--out", str(out), "--dataset", "npz", "--model", "mlp", "--model-options", "{widths: [8]}"] + COMMON
    assert main(base + ["--data-dir", str(tmp_path / "a")]) == 0
    assert main(base + ["--data-dir", str(tmp_path / "b")]) == 0
    assert len(_rows(out)) == 2
    capsys.readouterr()
    assert main(base + ["--data-dir", str(tmp_path / "a")]) == 0
    assert "already finished" in capsys.readouterr().out and len(_rows(out)) == 2


@pytest.mark.parametrize("args, message", [
    (["--dataset", "cifar10"], "dataset 'cifar10' reads files from disk: pass --data-dir"),
    (["--dataset", "mnist", "--data-dir", "/no/such/folder"], "data_dir '/no/such/folder' does not exist"),
    (["--dataset", "ucr", "--data-dir", "."], "dataset ucr needs the option name"),
    (["--dataset", "digits", "--augment", "flip"], "augment must be one of none, crop_flip"),
    (["--dataset", "mnist1d", "--augment", "crop_flip"], "augment crop_flip needs image inputs (C, H, W)"),
])
def test_bad_data_input_is_one_sentence_and_exit_2(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.setenv("SPARSETRAIN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "runs"
    assert main(["train", "--out", str(out), "--model", "mlp"] + COMMON + args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (out / "results.db").exists()
