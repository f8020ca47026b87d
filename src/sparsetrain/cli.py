"""The `sparsetrain` command: train, quickstart, list, report, show, bench.

Flags of `train` are generated from the config dataclasses (the experiment's, the
Trainer's and the chosen method's); a YAML file given with --config supplies defaults
that flags override. Errors a user can cause print one sentence and exit with code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

import yaml

from sparsetrain import analysis
from sparsetrain.algorithms import METHODS
from sparsetrain.criteria import CRITERIA
from sparsetrain.data import DATASETS
from sparsetrain.distributions import DISTRIBUTIONS
from sparsetrain.errors import RunHeldError, SparsetrainWarning, UserError
from sparsetrain.experiments import ExperimentConfig, ResultsStore, build_spec, run
from sparsetrain.experiments.spec import config_fields
from sparsetrain.models import MODELS
from sparsetrain.reporting import comparison_table, format_table, plot_comparison
from sparsetrain.reporting import write_study_report
from sparsetrain.reporting.groups import not_finished, short_ids
from sparsetrain.scenarios import SCENARIOS
from sparsetrain.sparse import BACKENDS

DEFAULT_OUT = "runs"


def read_config_file(path: str) -> dict[str, Any]:
    """A flat YAML mapping from ``path``; a missing or malformed file is a UserError."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"config file {path!r} does not exist")
    try:
        values = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise UserError(f"config file {path!r} is not valid YAML{line}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserError(f"config file {path!r} must hold a mapping of keys to values")
    return values


def _flag_value(text: str) -> Any:
    """Flags are strings; mappings (e.g. --model-options '{channels: [16, 32, 64]}') are YAML."""
    if text.lstrip().startswith("{"):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            raise UserError(f"cannot read {text!r} as a mapping") from None
    return text


def _add_run_flags(parser: argparse.ArgumentParser, method: str) -> None:
    group = parser.add_argument_group(f"options (experiment, trainer and method {method!r})")
    for f in config_fields(method):
        if f.name == "method":
            continue
        choices = f.metadata.get("choices")
        help_text = f.metadata.get("help", "")
        if choices:
            help_text += f" ({', '.join(map(str, choices))})"
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=_flag_value,
                           default=argparse.SUPPRESS, metavar="V",
                           help=f"{help_text} [default: {f.default}]")


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise UserError(f"--seeds must be comma-separated whole numbers; got {text!r}") from None
    if not seeds:
        raise UserError("--seeds must name at least one seed")
    return seeds


def cmd_train(argv: Sequence[str]) -> int:
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--config")
    first.add_argument("--method")
    known, _ = first.parse_known_args(argv)
    values = read_config_file(known.config) if known.config else {}
    method = known.method or values.get("method", ExperimentConfig.method)
    METHODS.get(str(method))

    parser = argparse.ArgumentParser(prog="sparsetrain train", description="Train one configuration "
                                     "(one run per seed); results go to the store in --out.")
    parser.add_argument("--config", help="YAML file with a flat mapping of options")
    parser.add_argument("--method", help=f"sparsity method ({', '.join(METHODS.names())})")
    parser.add_argument("--seeds", help="comma-separated seeds, one run each (overrides --seed)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="run folders and results.db go here")
    parser.add_argument("--restart", action="store_true", help="start unfinished runs over instead of "
                        "continuing from their last checkpoint (the default)")
    parser.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)  # the default now
    parser.add_argument("--force", action="store_true", help="run again even if already finished")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_run_flags(parser, str(method))
    args = vars(parser.parse_args(argv))
    control = {k: args.pop(k) for k in ("config", "seeds", "out", "restart", "resume", "force", "no_progress")}
    if control["restart"] and control["resume"]:
        raise UserError("give --restart (start over) or --resume (the default), not both")
    values.update({k: v for k, v in args.items() if v is not None})
    values["method"] = method
    where = f"config file {control['config']!r}" if control["config"] else "config"
    seeds = _seeds(control["seeds"]) if control["seeds"] else (values.get("seed", 0),)
    specs = [build_spec({**values, "seed": seed}, where=where) for seed in seeds]
    out = Path(control["out"])
    runs = []
    with ResultsStore(out / "results.db") as store:
        for spec in specs:
            try:
                runs.append(run(spec, root=out, store=store, resume=not control["restart"],
                                force=control["force"], progress=not control["no_progress"]))
            except RunHeldError as exc:  # another process trains it: move on
                print(f"sparsetrain: {exc}", file=sys.stderr)
        among = _all_ids(store)
    if runs:
        print("\n" + comparison_table(runs, among=among))
    return 0


