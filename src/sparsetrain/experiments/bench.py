"""A benchmark grid: methods x densities x scenarios x seeds (x setups), run into one store.

A grid is a YAML mapping (a file, or a preset shipped in ``experiments/presets/``)::

    base:                       # flat config keys every run shares (experiment, trainer,
      epochs: 30                #   method options; a method option goes to the methods that have it)
      distribution: erk
    setups:                     # optional named bundles, e.g. dataset/model pairs (default: one, {})
      mnist1d: {dataset: mnist1d, model: cnn1d}
      digits: {dataset: digits, model: mlp, lr: 0.05}
    methods: [dense, static, set, rigl]
    method_options:             # optional per-method keys
      set: {update_interval: 25}
    densities: [0.05, 0.1, 0.2] # for every method with a density option; dense runs once
    scenarios:                  # optional named bundles of scenario keys (default: {clean: {}})
      clean: {}
      noise40: {label_noise: 0.4}
      half_data: {data_fraction: 0.5}
    seeds: [0, 1, 2]
    jobs: 2                     # optional default for --jobs

A grid may instead (or also) list ``parts``: sub-grids run into the same store, each a
mapping of the keys above that replace the top level's for that part (a part's ``base`` is
merged over the top-level base), e.g. a dense-vs-sparse sweep plus a smaller
adversarial-training comparison in one preset.

A run's config is base, then its setup, then its scenario, then its method_options (later
ones win). Runs that already finished in the store (same config hash and seed) are skipped, and
unfinished ones resume from their last checkpoint, so an interrupted grid continues where
it stopped. ``jobs`` runs train in parallel as local processes, each with
``threads`` torch threads (default: CPU cores // jobs).
"""

from __future__ import annotations

import concurrent.futures as futures
import dataclasses
import multiprocessing
import os
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from sparsetrain.algorithms import METHODS, config_class
from sparsetrain.engine import TrainConfig
from sparsetrain.errors import UserError
from sparsetrain.experiments.spec import ExperimentConfig, RunSpec, allowed_keys, build_spec
from sparsetrain.experiments.store import ResultsStore

GRID_KEYS = ("base", "setups", "methods", "method_options", "densities", "scenarios", "seeds", "jobs", "parts")


@dataclass(frozen=True)
class GridRun:
    """One cell of a grid: its flat config, validated spec and labels for the log."""

    values: dict[str, Any]
    spec: RunSpec
    setup: str
    scenario: str

    @property
    def run_id(self) -> str:
        return ResultsStore.run_id(self.spec.config_hash, self.spec.experiment.seed)

    def describe(self) -> str:
        density = getattr(self.spec.method, "density", None) if "density" in self.values else None
        dens = f" density {density:g}" if density is not None else ""
        setup = f"{self.setup}, " if self.setup else ""
        return f"{setup}{self.scenario}, {self.spec.experiment.method}{dens}, seed {self.spec.experiment.seed}"


