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

``lottery`` is a grid method too: lottery tickets (IMP, Frankle & Carbin 2019) at every
density, sharing levels (see `LotteryGrid`); its options (prune_fraction, rewind,
rewind_epoch, conv_only and imp/trainer keys) go in ``method_options: {lottery: ...}``, and
its runs appear as method ``imp`` in the store and the report.

A grid may instead (or also) list ``parts``: sub-grids run into the same store, each a
mapping of the keys above that replace the top level's for that part (a part's ``base`` is
merged over the top-level base), e.g. a dense-vs-sparse sweep plus a smaller
adversarial-training comparison in one preset.

A run's config is base, then its setup, then its scenario, then its method_options (later
ones win). Runs that already finished in the store (same config hash and seed) are skipped, and
unfinished ones resume from their last checkpoint, so an interrupted grid continues where
it stopped. ``jobs`` runs train in parallel as local processes, each with
``threads`` torch threads (default: CPU cores // jobs). On a machine with CUDA devices each
job holds one GPU (``devices``, default all of them, taken in turn: jobs = GPUs places one
job per GPU); a run whose config names its device (``device: cpu``) keeps it.
"""

from __future__ import annotations

import concurrent.futures as futures
import dataclasses
import multiprocessing
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import yaml

from sparsetrain.algorithms import METHODS, config_class
from sparsetrain.engine import TrainConfig, distributed
from sparsetrain.errors import DivergedError, RunHeldError, UserError
from sparsetrain.config import from_dict
from sparsetrain.experiments.pruning import (
    LotteryChain, LotteryConfig, TicketRun, lottery_structure, run_lottery_chain, ticket_levels,
)
from sparsetrain.experiments.spec import ExperimentConfig, RunSpec, allowed_keys, build_spec, method_keys
from sparsetrain.experiments.process import exit_with_parent, interrupt_on_terminate, parent_alive
from sparsetrain.experiments.store import ResultsStore

LOTTERY = "lottery"
"""The grid method that trains lottery-ticket chains (not a registered method: its runs are ``imp``)."""

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


@dataclass(frozen=True)
class LotteryGrid:
    """The lottery tickets of one setup, scenario and seed at every density of the grid: one
    `LotteryChain`, trained as one job (its levels are sequential). Level 0 is the grid's
    dense run when their configs match (same run id), and the chain then trains it."""

    chain: LotteryChain
    setup: str
    scenario: str

    @property
    def run_id(self) -> str:
        """The id of level 0 (the dense run)."""
        level0 = self.chain.level0()
        return ResultsStore.run_id(level0.config_hash, level0.experiment.seed)

    def describe(self, ticket: TicketRun | None = None) -> str:
        seed = self.chain.level0().experiment.seed
        setup = f"{self.setup}, " if self.setup else ""
        if ticket is None:
            what = f"lottery densities {', '.join(f'{d:g}' for d in self.chain.densities)}"
        elif ticket.level == 0:
            what = "lottery level 0 (dense)"
        else:
            what = f"lottery level {ticket.level} density {ticket.density:.4g}" + (
                "" if ticket.target is None else " (grid density)")
        return f"{setup}{self.scenario}, {what}, seed {seed}"


@dataclass(frozen=True)
class PlannedRun:
    """One run a grid trains: its id, a label, and whether the study report shows it
    (False for the intermediate lottery levels no grid density asked for)."""

    run_id: str
    label: str
    reported: bool


def plan_grid(runs: list[GridRun | LotteryGrid], out: str | os.PathLike[str]) -> list[PlannedRun]:
    """Every distinct run of ``runs`` (lottery chains unrolled, with their ids under ``out``)."""
    planned: dict[str, PlannedRun] = {}
    for cell in runs:
        if isinstance(cell, LotteryGrid):
            for ticket in cell.chain.runs(out):
                reported = ticket.level == 0 or ticket.target is not None
                planned.setdefault(ticket.run_id, PlannedRun(ticket.run_id, cell.describe(ticket), reported))
        else:
            planned.setdefault(cell.run_id, PlannedRun(cell.run_id, cell.describe(), True))
    return list(planned.values())


def list_presets() -> list[str]:
    """Names of the grids shipped with sparsetrain (``sparsetrain bench --preset NAME``)."""
    folder = resources.files("sparsetrain.experiments") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_summary(name: str) -> str:
    """One line about preset ``name``: the first sentence of its leading comment, else its axes."""
    text = (resources.files("sparsetrain.experiments") / "presets" / f"{name}.yaml").read_text("utf-8")
    comment = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.strip("# ").strip())
    words = " ".join(comment)
    if words.startswith("sparsetrain bench") and ": " in words:
        words = words.split(": ", 1)[1]
    sentence = words.split(". ")[0].split(", for data on disk")[0].split(" Needs ")[0].rstrip(".:,")
    if sentence:
        return sentence if len(sentence) <= 110 else sentence[:107].rsplit(" ", 1)[0] + " ..."
    grid = yaml.safe_load(text) or {}
    return ", ".join(f"{key}: {len(grid[key])}" for key in ("methods", "densities", "seeds") if grid.get(key))


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
    missing = [m for m in methods if m not in METHODS and m != LOTTERY]
    if missing:
        raise UserError(f"{where} names method {missing[0]!r}, which is not registered; "
                        f"registered methods: {', '.join(METHODS.names())} (and {LOTTERY!r})")
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
    any_method = shared.union(*(allowed_keys(m) for m in METHODS.names())) | method_keys()

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
                    if method == LOTTERY:
                        chain = lottery_chain(common, method_options.get(LOTTERY, {}), densities, seed,
                                              f"{where}, lottery in scenario {scenario!r}")
                        runs.append(LotteryGrid(chain, setup, scenario))
                        continue
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


def lottery_chain(common: dict[str, Any], options: dict[str, Any], densities: list[Any], seed: int,
                  where: str) -> LotteryChain:
    """The `LotteryChain` of grid method ``lottery`` for one setup/scenario/seed, validated:
    level 0 gets the dense keys of ``common`` and ``options``, the levels the imp keys; the
    LotteryConfig options (not ``levels``: the densities decide) come from ``options``."""
    lottery_keys = {f.name for f in dataclasses.fields(LotteryConfig)} - {"levels"}
    if "levels" in options:
        raise UserError(f"{where}: lottery levels come from the densities axis; remove 'levels'")
    if densities == [None]:
        raise UserError(f"{where}: lottery needs a densities axis")
    dense_keys, imp_keys = set(allowed_keys("dense")), set(allowed_keys("imp"))
    unknown = sorted(set(options) - lottery_keys - imp_keys)
    if unknown:
        raise UserError(f"{where}: unknown lottery option {unknown[0]!r}; allowed: "
                        f"{', '.join(sorted(lottery_keys))} and the keys of method imp")
    for key in ("density", "checkpoint", "rewind_to"):
        if key in options:
            raise UserError(f"{where}: {key!r} is set by the lottery chain, not in method_options")
    merged = {**common, **options}
    try:
        lottery_structure(merged)
        lottery = from_dict(LotteryConfig, {k: v for k, v in options.items() if k in lottery_keys},
                            where="lottery option")
        values = {k: v for k, v in merged.items() if k not in lottery_keys}
        chain = LotteryChain({**{k: v for k, v in values.items() if k in dense_keys}, "seed": seed},
                             {**{k: v for k, v in values.items() if k in imp_keys
                                 and k not in ("density", "checkpoint", "rewind_to")}, "seed": seed},
                             lottery, tuple(float(d) for d in densities))
        chain.level0()
        for d in chain.densities:
            ticket_levels(lottery.prune_fraction, d)
            build_spec({**chain.level_values, "method": "imp", "density": d}, where="lottery")
    except (UserError, TypeError, ValueError) as exc:
        raise UserError(f"{where}: {exc}") from None
    if lottery.rewind == "epoch" and lottery.rewind_epoch >= chain.level0().train.epochs:
        raise UserError(f"{where}: rewind_epoch must be below epochs ({chain.level0().train.epochs})")
    return chain


def _run_chain(chain: LotteryChain, out: str, force: bool) -> list[dict[str, Any]]:
    """Train one lottery chain (in this process); returns its store rows."""
    chain = dataclasses.replace(chain, dense_values=_placed(chain.dense_values, _DEVICE),
                                level_values=_placed(chain.level_values, _DEVICE))
    with _ends_with_parent(), ResultsStore(Path(out) / "results.db") as store:
        return run_lottery_chain(store, out, chain, force=force, log=lambda message: None)


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


PLACED = ("auto", "cuda")
"""Device values a job's GPU replaces (``device`` is not part of a run's identity)."""


def place_jobs(jobs: int, devices: Sequence[int] | None, gpus: int) -> list[str | None]:
    """The device each of ``jobs`` workers holds on a machine with ``gpus`` CUDA devices: GPUs
    ``devices`` (default: all) in turn, so N jobs on N GPUs hold one each; None for every
    worker when there is no GPU and none was asked for (each run then picks its own device)."""
    if devices is None:
        if gpus == 0:
            return [None] * jobs
        devices = list(range(gpus))
    if not devices:
        raise UserError("--devices must name at least one GPU index, e.g. 0,1")
    there = f"{gpus} CUDA device{'s' if gpus != 1 else ''}" + (f" (0-{gpus - 1})" if gpus > 1 else
                                                                 " (0)" if gpus == 1 else "")
    for index in devices:
        if not 0 <= index < gpus:
            raise UserError(f"--devices names GPU {index}, but this machine has {there}")
    if len(set(devices)) < len(devices):
        raise UserError(f"--devices names a GPU twice: {','.join(map(str, devices))}")
    return [f"cuda:{devices[k % len(devices)]}" for k in range(jobs)]


def parse_devices(text: str) -> list[int]:
    """``"0,1"`` -> [0, 1] (the --devices flag); a bad list is a UserError."""
    try:
        devices = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        devices = []
    if not devices:
        raise UserError(f"--devices must be comma-separated GPU indices, e.g. 0,1; got {text!r}")
    return devices


def _placed(values: dict[str, Any], device: str | None) -> dict[str, Any]:
    if device is None or str(values.get("device", "auto")) not in PLACED:
        return values
    return {**values, "device": device}


def _run_cell(values: dict[str, Any], out: str, force: bool) -> dict[str, Any]:
    """Train one grid cell (in this process, on its job's device); returns its store row."""
    from sparsetrain.experiments.runner import run

    spec = build_spec(_placed(values, _DEVICE), where="grid")
    with _ends_with_parent(), ResultsStore(Path(out) / "results.db") as store:
        try:
            return run(spec, root=out, store=store, resume=True, force=force, progress=False,
                       log=lambda message: None)
        except RunHeldError as exc:
            return {"held": str(exc)}


_PARENT: int | None = None  # in a worker process: the pid of the bench that started it
_DEVICE: str | None = None  # the GPU this process's runs train on (None: their own device)


def _init_worker(threads: int, parent: int, slots: Any) -> None:
    import torch

    global _PARENT, _DEVICE
    _PARENT = parent
    _DEVICE = slots.get(timeout=60)
    torch.set_num_threads(threads)
    interrupt_on_terminate()
    exit_with_parent(parent)


@contextmanager
def _ends_with_parent() -> Iterator[None]:
    """In a worker whose parent died (SIGTERM by `exit_with_parent`): once the runner has
    marked the run interrupted, end the process instead of waiting for more work."""
    try:
        yield
    except KeyboardInterrupt:
        if _PARENT is not None and not parent_alive(_PARENT):
            os._exit(128 + signal.SIGTERM)
        raise


def run_grid(runs: list[GridRun | LotteryGrid], out: str | os.PathLike[str], *, jobs: int = 1,
             threads: int | None = None, force: bool = False, devices: Sequence[int] | None = None,
             log: Callable[[str], None] = print) -> dict[str, list[str]]:
    """Train every run of ``runs`` not yet finished in ``out/results.db``.

    A lottery chain is one job (its levels run one after the other in that job); a grid
    dense run that is a chain's level 0 is left to the chain, so no two jobs train one run.
    Returns the run ids ``trained``, ``skipped`` (already finished), ``held`` (skipped: another
    process is training them) and ``failed``. A worker ends when this process dies. Each job
    holds one GPU of ``devices`` (see `place_jobs`).
    """
    global _DEVICE
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1; got {jobs}")
    if jobs > 1 and distributed.is_distributed():
        raise UserError(f"--jobs {jobs}: under torchrun the processes train each run together, one run at a "
                        "time; use --jobs 1 (or --jobs without torchrun, one run per process)")
    import torch

    slots = place_jobs(jobs, devices, torch.cuda.device_count())
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    out = str(out)
    tickets = {id(cell): [t.run_id for t in cell.chain.runs(out)] for cell in runs if isinstance(cell, LotteryGrid)}
    in_chains = {run_id for ids in tickets.values() for run_id in ids}
    with ResultsStore(Path(out) / "results.db") as store:
        todo, skipped, seen = [], [], set()
        for cell in runs:
            ids = tickets.get(id(cell), [cell.run_id])
            if isinstance(cell, GridRun) and cell.run_id in in_chains or all(i in seen for i in ids):
                continue
            fresh = [i for i in ids if i not in seen]
            seen.update(ids)
            done = [i for i in fresh if store.is_finished(i) and not force]
            skipped.extend(done)
            if len(done) < len(fresh):
                todo.append(cell)
    chains = sum(isinstance(cell, LotteryGrid) for cell in todo)
    log(f"bench: {len(seen)} runs, {len(skipped)} already finished, {len(seen) - len(skipped)} to train "
        + (f"as {len(todo)} task{'s' if len(todo) > 1 else ''}, {chains} "
           f"{'a lottery chain' if chains == 1 else 'lottery chains'} " if chains else "")
        + f"({jobs} job{'s' if jobs > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}"
        + (f" on {', '.join(dict.fromkeys(slots))})" if slots[0] else ")"))
    result: dict[str, list[str]] = {"trained": [], "skipped": skipped, "failed": [], "held": []}
    started = time.perf_counter()

    def report(k: int, cell: GridRun | LotteryGrid, row: Any, error: BaseException | None) -> None:
        elapsed = time.perf_counter() - started
        if isinstance(cell, LotteryGrid):
            ids = [i for i in tickets[id(cell)] if i not in skipped]
            with ResultsStore(Path(out) / "results.db") as store:
                finished = [i for i in ids if store.is_finished(i)]
            result["trained"].extend(i for i in finished if i not in result["trained"])
            result["failed"].extend(i for i in ids if i not in finished)
            what = (f"{len(finished)} runs trained" if error is None else
                    f"FAILED after {len(finished)} runs: {type(error).__name__}: {error}")
            log(f"[{k}/{len(todo)} {elapsed:6.0f}s] {cell.describe()}: {what}")
        elif error is None and "held" in (row or {}):
            result["held"].append(cell.run_id)
            log(f"[{k}/{len(todo)} {elapsed:6.0f}s] {cell.describe()}: skipped, {row['held']}")
        elif error is None:
            result["trained"].append(cell.run_id)
            acc = (row or {}).get("final", {}).get("test_acc")
            log(f"[{k}/{len(todo)} {elapsed:6.0f}s] {cell.describe()}: test acc {acc:.4f}")
        else:
            result["failed"].append(cell.run_id)
            what = "DIVERGED" if isinstance(error, DivergedError) else f"FAILED {type(error).__name__}:"
            log(f"[{k}/{len(todo)} {elapsed:6.0f}s] {cell.describe()}: {what} {error}")

    def job(cell: GridRun | LotteryGrid) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        if isinstance(cell, LotteryGrid):
            return _run_chain, (cell.chain, out, force)
        return _run_cell, (cell.values, out, force)

    if jobs == 1:
        previous = _torch_threads(threads)
        _DEVICE = slots[0]
        try:
            for k, cell in enumerate(todo, 1):
                try:
                    function, args = job(cell)
                    report(k, cell, function(*args), None)
                except Exception as exc:  # one broken run must not stop the grid
                    report(k, cell, None, exc)
        finally:
            _torch_threads(previous)
            _DEVICE = None
        return result

    env_before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)  # children read it before torch starts its pool
    try:
        context = multiprocessing.get_context("spawn")
        free = context.Queue()  # each worker takes one device slot as it starts
        for slot in slots:
            free.put(slot)
        pool = futures.ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker,
                                           initargs=(threads, os.getpid(), free))
        try:
            pending = {pool.submit(function, *args): cell for cell in todo for function, args in [job(cell)]}
            for k, future in enumerate(futures.as_completed(pending), 1):
                cell = pending[future]
                try:
                    report(k, cell, future.result(), None)
                except Exception as exc:
                    report(k, cell, None, exc)
        except BaseException:  # Ctrl-C, SIGTERM: drop the queued runs instead of waiting for them
            workers = list(getattr(pool, "_processes", {}).values())  # private, but no public way
            pool.shutdown(wait=False, cancel_futures=True)
            for worker in workers:  # SIGTERM: each marks its run interrupted and ends
                if worker.is_alive():
                    worker.terminate()
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