def cmd_quickstart(argv: Sequence[str]) -> int:
    from sparsetrain.quickstart import SETTINGS, run_quickstart

    parser = argparse.ArgumentParser(prog="sparsetrain quickstart", description="Dense, static-ERK, "
                                     "SET, RigL and MEST at 90%% sparsity on MNIST-1D with the 1D CNN.")
    parser.add_argument("--out", default=f"{DEFAULT_OUT}/quickstart", help="where runs and reports go")
    parser.add_argument("--epochs", type=int, default=SETTINGS["epochs"], help="epochs per run")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--force", action="store_true", help="retrain runs that already finished")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        raise UserError(f"--epochs must be at least 1; got {args.epochs}")
    run_quickstart(args.out, epochs=args.epochs, seeds=_seeds(args.seeds), force=args.force,
                   progress=not args.no_progress)
    return 0


REGISTRIES = {"methods": METHODS, "models": MODELS, "datasets": DATASETS,
              "distributions": DISTRIBUTIONS, "backends": BACKENDS}
REGISTRIES["criteria"] = CRITERIA


def cmd_list(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="sparsetrain list", description="What can be named.")
    parser.add_argument("what", nargs="?", choices=sorted(REGISTRIES), help="one kind (default: all)")
    args = parser.parse_args(argv)
    for kind in [args.what] if args.what else list(REGISTRIES):
        registry = REGISTRIES[kind]
        print(f"{kind}:")
        for name in registry.names():
            print(f"  {name:<14} {registry.info(name).get('help', '')}")
    return 0


def _open_store(out: str) -> ResultsStore:
    path = Path(out) / "results.db"
    if not path.is_file():
        raise UserError(f"no results store at {str(path)!r}; train something first or pass --out")
    return ResultsStore(path)


def cmd_report(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="sparsetrain report", description="Table of the stored runs: one row "
                                     "per configuration over its seeds, with the run ids `sparsetrain show` accepts; "
                                     "runs that did not finish are listed apart.")
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder holding results.db")
    for key in ("method", "model", "dataset"):
        parser.add_argument(f"--{key}", help=f"only runs with this {key}")
    parser.add_argument("--html", help="also write an HTML report to this file")
    parser.add_argument("--plot", help="also write the comparison figure (PNG) to this file")
    args = parser.parse_args(argv)
    filters = {k: getattr(args, k) for k in ("method", "model", "dataset") if getattr(args, k)}
    with _open_store(args.out) as store:
        runs = store.runs(status=None, **filters)
        among = _all_ids(store)
        histories = _histories(store, runs if args.html else [r for r in runs if _adversarial(r)])
    if not runs:
        raise UserError("no runs match; see `sparsetrain report` without filters")
    finished = [r for r in runs if r.get("status") == "finished"]
    if finished:
        print(comparison_table(finished, among=among))
        print("\nOne row per configuration (all but the seed); seeds: its distinct seeds; ± std only with "
              "2 or more seeds; Δ vs the dense run of the same setup, scenario and training settings.")
    else:
        print("no finished runs")
    others = not_finished(runs)
    if others:
        print("\nNot a result (never averaged into a row):")
        print(_unfinished_table(others, among))
    from sparsetrain.reporting.robustness import has_robustness, robustness_table

    if any(has_robustness(r) for r in finished):
        print("\nRobustness (mean ± std over seeds; mCE vs the dense run of the same training settings and seed):")
        print(robustness_table(finished))
    figure = plot_comparison(finished, args.plot) if args.plot else None
    if args.html:
        report = write_study_report(runs, args.html, title="sparsetrain report", figure=figure,
                                    histories=histories, among=among)
        print(f"report: {report}")
    return 0


def _unfinished_table(runs: Sequence[dict], among: Sequence[str]) -> str:
    """Runs that are no result: short id, status, method, density and the first line of why."""
    ids = short_ids([r["run_id"] for r in runs], among)
    rows = [{"run": i, "status": r.get("status"), "method": r.get("method"),
             "density": r.get("density"), "why": (r.get("error") or "").splitlines()[0][:100] if r.get("error") else ""}
            for i, r in zip(ids, runs)]
    return format_table(rows, [(k, k) for k in ("run", "status", "method", "density", "why")])


def _all_ids(store: ResultsStore) -> list[str]:
    """Every run id in ``store``: shortened ids must be unique among them to reach `show`."""
    return [r["run_id"] for r in store.runs(status=None)]


