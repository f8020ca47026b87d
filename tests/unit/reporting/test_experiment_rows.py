"""A report row is one experiment (issue 14 §1): the configurations are built by the real
`build_spec` and stored in a real results store, as `sparsetrain train` would; accuracies are
set by hand so that every expected number can be computed here."""

import json
import sqlite3
import statistics

import pytest

from sparsetrain.experiments import ResultsStore, build_spec
from sparsetrain.reporting import comparison_rows, comparison_table, experiment_groups, study_table

RIGL = {"method": "rigl", "density": 0.1, "model": "mlp", "dataset": "digits", "epochs": 10}
DENSE = {"method": "dense", "model": "mlp", "dataset": "digits", "epochs": 10}
LAYERS = [{"name": "fc.weight", "density": 0.1, "shape": [4, 4], "active": 2, "total": 16}]


def store_run(store, values, acc, status="finished"):
    """Store one run of the flat config ``values`` with test accuracy ``acc``; its run id."""
    spec = build_spec(values)
    run_id = store.run_id(spec.config_hash, spec.experiment.seed)
    store.start(run_id, config_hash=spec.config_hash, seed=spec.experiment.seed, config=spec.resolved())
    if status == "finished":
        store.finish(run_id, {"test_acc": acc}, LAYERS)
    else:
        store.fail(run_id, "RuntimeError: boom")
    return run_id


@pytest.fixture()
def store(tmp_path):
    with ResultsStore(tmp_path / "results.db") as st:
        yield st


def test_the_three_reproduction_runs_are_three_rows_told_apart_by_their_differing_fields(store):
    # issue 14: `train --method rigl --density 0.1 --model mlp --dataset digits --epochs 10`,
    # the same with --epochs 30, and with --update-interval 10 (one seed each) were one row "seeds 3"
    store_run(store, RIGL, 0.20)
    store_run(store, {**RIGL, "epochs": 30}, 0.90)
    store_run(store, {**RIGL, "update_interval": 10}, 0.45)
    rows, columns = comparison_rows(store.runs())
    headers = [h for _, h in columns]
    assert headers[:5] == ["setup", "method", "density", "epochs", "update_interval"]  # the hyperparameter diff
    cells = [(r["method"], r["density"], r["config.epochs"], r["config.update_interval"], r["n_seeds"],
              r["test_acc"]) for r in rows]
    assert sorted(cells) == sorted([
        ("rigl", "0.1", "10", "100", "1", "20.00"),  # one seed: no "± std"
        ("rigl", "0.1", "30", "100", "1", "90.00"),
        ("rigl", "0.1", "10", "10", "1", "45.00"),
    ])
    assert all(r["delta"] == "no dense run" for r in rows)


def test_seeds_count_distinct_seeds_of_one_configuration_and_std_needs_two(store):
    first = store_run(store, {**RIGL, "epochs": 30, "seed": 0}, 0.90)
    store_run(store, {**RIGL, "epochs": 30, "seed": 1}, 0.80)
    store_run(store, {**RIGL, "epochs": 30, "seed": 1}, 0.80)  # the same run again: still one seed
    store_run(store, {**RIGL, "epochs": 30, "seed": 2}, 0.10, status="failed")  # never averaged
    store_run(store, RIGL, 0.20)
    groups = {g["config"]["epochs"]: g for g in experiment_groups(store.runs(status=None))}
    assert groups[30]["seeds"] == [0, 1] and groups[30]["n_seeds"] == 2
    assert groups[30]["test_acc_mean"] == pytest.approx(0.85)
    assert groups[30]["test_acc_std"] == pytest.approx(statistics.stdev([0.90, 0.80]))  # 0.0707
    assert groups[10]["n_seeds"] == 1 and groups[10]["test_acc_std"] is None
    line = next(l for l in comparison_table(store.runs()).splitlines() if " 30 " in l)
    assert "85.00 ± 7.07" in line and first.split("/")[0][:8] in line