def list_presets() -> list[str]:
    """Names of the grids shipped with sparsetrain (``sparsetrain bench --preset NAME``)."""
    folder = resources.files("sparsetrain.experiments") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_grid(path: str | os.PathLike[str] | None = None, preset: str | None = None) -> dict[str, Any]:
    """The grid mapping of a YAML file or of a shipped preset; a bad file is a UserError."""
    if preset is not None:
        if preset not in list_presets():
            raise UserError(f"unknown preset {preset!r}; choose one of: {', '.join(list_presets())}")
        text = (resources.files("sparsetrain.experiments") / "presets" / f"{preset}.yaml").read_text("utf-8")
        where = f"preset {preset!r}"
    else:
        file = Path(path)
        if not file.is_file():
            raise UserError(f"grid file {str(path)!r} does not exist")
        text, where = file.read_text(encoding="utf-8"), f"grid file {str(path)!r}"
    try:
        grid = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        raise UserError(f"{where} is not valid YAML") from None
    if not isinstance(grid, dict):
        raise UserError(f"{where} must hold a mapping with keys {', '.join(GRID_KEYS)}")
    unknown = sorted(set(grid) - set(GRID_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(GRID_KEYS)}")
    return grid


def _mapping(grid: Mapping[str, Any], key: str, where: str, default: Any) -> dict[str, Any]:
    value = grid.get(key, default)
    if value is None:
        value = default
    if not isinstance(value, dict):
        raise UserError(f"{where}: {key} must be a mapping of names to option mappings")
    for name, options in value.items():
        if options is not None and not isinstance(options, dict):
            raise UserError(f"{where}: {key} entry {name!r} must be a mapping of options")
    return {str(k): dict(v or {}) for k, v in value.items()}


def _list(grid: Mapping[str, Any], key: str, where: str, default: list[Any]) -> list[Any]:
    value = grid.get(key, default)
    if value is None:
        return list(default)
    if isinstance(value, (str, int, float)):
        value = [value]
    if not isinstance(value, list) or not value:
        raise UserError(f"{where}: {key} must be a non-empty list")
    return list(value)


def expand_grid(grid: Mapping[str, Any], where: str = "grid") -> list[GridRun]:
    """Every run of ``grid``, validated (unknown methods, keys and values are UserErrors).

    Order: seeds, then setups, scenarios, methods, densities, so that an interrupted grid
    has finished whole seeds first. Methods without a ``density`` option (dense) run once
    per setup, scenario and seed. With ``parts``, the runs of each part in order.
    """
    if grid.get("parts") is not None:
        return _expand_parts(grid, where)
    base = grid.get("base") or {}
    if not isinstance(base, dict):
        raise UserError(f"{where}: base must be a mapping of config keys")
    methods = [str(m) for m in _list(grid, "methods", where, ["dense"])]
    missing = [m for m in methods if m not in METHODS]
    if missing:
        raise UserError(f"{where} names method {missing[0]!r}, which is not registered; "
                        f"registered methods: {', '.join(METHODS.names())}")
    setups = _mapping(grid, "setups", where, {"": {}})
    scenarios = _mapping(grid, "scenarios", where, {"clean": {}})
    method_options = _mapping(grid, "method_options", where, {})
    for name in method_options:
        if name not in methods:
            raise UserError(f"{where}: method_options names {name!r}, which is not in methods")
    densities = _list(grid, "densities", where, [None])
    seeds = _list(grid, "seeds", where, [0])
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise UserError(f"{where}: seeds must be whole numbers; got {seed!r}")
    shared = {f.name for cls in (ExperimentConfig, TrainConfig) for f in dataclasses.fields(cls)}
    any_method = shared.union(*(allowed_keys(m) for m in METHODS.names()))

    runs: list[GridRun] = []
    for seed in seeds:
        for setup, setup_values in setups.items():
            for scenario, scenario_values in scenarios.items():
                common = {**base, **setup_values, **scenario_values}
                for key in ("method", "seed", "density"):
                    if key in common:
                        raise UserError(f"{where}: {key!r} is a grid axis; set it with "
                                        f"{'methods' if key == 'method' else key + 's'}, not in base/setups/scenarios")
                unknown = sorted(set(common) - any_method)
                if unknown:
                    raise UserError(f"{where}: unknown config key {unknown[0]!r}; "
                                    f"see `sparsetrain train --method METHOD --help` for the keys")
                for method in methods:
                    allowed = set(allowed_keys(method))
                    values = {k: v for k, v in common.items() if k in allowed}
                    values.update(method_options.get(method, {}))
                    values.update(method=method, seed=seed)
                    has_density = any(f.name == "density" for f in dataclasses.fields(config_class(method)))
                    for density in densities if has_density else [None]:
                        cell = dict(values)
                        if density is not None:
                            cell["density"] = density
                        try:
                            spec = build_spec(cell, where=where)
                        except UserError as exc:
                            raise UserError(f"{where}, {method} in scenario {scenario!r}: {exc}") from None
                        runs.append(GridRun(cell, spec, setup, scenario))
    return runs


def _expand_parts(grid: Mapping[str, Any], where: str) -> list[GridRun]:
    parts = grid["parts"]
    if not isinstance(parts, list) or not parts:
        raise UserError(f"{where}: parts must be a non-empty list of grid mappings")
    top = {k: v for k, v in grid.items() if k != "parts"}
    runs: list[GridRun] = []
    for i, part in enumerate(parts, 1):
        if not isinstance(part, dict):
            raise UserError(f"{where}: part {i} must be a mapping of grid keys")
        unknown = sorted(set(part) - set(GRID_KEYS) - {"parts"}) or (["parts"] if "parts" in part else [])
        if unknown:
            raise UserError(f"{where}: part {i} has key {unknown[0]!r}; allowed keys: "
                            f"{', '.join(k for k in GRID_KEYS if k not in ('parts', 'jobs'))}")
        bases = [top.get("base") or {}, part.get("base") or {}]
        if not all(isinstance(b, dict) for b in bases):
            raise UserError(f"{where}: base must be a mapping of config keys")
        sub = {**top, **part, "base": {**bases[0], **bases[1]}}
        runs.extend(expand_grid(sub, where=f"{where}, part {i}"))
    return runs


def _run_cell(values: dict[str, Any], out: str, force: bool) -> dict[str, Any]:
    """Train one grid cell (in this process); returns its store row."""
    from sparsetrain.experiments.runner import run

    spec = build_spec(values, where="grid")
    with ResultsStore(Path(out) / "results.db") as store:
        return run(spec, root=out, store=store, resume=True, force=force, progress=False,
                   log=lambda message: None)


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_grid(runs: list[GridRun], out: str | os.PathLike[str], *, jobs: int = 1,
             threads: int | None = None, force: bool = False,
             log: Callable[[str], None] = print) -> dict[str, list[str]]:
    """Train every run of ``runs`` not yet finished in ``out/results.db``.

    Returns the run ids ``trained``, ``skipped`` (already finished) and ``failed``.
    """
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1; got {jobs}")
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    out = str(out)
    with ResultsStore(Path(out) / "results.db") as store:
        todo, skipped, seen = [], [], set()
        for cell in runs:
            if cell.run_id in seen:
                continue
            seen.add(cell.run_id)
            if store.is_finished(cell.run_id) and not force:
                skipped.append(cell.run_id)
            else:
                todo.append(cell)
    log(f"bench: {len(seen)} runs, {len(skipped)} already finished, {len(todo)} to train "
        f"({jobs} job{'s' if jobs > 1 else ''} x {threads} thread{'s' if threads > 1 else ''})")
    result: dict[str, list[str]] = {"trained": [], "skipped": skipped, "failed": []}
    started = time.perf_counter()

    def report(k: int, cell: GridRun, row: dict[str, Any] | None, error: BaseException | None) -> None:
        elapsed = time.perf_counter() - started
        if error is None:
            result["trained"].append(cell.run_id)
            acc = (row or {}).get("final", {}).get("test_acc")
            log(f"[{k}/{len(todo)} {elapsed:6.0f}s] {cell.describe()}: test acc {acc:.4f}")
        else:
            result["failed"].append(cell.run_id)
            log(f"[{k}/{len(todo)} {elapsed:6.0f}s] {cell.describe()}: FAILED {type(error).__name__}: {error}")

    if jobs == 1:
        previous = _torch_threads(threads)
        try:
            for k, cell in enumerate(todo, 1):
                try:
                    report(k, cell, _run_cell(cell.values, out, force), None)
                except Exception as exc:  # one broken run must not stop the grid
                    report(k, cell, None, exc)
        finally:
            _torch_threads(previous)
        return result

    env_before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)  # children read it before torch starts its pool
    try:
        context = multiprocessing.get_context("spawn")
        pool = futures.ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker,
                                           initargs=(threads,))
        try:
            pending = {pool.submit(_run_cell, cell.values, out, force): cell for cell in todo}
            for k, future in enumerate(futures.as_completed(pending), 1):
                cell = pending[future]
                try:
                    report(k, cell, future.result(), None)
                except Exception as exc:
                    report(k, cell, None, exc)
        except BaseException:  # Ctrl-C: drop the queued runs instead of waiting for them
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    finally:
        if env_before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env_before
    return result


def _torch_threads(threads: int) -> int:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    return previous
