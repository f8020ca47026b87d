"""Lottery tickets as a grid method: level plan, shared levels, one job per chain, resume."""

import math

import pytest

from sparsetrain.errors import UserError
from sparsetrain.experiments import ResultsStore
from sparsetrain.experiments.bench import LotteryGrid, expand_grid, plan_grid, run_grid
from sparsetrain.experiments.pruning import LotteryChain, LotteryConfig, ticket_levels
from sparsetrain.reporting.study import study_groups

TINY = {"model": "cnn1d", "dataset": "mnist1d", "epochs": 1, "batch_size": 32, "device": "cpu",
        "dataset_options": {"num_samples": 300}, "model_options": {"channels": [4, 8, 8]}}
QUIET = {"log": lambda message: None}


def test_ticket_levels_are_the_first_level_at_or_below_the_density():
    # 0.8 ** 13 = 0.0550 > 0.05 > 0.8 ** 14 = 0.0440: 0.05 is reached at level 14, a branch
    assert ticket_levels(0.2, 0.05) == (14, False)
    assert ticket_levels(0.2, 0.64) == (2, True)  # 0.8 ** 2 (0.6400000000000001) is the standard level
    assert ticket_levels(0.2, 0.8) == (1, True)
    assert ticket_levels(0.2, 0.9) == (1, False)  # pruned from the dense level 0 by 10 %
    assert ticket_levels(0.5, 0.25) == (2, True)
    with pytest.raises(UserError, match="density"):
        ticket_levels(0.2, 1.0)


def test_standard_levels_are_shared_and_each_density_off_the_standard_levels_is_one_branch(tmp_path):
    chain = LotteryChain(dict(TINY, seed=0), dict(TINY, seed=0), LotteryConfig(), (0.2, 0.05))
    runs = chain.runs(tmp_path)
    standard = [r for r in runs if r.target is None]
    assert [r.level for r in standard] == list(range(14))  # level 0 and 13 standard levels
    assert all(math.isclose(r.density, 0.8 ** r.level) for r in standard[1:])
    branches = {r.target: r for r in runs if r.target is not None}
    assert set(branches) == {0.2, 0.05} and len(runs) == 16
    assert branches[0.2].level == 8 and runs[branches[0.2].parent].level == 7
    assert branches[0.05].level == 14 and runs[branches[0.05].parent].level == 13
    assert all(runs[r.parent].level == r.level - 1 for r in standard[1:])
    alone = LotteryChain(dict(TINY, seed=0), dict(TINY, seed=0), LotteryConfig(), (0.2,)).runs(tmp_path)
    assert [r.run_id for r in alone] == [r.run_id for r in runs[:8]] + [branches[0.2].run_id]  # a prefix


def test_a_lottery_grid_trains_dense_and_two_levels_once_and_reports_them_at_their_densities(tmp_path):
    grid = {"base": TINY, "methods": ["dense", "lottery"], "densities": [0.64, 0.8], "seeds": [0]}
    runs = expand_grid(grid)
    dense = next(r for r in runs if not isinstance(r, LotteryGrid))
    chain = next(r for r in runs if isinstance(r, LotteryGrid))
    assert chain.run_id == dense.run_id  # level 0 is the grid's dense run
    planned = plan_grid(runs, tmp_path)
    assert len(planned) == 3 and all(p.reported for p in planned)
    first = run_grid(runs, tmp_path, jobs=1, **QUIET)
    assert sorted(first["trained"]) == sorted(p.run_id for p in planned) and not first["failed"]
    with ResultsStore(tmp_path / "results.db") as store:
        rows = store.runs()
        total = rows[0]["final"]["total_weights"]
        groups = study_groups(rows)
        assert [(g["method"], g["density"]) for g in groups] == [
            ("dense", None), ("imp", pytest.approx(0.64)), ("imp", pytest.approx(0.8))]
        by_density = {round(r["density"], 6): r for r in rows if r["method"] == "imp"}
        assert by_density[0.8]["final"]["active_weights"] == round(0.8 * total)
        assert by_density[0.64]["final"]["active_weights"] == round(0.64 * total)
        links = {link["run_id"]: link for link in store.links()}
        assert links[by_density[0.64]["run_id"]]["parent_run"] == by_density[0.8]["run_id"]
        assert links[by_density[0.8]["run_id"]]["parent_run"] == dense.run_id
    again = run_grid(runs, tmp_path, **QUIET)
    assert again["trained"] == [] and sorted(again["skipped"]) == sorted(first["trained"])

    # a density between the levels adds one branch, pruned from level 1, and nothing else
    grid["densities"] = [0.64, 0.7, 0.8]
    more = run_grid(expand_grid(grid), tmp_path, **QUIET)
    assert len(more["trained"]) == 1 and len(more["skipped"]) == 3
    with ResultsStore(tmp_path / "results.db") as store:
        branch = store.get_run(more["trained"][0])
        assert branch["method"] == "imp" and branch["density"] == 0.7
        assert abs(branch["final"]["active_weights"] - 0.7 * total) <= 1
        assert store.links(run_id=branch["run_id"])[0]["parent_run"] == by_density[0.8]["run_id"]


def test_lottery_grid_errors_name_the_problem():
    with pytest.raises(UserError, match="levels come from the densities"):
        expand_grid({"base": TINY, "methods": ["lottery"], "densities": [0.5],
                     "method_options": {"lottery": {"levels": 3}}})
    with pytest.raises(UserError, match="lottery needs a densities axis"):
        expand_grid({"base": TINY, "methods": ["lottery"]})
    with pytest.raises(UserError, match="unknown lottery option 'nosuch'"):
        expand_grid({"base": TINY, "methods": ["lottery"], "densities": [0.5],
                     "method_options": {"lottery": {"nosuch": 1}}})
    with pytest.raises(UserError, match="prune_fraction"):
        expand_grid({"base": TINY, "methods": ["lottery"], "densities": [0.5],
                     "method_options": {"lottery": {"prune_fraction": 1.5}}})
    with pytest.raises(UserError, match="rewind_epoch must be below epochs"):
        expand_grid({"base": TINY, "methods": ["lottery"], "densities": [0.5],
                     "method_options": {"lottery": {"rewind": "epoch", "rewind_epoch": 1}}})


def test_with_two_jobs_a_chain_is_one_job_and_trains_the_dense_run_it_shares(tmp_path):
    grid = {"base": TINY, "methods": ["dense", "static", "lottery"], "densities": [0.8], "seeds": [0]}
    runs = expand_grid(grid)
    logs = []
    result = run_grid(runs, tmp_path, jobs=2, threads=1, log=logs.append)
    assert "3 runs, 0 already finished, 3 to train as 2 tasks, 1 a lottery chain" in logs[0]
    assert len(result["trained"]) == 3 and not result["failed"]
    with ResultsStore(tmp_path / "results.db") as store:
        rows = store.runs()
        assert sorted(r["method"] for r in rows) == ["dense", "imp", "static"]
    assert sum("lottery" in line for line in logs[1:]) == 1  # one report line for the chain's job