def _adversarial(run: dict) -> bool:
    return bool((run.get("config") or {}).get("adversarial_training"))


def _histories(store: ResultsStore, runs: Sequence[dict]) -> dict[str, list[dict]]:
    """Stored epochs of ``runs`` (their learning curves; robust accuracy per epoch when trained so)."""
    return {r["run_id"]: store.epochs(r["run_id"]) for r in runs}


def cmd_show(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="sparsetrain show", description="One run's layers and metrics.")
    parser.add_argument("run", help="run id (<hash>/seed_<n>) or a unique prefix of it")
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder holding results.db")
    args = parser.parse_args(argv)
    with _open_store(args.out) as store:
        record = store.find_run(args.run)
        epochs = store.epochs(record["run_id"])
    print(f"run {record['run_id']}  status {record['status']}  method {record['method']}  "
          f"model {record['model']}  dataset {record['dataset']}")
    if record.get("layers"):
        print(analysis.describe(record["layers"], (record.get("final") or {}).get("itop_rate")))
    columns = [(k, k) for k in ("epoch", "train_loss", "train_acc", "val_acc", "test_acc", "density", "itop_rate")]
    print(format_table(epochs, columns))
    return 0


def cmd_prune(argv: Sequence[str]) -> int:
    from sparsetrain.experiments.pruning import PRUNE_METHODS, find_run, prune_run

    parser = argparse.ArgumentParser(prog="sparsetrain prune", description="Prune a finished run's trained "
                                     "weights, fine-tune, and store the result as a new run linked to it.")
    parser.add_argument("run", help="run id (<hash>/seed_<n>) or a unique prefix of it")
    parser.add_argument("--method", required=True, choices=sorted(PRUNE_METHODS),
                        help="global/layer magnitude, LAMP, or layer-adaptive DP (Xu et al. 2023)")
    parser.add_argument("--density", required=True, type=float, help="fraction of the weights kept, in (0, 1]")
    parser.add_argument("--finetune-epochs", type=int, default=10, help="epochs of fine-tuning")
    parser.add_argument("--lr", type=float, help="fine-tuning learning rate [default: the run's]")
    parser.add_argument("--rounds", type=int, help="prune in this many rounds during fine-tuning [default: 1]")
    parser.add_argument("--distribution", help="--method layer: layer-wise allocation [default: uniform]")
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder holding results.db and the run folders")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("lr", args.lr), ("rounds", args.rounds),
                                   ("distribution", args.distribution)) if v is not None}
    with _open_store(args.out) as store:
        row = prune_run(store, args.out, args.run, method=args.method, density=args.density,
                        finetune_epochs=args.finetune_epochs, overrides=overrides,
                        progress=not args.no_progress)
        parent = find_run(store, args.run)
        among = _all_ids(store)
    print("\n" + comparison_table([parent, row], among=among))
    return 0


def cmd_lottery(argv: Sequence[str]) -> int:
    from sparsetrain.config import from_dict
    from sparsetrain.experiments.pruning import LotteryConfig, lottery_levels, pools_for_level, run_lottery
    from sparsetrain.reporting import level_table

    parser = argparse.ArgumentParser(prog="sparsetrain lottery", description="Lottery tickets: train dense, "
                                     "then iterative magnitude pruning with rewinding; prints accuracy per level.")
    parser.add_argument("--config", help="YAML file with a flat mapping of options")
    parser.add_argument("--pools", type=int, help="also run Lottery Pools on the ticket of this level")
    parser.add_argument("--pools-checkpoint", choices=("best", "last"), default="best",
                        help="weights of each ticket that Lottery Pools mixes: best validation epoch (as "
                        "luuyin/Lottery-pools) or last")
    parser.add_argument("--out", default=DEFAULT_OUT, help="run folders and results.db go here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    group = parser.add_argument_group("lottery options")
    for f in dataclasses.fields(LotteryConfig):
        choices = f.metadata.get("choices")
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=argparse.SUPPRESS, metavar="V",
                           help=f"{f.metadata['help']}{f' ({chr(44).join(choices)})' if choices else ''} "
                                f"[default: {f.default}]")
    _add_run_flags(parser, "dense")
    args = vars(parser.parse_args(argv))
    control = {k: args.pop(k) for k in ("config", "pools", "pools_checkpoint", "out", "no_progress")}
    lottery_keys = {f.name for f in dataclasses.fields(LotteryConfig)}
    lottery = from_dict(LotteryConfig, {k: args.pop(k) for k in list(args) if k in lottery_keys},
                        where="lottery option")
    values = read_config_file(control["config"]) if control["config"] else {}
    values.update(args)
    out = Path(control["out"])
    with ResultsStore(out / "results.db") as store:
        rows = run_lottery(store, out, values, lottery, progress=not control["no_progress"])
        experiment = store.links(run_id=rows[-1]["run_id"])[0]["experiment"]
        levels = lottery_levels(store, experiment)
        if control["pools"] is not None:
            pools = pools_for_level(store, out, levels, control["pools"], checkpoint=control["pools_checkpoint"])
            levels.append({**pools, "level": f"{control['pools']}+pools"})
    print(f"\n{experiment}\n" + level_table(levels))
    return 0


