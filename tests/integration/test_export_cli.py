"""`sparsetrain train --backend sparse` and `sparsetrain export RUN` end to end on digits."""

import sqlite3

import pytest
import torch

from sparsetrain.backends.export import load_exported, read_manifest
from sparsetrain.backends.sparse import SparseLayer
from sparsetrain.cli import main
from sparsetrain.data import load
from sparsetrain.engine.checkpoint import load_checkpoint
from sparsetrain.models import create

FAST = ["--model", "mlp", "--dataset", "digits", "--epochs", "1", "--batch-size", "64",
        "--no-progress", "--model-options", "{widths: [32]}", "--update-interval", "3"]


pytestmark = pytest.mark.usefixtures("private_cache")


def _run_id(out):
    with sqlite3.connect(out / "results.db") as db:
        (row,) = db.execute("SELECT run_id FROM runs").fetchall()
    return row[0]


@pytest.mark.parametrize("backend", ["sparse", "masked"])
def test_export_writes_a_sparse_model_that_predicts_like_the_trained_one(tmp_path, capsys, backend):
    out = tmp_path / "runs"
    assert main(["train", "--method", "set", "--density", "0.2", "--backend", backend, "--out", str(out)] + FAST) == 0
    run_id = _run_id(out)
    assert main(["export", run_id[:6], "--out", str(out), "--dest", str(tmp_path / "exp")]) == 0
    assert "exported" in capsys.readouterr().out
    manifest = read_manifest(tmp_path / "exp")
    assert manifest["model"]["name"] == "mlp" and len(manifest["layers"]) == 2
    assert manifest["active_weights"] == round(0.2 * manifest["total_weights"])
    exported = load_exported(tmp_path / "exp")
    assert sum(isinstance(m, SparseLayer) for m in exported.modules()) == 2

    data = load("digits", seed=0, val_fraction=0.1)
    reference = create("mlp", input_shape=data.input_shape, num_classes=data.num_classes, widths=[32])
    state = load_checkpoint(out / run_id / "checkpoints" / "last.pt")["model"]
    dense_state = {}
    for key, value in state.items():
        if key.endswith(".values"):  # CSR -> dense, independently of the backend's code
            prefix = key[: -len("values")]
            shape = reference.state_dict()[prefix + "weight"].shape
            dense_state[prefix + "weight"] = torch.sparse_csr_tensor(
                state[prefix + "indptr"].long(), state[prefix + "indices"].long(), value, shape).to_dense()
        elif not key.endswith(("indptr", "indices", "weight_mask")):
            dense_state[key] = value
    reference.load_state_dict(dense_state)
    x = data.test.x[:50]
    torch.testing.assert_close(exported(x), reference.eval()(x), rtol=1e-5, atol=1e-5)
    again = load_exported(tmp_path / "exp")
    assert torch.equal(again(x), exported(x))


def test_export_errors_are_one_sentence(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["train", "--method", "dense", "--out", str(out)] + FAST[:-2]) == 0
    assert main(["export", "zzz", "--out", str(out)]) == 2
    assert "no run matches" in capsys.readouterr().err
    assert main(["export", _run_id(out)[:4], "--out", str(out)]) == 2
    assert "nothing sparse to export" in capsys.readouterr().err
