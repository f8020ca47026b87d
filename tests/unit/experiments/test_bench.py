"""Grid expansion and the resumable grid runner."""

import pytest

from sparsetrain.algorithms import METHODS
from sparsetrain.errors import UserError
from sparsetrain.experiments import ResultsStore
from sparsetrain.experiments.bench import LOTTERY, LotteryGrid, expand_grid, list_presets, plan_grid, read_grid, run_grid
from sparsetrain.experiments.pruning import LotteryConfig, ticket_levels

TINY = {"dataset": "digits", "model": "mlp", "model_options": {"widths": [8]}, "epochs": 1,
        "batch_size": 256, "lr": 0.05}


def test_dense_runs_once_per_scenario_and_seed_and_sparse_methods_once_per_density():
    grid = {"base": {"epochs": 1, "update_interval": 7}, "methods": ["dense", "static", "set"],
            "densities": [0.1, 0.5], "scenarios": {"clean": {}, "noisy": {"label_noise": 0.4}},
            "seeds": [0, 1]}
    runs = expand_grid(grid)
    assert len(runs) == 2 * 2 * (1 + 2 * 2)
    assert len({r.run_id for r in runs}) == len(runs)
    dense = [r for r in runs if r.spec.experiment.method == "dense"]
    assert sorted((r.scenario, r.spec.experiment.seed) for r in dense) == [
        ("clean", 0), ("clean", 1), ("noisy", 0), ("noisy", 1)]
    sets = [r for r in runs if r.spec.experiment.method == "set"]
    assert {r.spec.method.update_interval for r in sets} == {7}  # a method option reaches the methods that have it
    assert {r.spec.method.density for r in sets} == {0.1, 0.5}
    assert {r.spec.experiment.label_noise for r in runs if r.scenario == "noisy"} == {0.4}
    assert [r.spec.experiment.seed for r in runs[:10]] == [0] * 10  # whole seeds first


def test_grid_errors_name_the_problem():
    with pytest.raises(UserError, match="method 'nosuch', which is not registered; registered methods: "):
        expand_grid({"methods": ["dense", "nosuch"]}, where="preset 'x'")
    with pytest.raises(UserError, match="unknown config key 'epoch'"):
        expand_grid({"methods": ["dense"], "base": {"epoch": 3}})
    with pytest.raises(UserError, match="'density' is a grid axis"):
        expand_grid({"methods": ["set"], "base": {"density": 0.1}})
    with pytest.raises(UserError, match="label_noise must be in"):
        expand_grid({"methods": ["dense"], "scenarios": {"bad": {"label_noise": 2}}})
    with pytest.raises(UserError, match="unknown preset"):
        read_grid(preset="nosuch")


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_expands_with_the_methods_registered_today(preset, tmp_path):
    top = read_grid(preset=preset)
    parts = top.pop("parts", None) or [{}]
    for part in parts:  # a preset with parts: each part over the top level, checked as one grid
        grid = {**top, **part, "base": {**(top.get("base") or {}), **(part.get("base") or {})}}
        _check_preset_grid(grid, preset, tmp_path, min_methods=3 if len(parts) == 1 else 2)


def _check_preset_grid(grid, preset, tmp_path, min_methods=3):
    assert all(m in METHODS or m == LOTTERY for m in grid["methods"])  # every method runs, lottery included
    assert "dense" in grid["methods"] and len(grid["methods"]) >= min_methods
    grid["seeds"] = grid["seeds"][:1]
    grid["setups"] = dict(list(grid.get("setups", {"": {}}).items())[:1])
    base = grid["base"]
    if base.get("dataset", "mnist1d") not in ("mnist1d", "digits"):
        base["dataset"] = "digits"  # the CIFAR readers may not be here; the keys are what is checked
    runs = expand_grid(grid, where=preset)
    planned = plan_grid(runs, tmp_path)
    assert len(planned) == len({p.run_id for p in planned}) > 0
    cells = len(grid.get("scenarios") or {"clean": {}})
    sparse = [m for m in grid["methods"] if m not in ("dense", LOTTERY)]
    expected = cells * (1 + len(sparse) * len(grid["densities"]))
    if LOTTERY in grid["methods"]:  # per scenario: the standard levels down to the lowest density + branches
        fraction = LotteryConfig().prune_fraction
        levels = [ticket_levels(fraction, d) for d in grid["densities"]]
        expected += cells * (max(k if exact else k - 1 for k, exact in levels)
                             + sum(not exact for _, exact in levels))
    assert len(planned) == expected


def test_quick_preset_covers_clean_label_noise_and_half_data_at_three_densities():
    runs = expand_grid(read_grid(preset="quick"))
    assert {r.scenario for r in runs} == {"clean", "label_noise_0.4", "half_data"}
    assert {r.spec.experiment.dataset for r in runs} == {"mnist1d", "digits"}
    assert len({r.values.get("density") for r in runs} - {None}) == 3