def cmd_soup(argv: Sequence[str]) -> int:
    from sparsetrain.experiments.pruning import soup_runs

    parser = argparse.ArgumentParser(prog="sparsetrain soup", description="Average finished runs that share "
                                     "one mask (e.g. fine-tunings of one pruned model) into a sparse model soup.")
    parser.add_argument("runs", nargs="+", help="run ids or unique prefixes (at least two)")
    parser.add_argument("--greedy", action="store_true", help="greedy soup by validation accuracy (default: uniform)")
    parser.add_argument("--no-bn-recalibration", action="store_true",
                        help="keep the averaged batch-norm statistics (default: re-estimate them on the "
                        "training data, as ZIB-IOL/SMS)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder holding results.db and the run folders")
    args = parser.parse_args(argv)
    with _open_store(args.out) as store:
        row = soup_runs(store, args.out, args.runs, greedy=args.greedy,
                        recalibrate_bn=not args.no_bn_recalibration)
        among = _all_ids(store)
    print("\n" + comparison_table([row], among=among))
    return 0


def _bench_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set and --scenario take KEY=VALUE; got {text!r}")
    try:
        return key.strip().replace("-", "_"), yaml.safe_load(value)
    except yaml.YAMLError:
        raise UserError(f"cannot read the value of {text!r} as YAML") from None