def test_the_dense_baseline_has_the_same_training_settings_or_the_row_says_there_is_none(store):
    store_run(store, RIGL, 0.50)
    store_run(store, {**RIGL, "update_interval": 10}, 0.60)
    store_run(store, {**RIGL, "epochs": 30}, 0.90)
    store_run(store, DENSE, 0.70)
    # a lottery's level 0 is a dense run too; with 5 epochs it is another experiment
    store_run(store, {**DENSE, "epochs": 5}, 0.30)
    groups = experiment_groups(store.runs())
    by = {(g["method"], g["config"]["epochs"], g["config"].get("update_interval")): g for g in groups}
    assert len(groups) == 5
    assert by[("rigl", 10, 100)]["delta"] == pytest.approx(0.50 - 0.70)
    assert by[("rigl", 10, 10)]["delta"] == pytest.approx(0.60 - 0.70)  # a method option: same settings
    assert by[("rigl", 30, 100)]["dense"] is None and by[("rigl", 30, 100)]["delta"] is None
    assert by[("dense", 5, None)]["n_seeds"] == 1 and by[("dense", 10, None)]["n_seeds"] == 1
    table = {tuple(line.split()[1:5]): line for line in comparison_table(store.runs()).splitlines()[2:]}
    assert "no dense run" in table[("rigl", "0.1", "30", "100")]
    assert "-20.00" in table[("rigl", "0.1", "10", "100")] and "-10.00" in table[("rigl", "0.1", "10", "10")]


def test_named_setups_of_one_dataset_stay_apart(store, tmp_path):
    # a grid over four UCR data sets: same dataset and model, four archives
    ucr = {"method": "dense", "model": "cnn1d", "dataset": "ucr", "data_dir": str(tmp_path)}
    for k, name in enumerate(("GunPoint", "Coffee", "ECG200", "Wafer")):
        store_run(store, {**ucr, "dataset_options": {"name": name}}, 0.5 + k / 10)
    table = study_table(store.runs())
    lines = table.splitlines()
    assert "dataset_options" in lines[0] and len(lines) == 2 + 4
    for k, name in enumerate(("GunPoint", "Coffee", "ECG200", "Wafer")):
        line = next(l for l in lines if "{name: " + name + "}" in l)
        assert " 1 " in line and f"{100 * (0.5 + k / 10):.2f}" in line


def test_a_run_stored_before_an_option_existed_is_its_own_row_and_the_option_a_column(store):
    store_run(store, RIGL, 0.50)
    old = store_run(store, {**RIGL, "seed": 1}, 0.40)
    config = store.get_run(old)["config"]
    del config["stop_fraction"]  # as stored by a version without the option
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE runs SET config = ? WHERE run_id = ?", (json.dumps(config), old))
    rows, columns = comparison_rows(store.runs())
    assert ("config.stop_fraction", "stop_fraction") in columns
    assert sorted((r["config.stop_fraction"], r["test_acc"]) for r in rows) == [("-", "40.00"), ("0.75", "50.00")]


def test_a_methods_own_options_are_not_a_difference_between_two_methods():
    from sparsetrain.reporting.groups import diff_keys

    def row(method, **config):
        return {"setup": "mnist1d/cnn1d", "scenario": "clean", "method": method, "config": config}

    quickstart = [row("dense", epochs=60), row("static", epochs=60, distribution="erk"),
                  row("rigl", epochs=60, distribution="erk", update_interval=25),
                  row("mest", epochs=60, distribution="erk", update_interval=5)]
    assert diff_keys(quickstart) == []  # RigL's 25 and MEST's 5 are each method's own setting
    two_rigls = quickstart + [row("rigl", epochs=60, distribution="erk", update_interval=100)]
    assert diff_keys(two_rigls) == ["update_interval"]
    other_allocation = quickstart + [row("set", epochs=60, distribution="uniform", update_interval=25)]
    assert diff_keys(other_allocation) == ["distribution"]  # every sparse row holds it
    longer = quickstart + [row("static", epochs=30, distribution="erk")]
    assert diff_keys(longer) == ["epochs"]
    # every row a dynamic method: each holds update_interval/anneal, with its own defaults
    dynamic = [row("dense", epochs=20), row("set", epochs=20, distribution="erk", update_interval=25, anneal="cosine"),
               row("rigl", epochs=20, distribution="erk", update_interval=25, anneal="cosine"),
               row("mest", epochs=20, distribution="erk", update_interval=5, anneal="step")]
    assert diff_keys(dynamic) == []
    assert diff_keys(dynamic + [row("mest", epochs=20, distribution="erk", update_interval=2, anneal="step")]) \
        == ["update_interval"]
    assert diff_keys([*dynamic[:3], row("mest", epochs=20, distribution="uniform", update_interval=5,
                                        anneal="step")]) == ["distribution"]
