"""Derived runs: prune + fine-tune, lottery levels linked in the store, Lottery Pools, links table."""

import sqlite3

import pytest

from sparsetrain.errors import UserError
from sparsetrain.experiments import ResultsStore
from sparsetrain.experiments.pruning import (
    BEST_WEIGHTS, LotteryConfig, find_run, lottery_levels, pools_for_level, prune_run, run_dir_of, run_lottery,
)

BASE = {"model": "cnn1d", "dataset": "mnist1d", "epochs": 1, "batch_size": 32, "device": "cpu",
        "dataset_options": {"num_samples": 300}, "model_options": {"channels": [4, 8, 8]}}
QUIET = {"progress": False, "log": lambda message: None}


@pytest.fixture(scope="module")
def lottery(tmp_path_factory):
    root = tmp_path_factory.mktemp("lottery")
    store = ResultsStore(root / "results.db")
    rows = run_lottery(store, root, BASE, LotteryConfig(levels=2), **QUIET)
    return root, store, rows


def test_imp_level_k_keeps_round_0_8_pow_k_of_the_pruned_weights(lottery):
    _, store, rows = lottery
    total = rows[0]["final"]["total_weights"]
    assert [r["method"] for r in rows] == ["dense", "imp", "imp"]
    for level, row in enumerate(rows):
        assert row["final"]["active_weights"] == round(0.8 ** level * total)


def test_lottery_levels_are_linked_to_one_experiment_and_their_parent(lottery):
    _, store, rows = lottery
    experiment = store.links(run_id=rows[-1]["run_id"])[0]["experiment"]
    levels = lottery_levels(store, experiment)
    assert [r["level"] for r in levels] == [0, 1, 2]
    assert [r["run_id"] for r in levels] == [r["run_id"] for r in rows]
    for previous, link in zip(rows, store.links(experiment=experiment)[1:]):
        assert link["parent_run"] == previous["run_id"]


