"""The `sparsetrain` command end to end on the embedded digits data (small and fast)."""

import sqlite3

import pytest
import yaml

from sparsetrain.algorithms import METHODS
from sparsetrain.cli import main

FAST = ["--model", "mlp", "--dataset", "digits", "--epochs", "2", "--batch-size", "64",
        "--no-progress", "--model-options", "{widths: [32]}"]


pytestmark = pytest.mark.usefixtures("private_cache")


def _runs(out):
    with sqlite3.connect(out / "results.db") as db:
        return db.execute("SELECT run_id, status, method, density FROM runs").fetchall()


def test_train_writes_store_run_folder_and_skips_a_finished_run(tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["train", "--method", "rigl", "--density", "0.2", "--update-interval", "5", "--out", str(out)] + FAST
    assert main(args) == 0
    (row,) = _runs(out)
    assert row[1:] == ("finished", "rigl", 0.2)
    run_dir = out / row[0]
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["density"] == 0.2 and config["update_interval"] == 5 and config["method"] == "rigl"
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    printed = capsys.readouterr().out
    assert "FLOPs per sample" in printed and "1 multiply-accumulate = 2 FLOPs" in printed
    assert main(args) == 0
    assert "already finished" in capsys.readouterr().out


def test_config_file_with_flag_override_and_seeds(tmp_path):
    out = tmp_path / "runs"
    config = tmp_path / "c.yaml"
    config.write_text("method: set\ndensity: 0.5\nmodel: mlp\ndataset: digits\nepochs: 1\n"
                      "model_options: {widths: [16]}\n")
    assert main(["train", "--config", str(config), "--density", "0.3", "--seeds", "0,1",
                 "--out", str(out), "--no-progress"]) == 0
    rows = _runs(out)
    assert sorted(r[0].split("/")[1] for r in rows) == ["seed_0", "seed_1"]
    assert {r[2:] for r in rows} == {("set", 0.3)}


@pytest.mark.parametrize("args, message", [
    (["--method", "nope"], "unknown method 'nope'; choose one of: " + ", ".join(METHODS.names())),
    (["--model", "nope"], "unknown model 'nope'"),
    (["--dataset", "nope"], "unknown dataset 'nope'"),
    (["--method", "rigl", "--density", "1.5"], "density must be in (0, 1]"),
    (["--method", "rigl", "--density", "0"], "density must be in (0, 1]"),
    (["--config", "missing.yaml"], "config file 'missing.yaml' does not exist"),
])
def test_bad_input_is_one_sentence_and_exit_2_with_nothing_in_the_store(tmp_path, capsys, args, message):
    out = tmp_path / "runs"
    assert main(["train", "--out", str(out)] + args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (out / "results.db").exists()


def test_unknown_or_malformed_config_file_is_refused(tmp_path, capsys):
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("method: rigl\ndensty: 0.1\n")
    assert main(["train", "--config", str(bad_key), "--out", str(tmp_path / "r")]) == 2
    assert "unknown config file" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("method: [rigl\n")
    assert main(["train", "--config", str(broken), "--out", str(tmp_path / "r")]) == 2
    assert "is not valid YAML" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_resume_continues_an_interrupted_run(tmp_path, monkeypatch, capsys):
    out = tmp_path / "runs"
    args = ["train", "--method", "set", "--update-interval", "3", "--out", str(out)] + FAST
    args[args.index("--epochs") + 1] = "3"
    from sparsetrain.engine import trainer as trainer_module

    original = trainer_module.Trainer.save

    def save_then_stop(self, path):
        original(self, path)
        if self.epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module.Trainer, "save", save_then_stop)
    assert main(args) == 130
    assert _runs(out)[0][1] == "interrupted"
    monkeypatch.setattr(trainer_module.Trainer, "save", original)
    capsys.readouterr()
    assert main(args) == 0  # resuming is the default
    assert "resuming after epoch 2 of 3" in capsys.readouterr().out
    (row,) = _runs(out)
    assert row[1] == "finished"
    lines = (out / row[0] / "metrics.jsonl").read_text().splitlines()
    assert [yaml.safe_load(line)["epoch"] for line in lines] == [1, 2, 3]


def test_list_report_and_show(tmp_path, capsys):
    assert main(["list", "methods"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("dense", "static", "set", "rigl", "mest"))
    out = tmp_path / "runs"
    assert main(["report", "--out", str(out)]) == 2
    assert "no results store" in capsys.readouterr().err
    assert main(["train", "--method", "static", "--out", str(out)] + FAST) == 0
    capsys.readouterr()
    html = tmp_path / "r.html"
    assert main(["report", "--out", str(out), "--html", str(html), "--plot", str(tmp_path / "r.png")]) == 0
    assert "static" in capsys.readouterr().out
    assert html.read_text().count("<table") >= 2 and (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    run_id = _runs(out)[0][0]
    assert main(["show", run_id[:6], "--out", str(out)]) == 0
    shown = capsys.readouterr().out
    assert ".weight" in shown and "train_loss" in shown and "status finished" in shown


def test_quickstart_trains_five_methods_and_writes_figure_and_report(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    rows = [line.split() for line in printed.splitlines() if line.startswith("mnist1d/cnn1d ")]
    assert sorted(row[1] for row in rows) == ["dense", "mest", "rigl", "set", "static"]
    rows = _runs(out)
    assert sorted(r[2] for r in rows) == ["dense", "mest", "rigl", "set", "static"]
    assert {r[3] for r in rows if r[2] != "dense"} == {0.1}
    assert (out / "quickstart.png").read_bytes()[:4] == b"\x89PNG"
    assert "<table" in (out / "quickstart.html").read_text()
