"""`sparsetrain bench` then `sparsetrain report`, end to end on tiny data."""

import sqlite3

import yaml

from sparsetrain.cli import main
from sparsetrain.experiments import ResultsStore, bench

GRID = {
    "base": {"epochs": 2, "batch_size": 128, "lr": 0.05, "update_interval": 5},
    "setups": {
        "mnist1d": {"dataset": "mnist1d", "model": "mlp", "model_options": {"widths": [16]},
                    "dataset_options": {"num_samples": 300}},
    },
    "methods": ["dense", "set"],
    "densities": [0.3],
    "scenarios": {"clean": {}, "noisy": {"label_noise": 0.4}},
    "seeds": [0, 1],
}


def _finals(out):
    with ResultsStore(out / "results.db") as store:
        return {r["run_id"]: (r["final"]["test_acc"], r["final"]["train_loss"]) for r in store.runs()}


def _devices(out):
    with ResultsStore(out / "results.db") as store:
        return {r["config"]["device"] for r in store.runs()}


def test_bench_grid_then_report(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SPARSETRAIN_CACHE", str(tmp_path / "cache"))
    # every job holds the device place_jobs gives it (a GPU each on a GPU machine; here a CPU name
    # that differs from the runs' own "auto", so the stores show which device each run had)
    monkeypatch.setattr(bench, "place_jobs", lambda jobs, devices, gpus: ["cpu"] * jobs)
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(GRID))
    one, two = tmp_path / "one", tmp_path / "two"

    assert main(["bench", str(grid), "--out", str(one), "--jobs", "1", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "8 runs, 0 already finished, 8 to train" in text
    assert "Δ vs dense" in text and "label_noise=0.4" in text
    html = (one / "report.html").read_text()
    # accuracy vs density, per-layer density, and the learning curves of each of the 8 runs
    assert html.count("data:image/png;base64,") == 2 + 8 and "label_noise=0.4" in html
    assert html.count('alt="learning curves of ') == 8

    # parallel processes give exactly the same runs and results
    assert main(["bench", str(grid), "--out", str(two), "--jobs", "2", "--threads", "1"]) == 0
    capsys.readouterr()
    assert _finals(one) == _finals(two) and len(_finals(one)) == 8
    assert _devices(one) == _devices(two) == {"cpu"}

    # interrupted: one run left unfinished; only it trains again
    with sqlite3.connect(one / "results.db") as db:
        victim = db.execute("SELECT run_id FROM runs WHERE method = 'set' ORDER BY run_id LIMIT 1").fetchone()[0]
        db.execute("UPDATE runs SET status = 'running' WHERE run_id = ?", (victim,))
    assert main(["bench", str(grid), "--out", str(one), "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "8 runs, 7 already finished, 1 to train" in text
    assert _finals(one) == _finals(two)

    report = tmp_path / "report.html"
    assert main(["report", "--out", str(one), "--html", str(report)]) == 0
    text = capsys.readouterr().out
    assert "One row per configuration" in text and "mnist1d/mlp" in text and "label_noise=0.4" in text
    assert report.read_text().count("data:image/png;base64,") == 2 + 8


def test_bench_rejects_unregistered_methods_and_bad_flags(tmp_path, capsys):
    assert main(["bench", "--methods", "dense,nosuch", "--out", str(tmp_path)]) == 2
    assert "method 'nosuch', which is not registered" in capsys.readouterr().err
    assert main(["bench", "--preset", "quick", "--set", "epochs", "--out", str(tmp_path)]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main(["bench", "--preset", "quick", "--dry-run", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip().endswith("180 runs")
    assert not (tmp_path / "results.db").exists()


def test_bench_with_lottery_reports_only_the_grid_densities(tmp_path, capsys):
    flags = ["--methods", "dense,lottery", "--set", "epochs=1", "--set", "dataset=mnist1d", "--set", "model=mlp",
             "--set", "model_options={widths: [16]}", "--set", "dataset_options={num_samples: 300}",
             "--out", str(tmp_path), "--threads", "1"]
    assert main(["bench", *flags, "--densities", "0.2,0.05", "--dry-run"]) == 0
    # dense (= level 0), standard levels 1..13 (0.8 ** 13 > 0.05), branches at 0.2 (from 7) and 0.05 (from 13)
    assert capsys.readouterr().out.strip().endswith("16 runs")
    # 0.6 lies between 0.8 ** 2 and 0.8 ** 3: levels 1 and 2 train, then a branch to exactly 0.6
    assert main(["bench", *flags, "--densities", "0.6"]) == 0
    text = capsys.readouterr().out
    assert "4 runs, 0 already finished, 4 to train as 1 task, 1 a lottery chain" in text
    table = [line.split() for line in text.splitlines() if " imp " in f" {line} "]
    assert [row[row.index("imp") + 1] for row in table] == ["0.6"]  # the intermediate levels are not shown
    with ResultsStore(tmp_path / "results.db") as store:
        assert sorted(round(r["density"], 4) for r in store.runs() if r["method"] == "imp") == [0.6, 0.64, 0.8]