def test_lottery_pools_run_is_stored_and_not_worse_on_validation(lottery):
    root, store, rows = lottery
    experiment = store.links(run_id=rows[-1]["run_id"])[0]["experiment"]
    row = pools_for_level(store, root, lottery_levels(store, experiment), 2, **{"log": QUIET["log"]})
    assert row["method"] == "lottery-pools" and row["density"] == pytest.approx(0.64)
    assert row["final"]["val_acc"] >= row["final"]["ticket_val_acc"]
    assert row["final"]["active_weights"] == rows[2]["final"]["active_weights"]
    assert store.links(parent_run=rows[2]["run_id"])[0]["run_id"] == row["run_id"]
    # as luuyin/Lottery-pools: each ticket's best-validation weights, the README's 11 alphas
    assert row["config"]["pools_checkpoint"] == "best"
    assert row["config"]["alphas"] == [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    assert all((run_dir_of(root, r).path / BEST_WEIGHTS).is_file() for r in rows)


def _without_best_weights(lottery, tmp_path, level):
    """A copy of the lottery whose level ``level`` has no best-validation weights: (folder, its
    levels, the copy's store)."""
    import shutil

    root, store, rows = lottery
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    experiment = store.links(run_id=rows[-1]["run_id"])[0]["experiment"]
    (run_dir_of(copy, rows[level]).path / BEST_WEIGHTS).unlink()
    other = ResultsStore(copy / "results.db")
    return copy, lottery_levels(other, experiment), other


def test_lottery_pools_without_best_weights_is_a_user_error_and_last_works(lottery, tmp_path):
    copy, levels, other = _without_best_weights(lottery, tmp_path, 1)
    with other:
        with pytest.raises(UserError, match="best-validation weights"):
            pools_for_level(other, copy, levels, 2, log=QUIET["log"])
        row = pools_for_level(other, copy, levels, 2, checkpoint="last", alphas=(0.5,), log=QUIET["log"])
    assert row["config"]["pools_checkpoint"] == "last" and row["config"]["alphas"] == [0.5]


def test_lottery_pools_reads_only_the_tickets_it_interpolates(lottery, tmp_path):
    """Level 0 trained before as a plain dense run (the same config) has no best-validation weights;
    pools on level 2 with one neighbour (level 1) never reads it."""
    copy, levels, other = _without_best_weights(lottery, tmp_path, 0)
    with other:
        row = pools_for_level(other, copy, levels, 2, search_num=2, alphas=(0.5,), log=QUIET["log"])
        assert [level for level, _ in row["final"]["accepted"]] in ([], [1])
        with pytest.raises(UserError, match="best-validation weights"):  # with level 0 as a neighbour
            pools_for_level(other, copy, levels, 2, search_num=3, alphas=(0.5,), log=QUIET["log"])


def test_best_weights_are_saved_only_when_validation_accuracy_beats_every_earlier_epoch(tmp_path):
    import types

    import torch

    from sparsetrain.experiments.pruning import SaveBestWeights
    model = torch.nn.Linear(1, 1, bias=False)
    trainer = types.SimpleNamespace(model=model, history=[])
    callback = SaveBestWeights(tmp_path / BEST_WEIGHTS)
    saved = []
    for epoch, val_acc in enumerate([0.5, 0.7, 0.6, 0.7, 0.65]):  # best: epoch 1 (a tie does not replace it)
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        trainer.history.append({"val_acc": val_acc})
        callback.on_eval(trainer)
        saved.append(float(torch.load(tmp_path / BEST_WEIGHTS, weights_only=True)["weight"]))
    assert saved == [0.0, 1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("method", ["global", "dp"])
def test_prune_run_fine_tunes_a_finished_run_and_links_it(lottery, method):
    root, store, rows = lottery
    row = prune_run(store, root, rows[0]["run_id"][:8], method=method, density=0.2, finetune_epochs=1, **QUIET)
    assert row["method"] == f"prune-{method}" and row["density"] == 0.2
    assert row["final"]["active_weights"] == round(0.2 * rows[0]["final"]["total_weights"])
    assert row["config"]["epochs"] == 1
    assert {link["run_id"] for link in store.links(parent_run=rows[0]["run_id"])} >= {row["run_id"]}


def test_prune_run_errors_name_the_problem(lottery):
    root, store, rows = lottery
    with pytest.raises(UserError, match="--method"):
        prune_run(store, root, rows[0]["run_id"], method="snap", density=0.2, finetune_epochs=1, **QUIET)
    with pytest.raises(UserError, match="no run matches"):
        find_run(store, "zzzz")


def test_links_table_is_added_to_a_store_written_before_it_existed(tmp_path):
    path = tmp_path / "results.db"
    with ResultsStore(path) as store:
        store.runs()
    with sqlite3.connect(path) as db:  # a store from before the links table
        db.execute("DROP TABLE links")
    store = ResultsStore(path)
    store.link("a/seed_0", parent_run="b/seed_0", experiment="e", level=2)
    assert store.links(experiment="e") == [{"run_id": "a/seed_0", "parent_run": "b/seed_0",
                                            "experiment": "e", "level": 2}]


def _layer_active(row, name):
    return next(layer for layer in row["layers"] if layer["name"].startswith(name))


def test_lottery_rewinds_to_an_epoch_or_only_the_learning_rate_and_can_prune_convs_only(tmp_path):
    store = ResultsStore(tmp_path / "results.db")
    base = {**BASE, "epochs": 2}
    rows = run_lottery(store, tmp_path, base, LotteryConfig(levels=1, rewind="epoch", rewind_epoch=1), **QUIET)
    assert rows[1]["config"]["rewind_to"].endswith("weights_epoch_1.pt")
    assert (rows[1]["config"]["epochs"], rows[1]["config"]["start_epoch"]) == (2, 1)  # epoch 1 of 2 on
    rows = run_lottery(store, tmp_path, base, LotteryConfig(levels=1, rewind="lr"), **QUIET)
    assert rows[1]["config"]["rewind_to"] is None and rows[1]["config"]["epochs"] == 2
    lr_experiment = store.links(run_id=rows[-1]["run_id"])[0]["experiment"]
    rows = run_lottery(store, tmp_path, base, LotteryConfig(levels=1, conv_only=True), **QUIET)
    conv_experiment = store.links(run_id=rows[-1]["run_id"])[0]["experiment"]
    for experiment in (lr_experiment, conv_experiment):  # both keep the dense level 0 they share
        assert [(r["level"], r["method"]) for r in lottery_levels(store, experiment)] == [(0, "dense"), (1, "imp")]
    assert rows[1]["config"]["include"] == ["features.0.weight", "features.2.weight", "features.4.weight"]
    convs = sum(layer["total"] for layer in rows[1]["layers"] if layer["name"].startswith("features"))
    linear = _layer_active(rows[1], "classifier")
    assert linear["active"] == linear["total"]  # the Linear layer stays dense
    assert sum(layer["active"] for layer in rows[1]["layers"]
               if layer["name"].startswith("features")) == round(0.8 * convs)


@pytest.mark.parametrize("greedy", [False, True])
def test_soup_of_fine_tuned_runs_keeps_the_mask_and_is_the_mean(lottery, greedy):
    import torch

    from sparsetrain.experiments.pruning import read_weights, run_dir_of, soup_runs

    root, store, rows = lottery
    runs = [prune_run(store, root, rows[0]["run_id"], method="global", density=0.3, finetune_epochs=1,
                      overrides={"lr": lr}, **QUIET) for lr in (0.01, 0.05)]
    soup = soup_runs(store, root, [r["run_id"] for r in runs], greedy=greedy, log=QUIET["log"])
    assert soup["method"] == ("soup-greedy" if greedy else "soup-uniform")
    states = [read_weights(run_dir_of(root, r).last_checkpoint) for r in runs]
    mixed = read_weights(run_dir_of(root, soup).last_checkpoint)
    used = [states[[r["run_id"] for r in runs].index(i)] for i in soup["final"]["ingredients"]]
    for key, value in mixed.items():
        if value.is_floating_point():
            assert torch.allclose(value, torch.stack([s[key] for s in used]).mean(0))
        else:
            assert torch.equal(value, states[0][key])  # the shared mask
    assert soup["final"]["active_weights"] == runs[0]["final"]["active_weights"]


def test_soup_of_batch_norm_runs_recalibrates_by_default_as_sms(tmp_path):
    import torch

    from sparsetrain.algorithms.averaging import recalibrate_bn, uniform_soup
    from sparsetrain.data import batches, load
    from sparsetrain.experiments import build_spec, run
    from sparsetrain.experiments.pruning import _rebuild, read_weights, run_dir_of, soup_runs

    store = ResultsStore(tmp_path / "results.db")
    base = {"model": "vgg11", "model_options": {"width": 0.0625}, "dataset": "digits", "epochs": 1,
            "batch_size": 512, "device": "cpu", "method": "dense"}
    runs = [run(build_spec({**base, "lr": lr}), root=tmp_path, store=store, **QUIET) for lr in (0.01, 0.05)]
    refs = [r["run_id"] for r in runs]
    averaged = uniform_soup([read_weights(run_dir_of(tmp_path, r).last_checkpoint) for r in runs])
    # by hand: the average, then the statistics re-estimated on the unshuffled training batches
    _, model, _ = _rebuild(runs[0])
    model.load_state_dict(averaged)
    recalibrate_bn(model, [x for x, _ in batches(load("digits", seed=0, val_fraction=0.1).train, 512, shuffle=False)])
    stats = [k for k in averaged if k.endswith(("running_mean", "running_var"))]
    assert stats
    for recalibrate, expected in ((True, model.state_dict()), (False, averaged)):
        soup = soup_runs(store, tmp_path, refs, recalibrate_bn=recalibrate, log=QUIET["log"])
        mixed = read_weights(run_dir_of(tmp_path, soup).last_checkpoint)
        for key in mixed:
            assert torch.allclose(mixed[key].float(), expected[key].float(), atol=1e-5), (recalibrate, key)
    assert any(not torch.allclose(averaged[k], model.state_dict()[k]) for k in stats)
