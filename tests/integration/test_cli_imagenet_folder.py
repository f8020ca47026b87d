"""Training on a streamed ImageNet-layout tree: workers and resuming change nothing, `sparsetrain
train` stores one finished row, a damaged image is one sentence and exit 2, and the README's
commands run as shown."""

import shlex
from pathlib import Path

import pytest
import torch
from image_tree import write_image_tree

import sparsetrain.experiments
from sparsetrain.algorithms.dynamic import DynamicConfig
from sparsetrain.cli import main
from sparsetrain.data import load
from sparsetrain.engine import Callback, TrainConfig, Trainer
from sparsetrain.experiments import ResultsStore
from sparsetrain.models import create

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_image_tree(tmp_path_factory.mktemp("imagenet"))


class StopAfterFirstEpoch(Callback):
    def on_epoch_end(self, trainer):
        raise KeyboardInterrupt


def test_workers_and_resuming_do_not_change_the_run(tree, tmp_path):
    data = load("imagenet_folder", data_dir=str(tree), seed=0, val_fraction=0.0, size=12, resize=14)

    def trainer(workers, **kwargs):
        torch.manual_seed(0)
        model = create("mlp", input_shape=data.input_shape, num_classes=3, widths=[16])
        return Trainer(model, data, TrainConfig(epochs=2, batch_size=10, lr=0.05, workers=workers),
                       method="set", method_config=DynamicConfig(density=0.5, update_interval=2), seed=0, **kwargs)

    whole = trainer(0)
    whole.fit()
    checkpoint = tmp_path / "last.pt"
    with pytest.raises(KeyboardInterrupt):
        trainer(2, checkpoint_path=checkpoint, callbacks=[StopAfterFirstEpoch()]).fit()
    resumed = trainer(2, checkpoint_path=checkpoint)
    resumed.fit(resume=True)

    def drop_time(history):
        return [{k: v for k, v in m.items() if k != "epoch_time_s"} for m in history]

    assert drop_time(resumed.history) == drop_time(whole.history)
    for (name, a), b in zip(whole.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert whole.history[-1]["density"] == pytest.approx(0.5, abs=0.01)


def readme_imagenet_commands():
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines()
            if line.startswith("sparsetrain train --dataset imagenet_folder")]


def as_shown(command, tree, out):
    """The README command's arguments, reading ``tree`` instead of its --data-dir, writing to ``out``."""
    words = shlex.split(command)[1:]
    i = words.index("--data-dir")
    return words[:i] + words[i + 2:] + ["--data-dir", str(tree), "--out", str(out), "--no-progress"]


def test_readme_quick_command_stores_one_row_and_a_damaged_image_is_one_sentence(tree, tmp_path, capfd):
    full, quick = readme_imagenet_commands()
    out = tmp_path / "runs"
    assert "--workers 2" in quick
    assert main(as_shown(quick, tree, out)) == 0
    with ResultsStore(out / "results.db") as store:
        (row,) = store.runs()
    assert row["final"]["train_samples"] == 43 and row["final"]["test_samples"] == 12  # ceil(4.8) validate
    capfd.readouterr()

    bad = tree / "train" / "n01" / "3.JPEG"
    good = bad.read_bytes()
    try:
        bad.write_bytes(good[:150])
        assert main(as_shown(quick, tree, out) + ["--force"]) == 2
    finally:
        bad.write_bytes(good)
    err = capfd.readouterr().err  # also what the DataLoader workers wrote
    assert err.splitlines()[-1].startswith(f"sparsetrain: error: dataset file {str(bad)!r} is damaged or truncated (")
    assert "Traceback" not in err and err.count("error") == 1
    with ResultsStore(out / "results.db") as store:
        assert [r["run_id"] for r in store.runs()] == [row["run_id"]]  # the finished result is kept

    assert main(as_shown(quick, tree, out) + ["--label-noise", "0.2"]) == 2
    assert "streams its images from disk; label_noise=0.2 needs the whole dataset in memory" in capfd.readouterr().err
    assert main(["soup", row["run_id"], row["run_id"], "--out", str(out)]) == 2
    assert "streams its images from disk; Lottery Pools and soups hold the training set" in capfd.readouterr().err


def test_readme_resnet50_command_is_valid_up_to_training(tree, tmp_path, monkeypatch):
    full, quick = readme_imagenet_commands()

    class Validated(Exception):
        pass

    def stop(spec, **kwargs):
        assert (spec.experiment.model, spec.train.workers, spec.train.batch_size) == ("resnet50", 8, 256)
        raise Validated

    monkeypatch.setattr(sparsetrain.experiments, "run", stop)  # everything but the training itself
    with pytest.raises(Validated):
        main(as_shown(full, tree, tmp_path))
