"""`sparsetrain export RUN --shrink` end to end: a trained LeNet-5 with dead filters is written
as a smaller dense model that loads back (st.load_shrunk) and predicts like the masked one."""

import json
import sqlite3

import pytest
import torch

import sparsetrain as st
from sparsetrain.backends.export import masked_model_from_state
from sparsetrain.cli import main
from sparsetrain.data import load
from sparsetrain.engine.checkpoint import load_checkpoint, save_checkpoint
from sparsetrain.models import create

FAST = ["--dataset", "digits", "--epochs", "1", "--batch-size", "128", "--no-progress", "--update-interval", "3"]

pytestmark = pytest.mark.usefixtures("private_cache")


def _run_id(out):
    with sqlite3.connect(out / "results.db") as db:
        (row,) = db.execute("SELECT run_id FROM runs").fetchall()
    return row[0]


def test_export_shrink_round_trips_through_the_cli(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["train", "--method", "set", "--density", "0.3", "--model", "lenet5", "--out", str(out)] + FAST) == 0
    run_id = _run_id(out)
    assert main(["export", run_id[:6], "--out", str(out), "--shrink", "--dest", str(tmp_path / "none")]) == 0
    assert "nothing could be removed" in capsys.readouterr().out  # trained biases keep every channel alive

    # Kill conv filters 1 and 4 of the first conv and 3 neurons of fc 120 in the checkpoint
    # (mask rows off, weights and biases 0): the checkpoint of a run with channel-level sparsity.
    path = out / run_id / "checkpoints" / "last.pt"
    checkpoint = load_checkpoint(path)
    state = checkpoint["model"]
    for layer, rows in (("features.0", [1, 4]), ("classifier.0", [0, 5, 119])):
        state[f"{layer}.weight_mask"][rows] = False
        state[f"{layer}.weight"][rows] = 0
        state[f"{layer}.bias"][rows] = 0
    save_checkpoint(checkpoint, path)

    assert main(["export", run_id[:6], "--out", str(out), "--shrink"]) == 0
    printed = capsys.readouterr().out
    assert "features.0" in printed and "6 -> 4" in printed and "120 -> 117" in printed
    folder = out / run_id / "shrunk"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["model"]["name"] == "lenet5" and manifest["input_shape"] == [1, 8, 8]

    small = st.load_shrunk(folder)
    assert (small.features[0].out_channels, small.features[3].in_channels) == (4, 4)
    assert (small.classifier[0].out_features, small.classifier[2].in_features) == (117, 117)
    data = load("digits", seed=0, val_fraction=0.1)
    masked = masked_model_from_state(create("lenet5", input_shape=data.input_shape, num_classes=10), state).eval()
    x = data.test.x[:64]
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked(x), rtol=1e-5, atol=1e-5)


def test_export_shrink_bad_input_is_one_sentence_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["train", "--method", "set", "--density", "0.5", "--model", "mlp", "--model-options",
                 "{widths: [16]}", "--out", str(out)] + FAST) == 0
    dest = tmp_path / "dest"
    assert main(["export", _run_id(out)[:6], "--out", str(out), "--shrink", "--dest", str(dest)]) == 2
    err = capsys.readouterr().err.strip()
    assert "st.shrink removes channels of convolutional networks; MLP has no Conv1d/Conv2d/Conv3d layer" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not dest.exists()


def test_a_channel_structured_run_exports_shrunk_without_its_masked_channels(tmp_path, capsys):
    """`train --structure channel` holds each masked channel's bias and batch norm at 0, so
    `export --shrink` removes every masked conv channel (VGG-11: a plain conv -> bn -> relu chain
    into the classifier) and the small model predicts like the masked one."""
    out = tmp_path / "runs"
    assert main(["train", "--method", "rigl", "--structure", "channel", "--density", "0.5", "--out", str(out),
                 "--model", "vgg11", "--model-options", "{width: 0.125}", "--data-fraction", "0.25"] + FAST) == 0
    run_id = _run_id(out)
    state = load_checkpoint(out / run_id / "checkpoints" / "last.pt")["model"]
    dead = {k[: -len(".weight_mask")]: int((~m.reshape(m.shape[0], -1).any(1)).sum())
            for k, m in state.items() if k.endswith("weight_mask") and k.startswith("features")}
    assert sum(dead.values()) > 0
    assert main(["export", run_id[:6], "--out", str(out), "--shrink"]) == 0
    assert f"removed {sum(dead.values())} output channels" in capsys.readouterr().out

    small = st.load_shrunk(out / run_id / "shrunk")
    for name, n in dead.items():
        assert small.get_submodule(name).out_channels == state[f"{name}.weight"].shape[0] - n
    data = load("digits", seed=0, val_fraction=0.1)
    masked = masked_model_from_state(create("vgg11", input_shape=data.input_shape, num_classes=10, width=0.125),
                                     state).eval()
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in masked.parameters())
    x = data.test.x[:64]
    with torch.no_grad():
        torch.testing.assert_close(small(x), masked(x), rtol=1e-5, atol=1e-5)
