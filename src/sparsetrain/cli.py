"""The `sparsetrain` command: train, quickstart, list, report, show.

Flags of `train` are generated from the config dataclasses (the experiment's, the
Trainer's and the chosen method's); a YAML file given with --config supplies defaults
that flags override. Errors a user can cause print one sentence and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from sparsetrain import analysis
from sparsetrain.algorithms import METHODS
from sparsetrain.data import DATASETS
from sparsetrain.distributions import DISTRIBUTIONS
from sparsetrain.errors import UserError
from sparsetrain.experiments import ExperimentConfig, ResultsStore, build_spec, run
from sparsetrain.experiments.spec import config_fields
from sparsetrain.models import MODELS
from sparsetrain.reporting import comparison_table, format_table, plot_comparison, write_html_report
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
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--force", action="store_true", help="run again even if already finished")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_run_flags(parser, str(method))
    args = vars(parser.parse_args(argv))
    control = {k: args.pop(k) for k in ("config", "seeds", "out", "resume", "force", "no_progress")}
    values.update({k: v for k, v in args.items() if v is not None})
    values["method"] = method
    where = f"config file {control['config']!r}" if control["config"] else "config"
    seeds = _seeds(control["seeds"]) if control["seeds"] else (values.get("seed", 0),)
    specs = [build_spec({**values, "seed": seed}, where=where) for seed in seeds]
    out = Path(control["out"])
    with ResultsStore(out / "results.db") as store:
        runs = [run(spec, root=out, store=store, resume=control["resume"], force=control["force"],
                    progress=not control["no_progress"]) for spec in specs]
    print("\n" + comparison_table(runs))
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
    parser = argparse.ArgumentParser(prog="sparsetrain report", description="Table of finished runs.")
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder holding results.db")
    for key in ("method", "model", "dataset"):
        parser.add_argument(f"--{key}", help=f"only runs with this {key}")
    parser.add_argument("--html", help="also write an HTML report to this file")
    parser.add_argument("--plot", help="also write the comparison figure (PNG) to this file")
    args = parser.parse_args(argv)
    filters = {k: getattr(args, k) for k in ("method", "model", "dataset") if getattr(args, k)}
    with _open_store(args.out) as store:
        runs = store.runs(**filters)
    if not runs:
        raise UserError("no finished runs match; see `sparsetrain report` without filters")
    print(comparison_table(runs))
    figure = plot_comparison(runs, args.plot) if args.plot else None
    if args.html:
        print(f"report: {write_html_report(runs, args.html, title='sparsetrain report', figure=figure)}")
    return 0


def cmd_show(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="sparsetrain show", description="One run's layers and metrics.")
    parser.add_argument("run", help="run id (<hash>/seed_<n>) or a unique prefix of it")
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder holding results.db")
    args = parser.parse_args(argv)
    with _open_store(args.out) as store:
        matches = [r for r in store.runs(status=None) if r["run_id"].startswith(args.run)]
        if len(matches) != 1:
            found = "no run" if not matches else f"{len(matches)} runs"
            raise UserError(f"{found} matches {args.run!r}; give more of the run id (see `sparsetrain report`)")
        record = matches[0]
        epochs = store.epochs(record["run_id"])
    print(f"run {record['run_id']}  status {record['status']}  method {record['method']}  "
          f"model {record['model']}  dataset {record['dataset']}")
    if record.get("layers"):
        print(analysis.describe(record["layers"], (record.get("final") or {}).get("itop_rate")))
    columns = [(k, k) for k in ("epoch", "train_loss", "train_acc", "val_acc", "test_acc", "density", "itop_rate")]
    print(format_table(epochs, columns))
    return 0


def cmd_export(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="sparsetrain export",
                                     description="Write a run's model as a truly sparse inference model.")
    parser.add_argument("run", help="run id (<hash>/seed_<n>) or a unique prefix of it")
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder holding results.db")
    parser.add_argument("--to", help="destination folder (default: <run folder>/export)")
    args = parser.parse_args(argv)
    from sparsetrain.backends.export import export_run
    with _open_store(args.out) as store:
        matches = [r for r in store.runs(status=None) if r["run_id"].startswith(args.run)]
        if len(matches) != 1:
            found = "no run" if not matches else f"{len(matches)} runs"
            raise UserError(f"{found} matches {args.run!r}; give more of the run id (see `sparsetrain report`)")
        record = matches[0]
    folder = export_run(record, args.out, args.to)
    print(f"exported {record['run_id']} to {folder}")
    return 0


COMMANDS = {"train": cmd_train, "quickstart": cmd_quickstart, "list": cmd_list,
            "report": cmd_report, "show": cmd_show}
COMMANDS["export"] = cmd_export


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        usage = "usage: sparsetrain {" + ",".join(COMMANDS) + "} ...  (sparsetrain COMMAND --help)"
        if argv and argv[0] not in ("-h", "--help"):
            print(f"sparsetrain: error: unknown command {argv[0]!r}; choose one of: "
                  f"{', '.join(COMMANDS)}", file=sys.stderr)
            return 2
        print(usage)
        return 0 if argv else 2
    try:
        return COMMANDS[argv[0]](argv[1:])
    except UserError as exc:
        print(f"sparsetrain: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sparsetrain: interrupted; continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
