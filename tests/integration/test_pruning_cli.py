"""`sparsetrain prune`, `sparsetrain lottery` and the report of their runs, end to end on digits."""

import sqlite3

import pytest

from sparsetrain.cli import main

FAST = ["--model", "mlp", "--dataset", "digits", "--epochs", "1", "--batch-size", "64",
        "--no-progress", "--model-options", "{widths: [32]}"]


pytestmark = pytest.mark.usefixtures("private_cache")


def _rows(out, sql):
    with sqlite3.connect(out / "results.db") as db:
        return db.execute(sql).fetchall()


def test_prune_fine_tunes_a_finished_run_and_the_report_shows_it(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["train", "--method", "dense", "--out", str(out)] + FAST) == 0
    (parent,) = _rows(out, "SELECT run_id FROM runs")
    capsys.readouterr()
    assert main(["prune", parent[0][:6], "--method", "prune-lamp", "--density", "0.2", "--finetune-epochs", "1",
                 "--out", str(out), "--no-progress"]) == 0
    assert "prune-lamp" in capsys.readouterr().out
    (child,) = _rows(out, "SELECT run_id, method, density FROM runs WHERE method = 'prune-lamp'")
    assert child[1:] == ("prune-lamp", 0.2)
    assert _rows(out, "SELECT parent_run FROM links WHERE run_id = '%s'" % child[0]) == [(parent[0],)]
    assert main(["report", "--out", str(out)]) == 0
    report = capsys.readouterr().out
    assert any(line.split()[1:3] == ["prune-lamp", "0.2"] for line in report.splitlines())
    assert main(["prune", parent[0][:6], "--method", "prune-lamp", "--density", "1.5", "--out", str(out)]) == 2
    assert "density must be in (0, 1]" in capsys.readouterr().err
    assert main(["prune", "zzz", "--method", "prune-lamp", "--density", "0.5", "--out", str(out)]) == 2
    assert main(["prune", parent[0][:6], "--method", "prune-lamp", "--density", "0.2", "--finetune-epochs", "1",
                 "--lr", "0.01", "--out", str(out), "--no-progress"]) == 0
    runs = [r[0] for r in _rows(out, "SELECT run_id FROM runs WHERE method = 'prune-lamp'")]
    capsys.readouterr()
    assert main(["soup"] + runs + ["--out", str(out)]) == 0
    assert "soup-uniform" in capsys.readouterr().out
    assert main(["soup", runs[0], parent[0], "--out", str(out)]) == 2  # dense and sparse: no shared mask
    assert "another architecture or sparsity" in capsys.readouterr().err


def test_lottery_prints_accuracy_per_level(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["lottery", "--levels", "2", "--prune-fraction", "0.5", "--pools", "2", "--out", str(out)] + FAST) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.split()[:2] == ["level", "method"]):]
    assert [line.split()[0] for line in table[2:]] == ["0", "1", "2", "2+pools"]
    assert [line.split()[1] for line in table[2:]] == ["dense", "imp", "imp", "lottery-pools"]
    assert [float(line.split()[2]) for line in table[2:5]] == [1.0, 0.5, 0.25]
    assert main(["lottery", "--rewind", "sideways", "--out", str(out)] + FAST) == 2
    assert "rewind must be one of" in capsys.readouterr().err