def test_an_interrupted_grid_trains_only_the_unfinished_run(tmp_path):
    grid = {"base": TINY, "methods": ["dense", "static"], "densities": [0.5], "seeds": [0, 1]}
    runs = expand_grid(grid)
    logs = []
    first = run_grid(runs, tmp_path, log=logs.append)
    assert sorted(first["trained"]) == sorted(r.run_id for r in runs) and not first["failed"]
    with ResultsStore(tmp_path / "results.db") as store:
        before = {r["run_id"]: r["started_at"] for r in store.runs()}
        store.fail(runs[1].run_id, "KeyboardInterrupt: killed")  # as if it had been interrupted
    second = run_grid(runs, tmp_path, log=logs.append)
    assert second["trained"] == [runs[1].run_id]
    assert sorted(second["skipped"]) == sorted(r.run_id for r in runs if r is not runs[1])
    with ResultsStore(tmp_path / "results.db") as store:
        after = {r["run_id"]: r["started_at"] for r in store.runs()}
    assert len(after) == 4 and after[runs[1].run_id] > before[runs[1].run_id]
    assert all(after[k] == before[k] for k in after if k != runs[1].run_id)
    assert run_grid(runs, tmp_path, log=logs.append)["trained"] == []
    assert "4 runs, 3 already finished, 1 to train" in "\n".join(logs)


def test_cifar10_hard_snip_keeps_the_snip_layer_ratios_at_random_positions_as_the_study():
    # QiaoXiao7282/hard_sample_learners sparse_init_func("snip"): per-layer densities from the
    # global SNIP ranking, then mask positions redrawn at random
    import torch
    import torch.nn.functional as F
    from torch import nn

    from sparsetrain.algorithms import create
    grid = read_grid(preset="cifar10-hard")
    grid["base"]["dataset"] = "digits"
    grid.update(seeds=[0], densities=[0.1], scenarios={"clean": {}}, methods=["snip"],  # the snip cells only
                method_options={"snip": grid["method_options"]["snip"]})
    snips = [r for r in expand_grid(grid, where="cifar10-hard")
             if not isinstance(r, LotteryGrid) and r.spec.experiment.method == "snip"]
    assert snips and {r.spec.method.ranking for r in snips} == {"ratios"}
    options = {k: v for k, v in grid["method_options"]["snip"].items()}
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 12), nn.ReLU(), nn.Linear(12, 4))
    x, y = torch.randn(20, 10), torch.randint(0, 4, (20,))
    names = ["0.weight", "2.weight"]
    params = [model.get_parameter(n) for n in names]
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), params)
    flat = torch.cat([(g * p).abs().reshape(-1) for g, p in zip(grads, params)])
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[flat.topk(round(0.25 * flat.numel())).indices] = True
    top = dict(zip(names, [k.view_as(p) for k, p in zip(keep.split([p.numel() for p in params]), params)]))
    method = create("snip", model, density=0.25, **options)
    method.prepare(iter([(x, y)]))
    masks = {w.name: w.mask for w in method.weights}
    assert {n: int(m.sum()) for n, m in masks.items()} == {n: int(t.sum()) for n, t in top.items()}
    assert any(not torch.equal(masks[n], top[n]) for n in names)  # positions are not SNIP's own


def test_a_grid_skips_the_runs_another_process_holds_and_says_so(tmp_path):
    import filelock

    from sparsetrain.experiments.rundir import RunDir

    runs = expand_grid({"base": TINY, "methods": ["dense", "static"], "densities": [0.5], "seeds": [0]})
    held = runs[0]
    lock_path = RunDir(tmp_path, held.spec.config_hash, 0).lock_path
    lock_path.parent.mkdir(parents=True)
    logs = []
    with filelock.FileLock(lock_path, timeout=0):  # another bench on the same folder trains it
        result = run_grid(runs, tmp_path, log=logs.append)
    assert result["held"] == [held.run_id] and result["trained"] == [runs[1].run_id]
    assert f"skipped, run {held.run_id} is being trained by another process" in "\n".join(logs)
    with ResultsStore(tmp_path / "results.db") as store:
        assert store.get_run(held.run_id) is None  # nothing of it written by this process


def test_place_jobs_gives_each_job_one_gpu_in_turn_and_refuses_missing_gpus():
    from sparsetrain.experiments.bench import parse_devices, place_jobs

    assert place_jobs(2, None, 2) == ["cuda:0", "cuda:1"]  # N jobs on N GPUs: one each
    assert place_jobs(3, [2, 0], 4) == ["cuda:2", "cuda:0", "cuda:2"]
    assert place_jobs(2, None, 0) == [None, None]  # no GPU: each run picks its own device
    assert parse_devices("0, 1") == [0, 1]
    with pytest.raises(UserError, match=r"--devices names GPU 1, but this machine has 1 CUDA device \(0\)$"):
        place_jobs(2, [0, 1], 1)
    with pytest.raises(UserError, match="--devices names GPU 0, but this machine has 0 CUDA devices$"):
        place_jobs(1, [0], 0)
    with pytest.raises(UserError, match="names a GPU twice"):
        place_jobs(2, [1, 1], 2)
    with pytest.raises(UserError, match="--devices must be comma-separated GPU indices"):
        parse_devices("gpu0")