def cmd_bench(argv: Sequence[str]) -> int:
    from sparsetrain.experiments.bench import expand_grid, list_presets, plan_grid, read_grid, run_grid
    from sparsetrain.reporting import study_table, write_study_report

    parser = argparse.ArgumentParser(
        prog="sparsetrain bench", description="Train a grid of methods x densities x scenarios x seeds "
        "(from a YAML grid file, a preset, or flags) into the store in --out; finished runs are skipped, "
        "so an interrupted grid continues where it stopped. Grid format: see sparsetrain.experiments.bench.")
    parser.add_argument("grid", nargs="?", help="YAML grid file (keys: base, setups, methods, "
                        "method_options, densities, scenarios, seeds, jobs)")
    parser.add_argument("--preset", help=f"a shipped grid: {', '.join(list_presets())}")
    parser.add_argument("--methods", help="comma-separated methods (replaces the grid's)")
    parser.add_argument("--densities", help="comma-separated densities (replaces the grid's)")
    parser.add_argument("--seeds", help="comma-separated seeds (replaces the grid's)")
    parser.add_argument("--scenario", action="append", default=[], metavar="NAME=MAPPING",
                        help="a scenario, e.g. noise40='{label_noise: 0.4}'; repeatable (replaces the grid's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a base config key, e.g. epochs=5; repeatable")
    parser.add_argument("--data-dir", help="folder with the dataset files (e.g. CIFAR-10 python batches)")
    parser.add_argument("--out", help="run folders, results.db and report.html go here "
                        f"(default: {DEFAULT_OUT}/<preset> or {DEFAULT_OUT})")
    parser.add_argument("--jobs", type=int, help="runs trained in parallel as processes (default: the grid's, else 1)")
    parser.add_argument("--threads", type=int, help="torch threads per job (default: CPU cores // jobs)")
    parser.add_argument("--force", action="store_true", help="retrain runs that already finished")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    args = parser.parse_args(argv)
    if (args.grid is None) == (args.preset is None) and not args.methods:
        raise UserError("give a grid file, --preset NAME or at least --methods")
    if args.grid and args.preset:
        raise UserError("give either a grid file or --preset, not both")
    grid = read_grid(args.grid, args.preset) if (args.grid or args.preset) else {}
    where = f"preset {args.preset!r}" if args.preset else (f"grid file {args.grid!r}" if args.grid else "bench flags")
    if args.methods:
        grid["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.densities:
        try:
            grid["densities"] = [float(d) for d in args.densities.split(",") if d.strip()]
        except ValueError:
            raise UserError(f"--densities must be comma-separated numbers; got {args.densities!r}") from None
    if args.seeds:
        grid["seeds"] = list(_seeds(args.seeds))
    if args.scenario:
        grid["scenarios"] = dict(_bench_value(s) for s in args.scenario)
    base = dict(grid.get("base") or {})
    base.update(_bench_value(s) for s in args.set)
    if args.data_dir:
        base["data_dir"] = args.data_dir
    grid["base"] = base
    runs = expand_grid(grid, where=where)
    jobs = args.jobs if args.jobs is not None else grid.get("jobs", 1)
    if isinstance(jobs, bool) or not isinstance(jobs, int):
        raise UserError(f"{where}: jobs must be a whole number; got {jobs!r}")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be at least 1; got {args.threads}")
    out = Path(args.out or (f"{DEFAULT_OUT}/{args.preset}" if args.preset else DEFAULT_OUT))
    if args.dry_run:
        planned = plan_grid(runs, out)
        for entry in planned:
            print(f"{entry.run_id}  {entry.label}")
        print(f"{len(planned)} runs")
        return 0
    result = run_grid(runs, out, jobs=jobs, threads=args.threads, force=args.force)
    with ResultsStore(out / "results.db") as store:
        ids = {entry.run_id for entry in plan_grid(runs, out) if entry.reported}
        grid_runs = [r for r in store.runs(status=None) if r["run_id"] in ids]  # stopped ones listed apart
        histories = _histories(store, grid_runs)
        among = _all_ids(store)
    if any(r["status"] == "finished" for r in grid_runs):
        print("\n" + study_table(grid_runs, among=among))
        report = write_study_report(grid_runs, out / "report.html", title=f"sparsetrain bench: {where}",
                                    histories=histories, among=among)
        print(f"\nreport: {report}  (again: sparsetrain report --out {out} --html FILE)")
    if result["failed"]:
        print(f"sparsetrain: {len(result['failed'])} runs failed: {', '.join(result['failed'])}", file=sys.stderr)
        return 1
    return 0


REGISTRIES["scenarios"] = SCENARIOS
from sparsetrain.scenarios.corruptions import CORRUPTIONS  # noqa: E402

REGISTRIES["corruptions"] = CORRUPTIONS

def cmd_export(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="sparsetrain export",
                                     description="Write a run's model as a truly sparse inference model.")
    parser.add_argument("run", help="run id (<hash>/seed_<n>) or a unique prefix of it")
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder holding results.db")
    parser.add_argument("--to", help="destination folder (default: <run folder>/export)")
    args = parser.parse_args(argv)
    from sparsetrain.experiments.export import export_run
    with _open_store(args.out) as store:
        record = store.find_run(args.run)
    folder = export_run(record, args.out, args.to)
    print(f"exported {record['run_id']} to {folder}")
    return 0


COMMANDS = {"train": cmd_train, "quickstart": cmd_quickstart, "list": cmd_list,
            "report": cmd_report, "show": cmd_show, "prune": cmd_prune, "lottery": cmd_lottery,
            "soup": cmd_soup, "bench": cmd_bench, "export": cmd_export}


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Our own warnings print as one line on stderr; others keep Python's format."""
    if issubclass(category, SparsetrainWarning):
        print(f"sparsetrain: warning: {message}", file=sys.stderr)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.showwarning = _show_warning
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        usage = "usage: sparsetrain {" + ",".join(COMMANDS) + "} ...  (sparsetrain COMMAND --help)"
        if argv and argv[0] not in ("-h", "--help"):
            print(f"sparsetrain: error: unknown command {argv[0]!r}; choose one of: "
                  f"{', '.join(COMMANDS)}", file=sys.stderr)
            return 2
        print(usage)
        return 0 if argv else 2
    from sparsetrain.experiments.process import exit_code, interrupt_on_terminate

    previous = interrupt_on_terminate()  # SIGTERM (timeout, SLURM) stops a run as Ctrl-C does
    try:
        return COMMANDS[argv[0]](argv[1:])
    except UserError as exc:
        print(f"sparsetrain: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("sparsetrain: interrupted; a run it stopped is stored as interrupted, and the same "
              "command continues it from its last checkpoint", file=sys.stderr)
        return exit_code(exc)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
