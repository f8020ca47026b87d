"""Pruning methods through the CLI on the embedded digits data: one epoch each."""

import json
import sqlite3

import pytest

from sparsetrain.cli import main

FAST = ["--model", "mlp", "--dataset", "digits", "--epochs", "1", "--batch-size", "64",
        "--no-progress", "--model-options", "{widths: [32]}"]


pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.mark.parametrize("extra", [
    ["--method", "snip", "--density", "0.2"],
    ["--method", "gmp", "--density", "0.2", "--update-interval", "2", "--ranking", "global"],
])
def test_pruning_method_trains_from_the_cli_and_ends_at_its_density(tmp_path, extra):
    out = tmp_path / "runs"
    assert main(["train", "--out", str(out)] + extra + FAST) == 0
    with sqlite3.connect(out / "results.db") as db:
        rows = db.execute("SELECT status, method, density, final FROM runs").fetchall()
    (status, method, density, final), = rows
    assert (status, method, density) == ("finished", extra[1], 0.2)
    final = json.loads(final)
    assert final["density"] == pytest.approx(0.2, abs=1e-3) and 0 <= final["test_acc"] <= 1
