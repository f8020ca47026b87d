"""The `sparsetrain` command: train, quickstart, list, report, show, bench.

Flags of `train` are generated from the config dataclasses (the experiment's, the
Trainer's and the chosen method's); a YAML file given with --config supplies defaults
that flags override. Errors a user can cause print one sentence and exit with code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import typing
import warnings
from pathlib import Path
from typing import Any, Sequence

from sparsetrain.errors import SparsetrainWarning, UserError

# Heavy modules (torch, the registries, reporting) are imported inside the commands, so
# that `sparsetrain --help` and `--version` answer at once.

DEFAULT_OUT = "runs"


def read_config_file(path: str) -> dict[str, Any]:
    """A flat YAML mapping from ``path``; a missing or malformed file is a UserError."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise UserError(f"config file {path!r} does not exist")
    try:
        values = yaml.safe_load(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"config file {path!r} is not UTF-8 text; save it as UTF-8 YAML") from None
    except yaml.constructor.ConstructorError as exc:
        raise UserError(f"config file {path!r} holds a tag YAML does not allow here "
                        f"({_yaml_tag(exc)}); write plain values") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise UserError(f"config file {path!r} is not valid YAML{line}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserError(f"config file {path!r} must hold a mapping of keys to values")
    return values


def _yaml_tag(exc: Exception) -> str:
    problem = str(getattr(exc, "problem", "") or "")
    return problem.split("tag ", 1)[-1].strip() if "tag" in problem else "unknown tag"


def _flag_value(text: str) -> Any:
    """Flags are strings; mappings (e.g. --model-options '{channels: [16, 32, 64]}') are YAML."""
    import yaml

    if text.lstrip().startswith("{"):
        try:
            return yaml.safe_load(text)
        except yaml.constructor.ConstructorError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {text!r}: the tag {_yaml_tag(exc)} is not allowed; "
                            "write a plain mapping such as '{widths: [256, 128]}'") from None
        except yaml.YAMLError:
            raise argparse.ArgumentTypeError(f"cannot read {text!r} as a mapping; write it as YAML, "
                            "e.g. '{widths: [256, 128]}'") from None
    return text


def _hints(classes: Sequence[type]) -> dict[str, Any]:
    """Field name -> resolved type, over ``classes`` (later classes win, as in a flat config)."""
    hints: dict[str, Any] = {}
    for cls in classes:
        hints.update(typing.get_type_hints(cls))
    return hints


def _plain_type(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType"))\
        and args else hint


def metavar(hint: Any, choices: Sequence[Any] | None) -> str:
    """What a flag's value looks like: ``layer|global``, ``N``, ``X``, ``LIST``, ``MAPPING``."""
    if choices:
        return "|".join(map(str, choices))
    hint = _plain_type(hint)
    if hint is int:
        return "N"
    if hint is float:
        return "X"
    if typing.get_origin(hint) is tuple:
        return "A,B,..."
    if hint is dict or typing.get_origin(hint) is dict:
        return "MAPPING"
    return "TEXT"


def shown(value: Any) -> str:
    """A default as a user would type it: ``linf``, ``0.5,0.75``, ``none``, ``on``/``off``."""
    if value is None or value == ():
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(shown(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def add_config_flags(group: Any, fields: Sequence[dataclasses.Field], hints: dict[str, Any]) -> None:
    """One flag per config field: ``--name VALUE``; booleans as ``--name`` / ``--no-name``."""
    for f in fields:
        flag = f"--{f.name.replace('_', '-')}"
        choices = f.metadata.get("choices")
        help_text = f.metadata.get("help", "").replace("%", "%%")
        if _plain_type(hints.get(f.name)) is bool:
            group.add_argument(flag, dest=f.name, nargs="?", const=True, type=_flag_value,
                               default=argparse.SUPPRESS, metavar="true|false",
                               help=f"{help_text} [default: {shown(f.default)}]")
            group.add_argument(f"--no-{f.name.replace('_', '-')}", dest=f.name, action="store_const",
                               const=False, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
            continue
        group.add_argument(flag, dest=f.name, type=_flag_value, default=argparse.SUPPRESS,
                           metavar=metavar(hints.get(f.name), choices),
                           help=f"{help_text} [default: {shown(f.default)}]")


def _hidden_flags(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    """Flags that are accepted but not listed: old spellings, options a method ignores."""
    for name in names:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=_flag_value,
                            default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _add_run_flags(parser: argparse.ArgumentParser, method: str, *, ignored: bool = False) -> None:
    """Flags of every key a config for ``method`` takes; with ``ignored``, also (unlisted) the
    old spellings and, for a method without sparsity, the other methods' options."""
    from sparsetrain.algorithms import config_class
    from sparsetrain.engine import TrainConfig
    from sparsetrain.experiments.spec import ExperimentConfig, config_fields, method_keys

    cls = config_class(method)
    fields = [f for f in config_fields(method) if f.name != "method"]
    group = parser.add_argument_group(f"options (experiment, trainer and method {method!r})")
    add_config_flags(group, fields, _hints((ExperimentConfig, TrainConfig, cls)))
    names = {f.name for f in fields}
    if "density" in names:
        group.add_argument("--sparsity", dest="sparsity", type=_flag_value, default=argparse.SUPPRESS,
                           metavar="X", help="fraction of the sparsified weights removed, in [0, 1): "
                           "another way to give density (= 1 - sparsity)")
    if ignored:
        hidden = set(getattr(cls, "renamed", {}))
        if "density" not in names:
            hidden |= method_keys() - names
        _hidden_flags(parser, sorted(hidden - names))


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise UserError(f"--seeds must be comma-separated whole numbers; got {text!r}") from None
    if not seeds:
        raise UserError("--seeds must name at least one seed")
    bad = [s for s in seeds if not 0 <= s < 2**32]
    if bad:
        raise UserError(f"--seeds must be whole numbers in [0, 2**32); got {bad[0]}")
    return seeds


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one sentence (no usage dump) and exit code 2."""

    def error(self, message: str) -> typing.NoReturn:
        if message.startswith("unrecognized arguments: "):
            from sparsetrain.config import closest

            given = message.split(": ", 1)[1].split()[0].split("=")[0]
            flags = [s for action in self._actions for s in action.option_strings
                     if action.help != argparse.SUPPRESS]
            message = (f"unknown option {given}{closest(given, flags)}" if given.startswith("-")
                       else f"unexpected argument {given!r}")
        if message.startswith("argument --") and message.endswith("expected one argument"):
            flag = message.split()[1].rstrip(":").split("/")[0]
            message += f" (a value starting with '-' is written {flag}=-1)"
        raise UserError(f"{message} (see {self.prog} --help)")


def cmd_train(argv: Sequence[str]) -> int:
    from sparsetrain.algorithms import METHODS
    from sparsetrain.errors import RunHeldError
    from sparsetrain.experiments import ExperimentConfig, ResultsStore, build_spec, run
    from sparsetrain.experiments.checks import check_before_training, check_out_folder
    from sparsetrain.reporting import comparison_table

    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--config")
    first.add_argument("--method")
    known, _ = first.parse_known_args(argv)
    values = read_config_file(known.config) if known.config else {}
    method = known.method or values.get("method", ExperimentConfig.method)
    METHODS.get(str(method))

    parser = Parser(prog="sparsetrain train", description="Train one configuration "
                    "(one run per seed); results go to the store in --out.")
    parser.add_argument("--config", metavar="FILE", help="YAML file with a flat mapping of options")
    parser.add_argument("--method", metavar="NAME", help=f"sparsity method ({', '.join(METHODS.names())}) "
                        f"[default: {ExperimentConfig.method}]")
    parser.add_argument("--seeds", metavar="A,B,...", help="comma-separated seeds, one run each (overrides --seed)")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="FOLDER",
                        help=f"run folders and results.db go here [default: {DEFAULT_OUT}]")
    parser.add_argument("--restart", action="store_true", help="start unfinished runs over instead of "
                        "continuing from their last checkpoint (the default)")
    parser.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)  # the default now
    parser.add_argument("--force", action="store_true", help="run again even if already finished")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_run_flags(parser, str(method), ignored=True)
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
    check_out_folder(out, "--out")
    for spec in specs:
        check_before_training(spec)
    runs = []
    with ResultsStore(out / "results.db") as store:
        for spec in specs:
            try:
                runs.append(run(spec, root=out, store=store, resume=not control["restart"],
                                force=control["force"], progress=not control["no_progress"]))
            except RunHeldError as exc:  # another process trains it: move on
                print(f"sparsetrain: {exc}", file=sys.stderr)
        runs = [row for row in runs if row is not None]  # under torchrun, ranks other than 0 get none
        among = _all_ids(store) if runs else []
    if runs:
        print("\n" + comparison_table(runs, among=among))
    return 0


def cmd_quickstart(argv: Sequence[str]) -> int:
    from sparsetrain.quickstart import SETTINGS, run_quickstart

    parser = Parser(prog="sparsetrain quickstart", description="Dense, static-ERK, SET, RigL and MEST at "
                    "90% sparsity on MNIST-1D with the 1D CNN.")
    parser.add_argument("--out", default=f"{DEFAULT_OUT}/quickstart", metavar="FOLDER",
                        help=f"where runs and reports go [default: {DEFAULT_OUT}/quickstart]")
    parser.add_argument("--epochs", type=int, default=SETTINGS["epochs"], metavar="N",
                        help=f"epochs per run [default: {SETTINGS['epochs']}]")
    parser.add_argument("--seeds", default="0", metavar="A,B,...", help="comma-separated seeds [default: 0]")
    parser.add_argument("--force", action="store_true", help="retrain runs that already finished")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not 1 <= args.epochs <= 100_000:
        raise UserError(f"--epochs must be in [1, 100000]; got {args.epochs}")
    seeds = _seeds(args.seeds)
    from sparsetrain.experiments.checks import check_out_folder

    check_out_folder(Path(args.out), "--out")
    run_quickstart(args.out, epochs=args.epochs, seeds=seeds, force=args.force,
                   progress=not args.no_progress)
    return 0


def registries() -> dict[str, Any]:
    """Every kind of named thing, by the name `sparsetrain list` shows."""
    from sparsetrain.algorithms import METHODS
    from sparsetrain.criteria import CRITERIA
    from sparsetrain.data import DATASETS
    from sparsetrain.distributions import DISTRIBUTIONS
    from sparsetrain.models import MODELS
    from sparsetrain.scenarios import SCENARIOS
    from sparsetrain.scenarios.corruptions import CORRUPTIONS
    from sparsetrain.sparse import BACKENDS

    return {"methods": METHODS, "models": MODELS, "datasets": DATASETS, "distributions": DISTRIBUTIONS,
            "backends": BACKENDS, "criteria": CRITERIA, "scenarios": SCENARIOS, "corruptions": CORRUPTIONS}


LIST_KINDS = ("methods", "models", "datasets", "distributions", "backends", "criteria", "scenarios",
              "corruptions", "presets")


def cmd_list(argv: Sequence[str]) -> int:
    parser = Parser(prog="sparsetrain list", description="What can be named.")
    parser.add_argument("what", nargs="?", choices=LIST_KINDS, metavar="KIND",
                        help=f"one kind: {', '.join(LIST_KINDS)} [default: all]")
    args = parser.parse_args(argv)
    kinds = [args.what] if args.what else list(LIST_KINDS)
    found = registries() if kinds != ["presets"] else {}
    for kind in kinds:
        print(f"{kind}:")
        if kind == "presets":
            from sparsetrain.experiments.bench import list_presets, preset_summary

            for name in list_presets():
                print(f"  {name:<20} {preset_summary(name)}")
            continue
        registry = found[kind]
        for name in registry.names():
            print(f"  {name:<14} {registry.info(name).get('help', '')}")
    return 0


def _open_store(out: str) -> Any:
    from sparsetrain.experiments import ResultsStore

    path = Path(out) / "results.db"
    if not path.is_file():
        raise UserError(f"no results store at {str(path)!r}; train something first or pass --out")
    return ResultsStore(path)


def _out_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="FOLDER",
                        help=f"folder holding results.db and the run folders [default: {DEFAULT_OUT}]")


def _run_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="run id (<hash>/seed_<n>), a unique prefix of it, "
                        "or the run folder that train prints (runs/<hash>/seed_<n>)")


def _new_file(path: str | None, flag: str) -> None:
    """A file we are about to write must not be a folder, and its folder must exist."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise UserError(f"{flag} {path!r} is a folder; give a file name, e.g. {str(target / 'report.html')!r}")
    if not target.parent.is_dir():
        raise UserError(f"{flag} {path!r}: the folder {str(target.parent)!r} does not exist")


def cmd_report(argv: Sequence[str]) -> int:
    from sparsetrain.reporting import comparison_table, plot_comparison, write_study_report

    parser = Parser(prog="sparsetrain report", description="Table of the stored runs: one row per configuration "
                    "over its seeds, with the run ids `sparsetrain show` accepts; runs that did not finish are "
                    "listed apart.")
    _out_flag(parser)
    for key in ("method", "model", "dataset"):
        parser.add_argument(f"--{key}", metavar="NAME", help=f"only runs with this {key}")
    parser.add_argument("--html", metavar="FILE", help="also write an HTML report to this file")
    parser.add_argument("--plot", metavar="FILE", help="also write the comparison figure (PNG) to this file")
    args = parser.parse_args(argv)
    _new_file(args.html, "--html")
    _new_file(args.plot, "--plot")
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
    from sparsetrain.reporting.groups import not_finished

    others = not_finished(runs)
    if others:
        print("\nNot a result (never averaged into a row):")
        print(_unfinished_table(others, among))
    from sparsetrain.reporting.robustness import has_robustness, robustness_table

    if any(has_robustness(r) for r in finished):
        print("\nRobustness (mean ± std over seeds; mCE vs the dense run of the same training settings and seed):")
        print(robustness_table(finished))
    from sparsetrain.reporting.channels import NOTE, channel_text

    channels = channel_text(finished, among)
    if channels:
        print(f"\nChannels per layer, runs whose masks remove channels. {NOTE}")
        print(channels)
    figure = plot_comparison(finished, args.plot) if args.plot else None
    if args.html:
        report = write_study_report(runs, args.html, title="sparsetrain report", figure=figure,
                                    histories=histories, among=among)
        print(f"report: {report}")
    return 0


def _unfinished_table(runs: Sequence[dict], among: Sequence[str]) -> str:
    """Runs that are no result: short id, status, method, density and the first line of why."""
    from sparsetrain.reporting import format_table
    from sparsetrain.reporting.groups import short_ids

    ids = short_ids([r["run_id"] for r in runs], among)
    rows = [{"run": i, "status": r.get("status"), "method": r.get("method"),
             "density": r.get("density"), "why": (r.get("error") or "").splitlines()[0][:100] if r.get("error") else ""}
            for i, r in zip(ids, runs)]
    return format_table(rows, [(k, k) for k in ("run", "status", "method", "density", "why")])


def _all_ids(store: Any) -> list[str]:
    """Every run id in ``store``: shortened ids must be unique among them to reach `show`."""
    return [r["run_id"] for r in store.runs(status=None)]


def _adversarial(run: dict) -> bool:
    return bool((run.get("config") or {}).get("adversarial_training"))


def _histories(store: Any, runs: Sequence[dict]) -> dict[str, list[dict]]:
    """Stored epochs of ``runs`` (their learning curves; robust accuracy per epoch when trained so)."""
    return {r["run_id"]: store.epochs(r["run_id"]) for r in runs}


def cmd_show(argv: Sequence[str]) -> int:
    from sparsetrain import analysis
    from sparsetrain.reporting import format_table

    parser = Parser(prog="sparsetrain show", description="One run's layers and metrics.")
    _run_arg(parser)
    _out_flag(parser)
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


def prune_method(name: str) -> str:
    """``prune-global`` (as `train --method` spells it) -> ``global``; the short old names
    still work and say once that they are deprecated."""
    from sparsetrain.config import note_once
    from sparsetrain.experiments.pruning import PRUNE_METHODS

    by_method = {v: k for k, v in PRUNE_METHODS.items()}
    if name in by_method:
        return by_method[name]
    if name in PRUNE_METHODS:
        note_once(f"prune --method {name} is now spelled {PRUNE_METHODS[name]} (as in train --method); "
                  "the old name still works but is deprecated")
        return name
    raise UserError(f"prune --method must be one of {', '.join(sorted(by_method))}; got {name!r}")


def _density(args: argparse.Namespace, what: str = "--density") -> float:
    """--density, or 1 - --sparsity; exactly one of them."""
    if (args.density is None) == (args.sparsity is None):
        raise UserError(f"give {what} or --sparsity (= 1 - density), exactly one")
    if args.sparsity is not None:
        if not 0 <= args.sparsity < 1:
            raise UserError(f"--sparsity must be in [0, 1); got {args.sparsity!r}")
        return round(1.0 - args.sparsity, 12)
    return args.density


def _number(kind: type) -> Any:
    """An argparse type: a finite int or float (names the flag in argparse's message)."""
    def parse(text: str) -> Any:
        import math

        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number; got {text!r}") from None
        if not math.isfinite(value) or abs(value) > 1e9:
            raise argparse.ArgumentTypeError(f"must be a finite number of at most 1e9 in size; got {text!r}")
        if kind is int and value != int(value):
            raise argparse.ArgumentTypeError(f"must be a whole number; got {text!r}")
        return kind(value)

    parse.__name__ = kind.__name__
    return parse


def cmd_prune(argv: Sequence[str]) -> int:
    from sparsetrain.experiments.pruning import find_run, prune_run
    from sparsetrain.reporting import comparison_table

    parser = Parser(prog="sparsetrain prune", description="Prune a finished run's trained "
                    "weights, fine-tune, and store the result as a new run linked to it.")
    _run_arg(parser)
    parser.add_argument("--method", required=True, metavar="NAME",
                        help="prune-global / prune-layer magnitude, prune-lamp (LAMP), or prune-dp "
                        "(layer-adaptive DP, Xu et al. 2023): the names train --method uses")
    parser.add_argument("--density", type=_number(float), metavar="X", help="fraction of the weights kept, in (0, 1]")
    parser.add_argument("--sparsity", type=_number(float), metavar="X", help="fraction removed (= 1 - density)")
    parser.add_argument("--finetune-epochs", type=_number(int), default=10, metavar="N",
                        help="epochs of fine-tuning [default: 10]")
    parser.add_argument("--lr", type=_number(float), metavar="X", help="fine-tuning learning rate [default: the run's]")
    parser.add_argument("--rounds", type=_number(int), metavar="N",
                        help="prune in this many rounds during fine-tuning [default: 1]")
    parser.add_argument("--distribution", metavar="NAME",
                        help="prune-layer: layer-wise allocation [default: uniform]")
    parser.add_argument("--structure", metavar="S", help="keep whole groups: unstructured, N:M (e.g. 2:4), "
                        "block:B or channel [default: the run's]")
    _out_flag(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    method = prune_method(args.method)
    density = _density(args)
    overrides = {k: v for k, v in (("lr", args.lr), ("rounds", args.rounds), ("distribution", args.distribution),
                                   ("structure", args.structure)) if v is not None}
    with _open_store(args.out) as store:
        row = prune_run(store, args.out, args.run, method=method, density=density,
                        finetune_epochs=args.finetune_epochs, overrides=overrides,
                        progress=not args.no_progress)
        parent = find_run(store, args.run)
        among = _all_ids(store)
    print("\n" + comparison_table([parent, row], among=among))
    return 0


def cmd_lottery(argv: Sequence[str]) -> int:
    from sparsetrain.config import from_dict
    from sparsetrain.experiments import ResultsStore
    from sparsetrain.experiments.checks import check_out_folder
    from sparsetrain.experiments.pruning import LotteryConfig, lottery_levels, pools_for_level, run_lottery
    from sparsetrain.reporting import level_table

    parser = Parser(prog="sparsetrain lottery", description="Lottery tickets: train dense, "
                    "then iterative magnitude pruning with rewinding; prints accuracy per level.")
    parser.add_argument("--config", metavar="FILE", help="YAML file with a flat mapping of options")
    parser.add_argument("--pools", type=_number(int), metavar="N",
                        help="also run Lottery Pools on the ticket of this level")
    parser.add_argument("--pools-checkpoint", choices=("best", "last"), default="best", metavar="best|last",
                        help="weights of each ticket that Lottery Pools mixes: best validation epoch (as "
                        "luuyin/Lottery-pools) or last [default: best]")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="FOLDER",
                        help=f"run folders and results.db go here [default: {DEFAULT_OUT}]")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    group = parser.add_argument_group("lottery options")
    add_config_flags(group, dataclasses.fields(LotteryConfig), _hints((LotteryConfig,)))
    group.add_argument("--structure", metavar="S", default=argparse.SUPPRESS, help="the levels prune whole groups: block:B or channel "
                       "(N:M fixes the density, so it has no levels) [default: unstructured]")
    _add_run_flags(parser, "dense")
    args = vars(parser.parse_args(argv))
    control = {k: args.pop(k) for k in ("config", "pools", "pools_checkpoint", "out", "no_progress")}
    lottery_keys = {f.name for f in dataclasses.fields(LotteryConfig)}
    lottery = from_dict(LotteryConfig, {k: args.pop(k) for k in list(args) if k in lottery_keys},
                        where="lottery option")
    values = read_config_file(control["config"]) if control["config"] else {}
    values.update(args)
    out = Path(control["out"])
    check_out_folder(out, "--out")
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
    from sparsetrain.reporting import comparison_table

    parser = Parser(prog="sparsetrain soup", description="Average finished runs that share "
                    "one mask (e.g. fine-tunings of one pruned model) into a sparse model soup.")
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run ids, unique prefixes or run folders (at least two)")
    parser.add_argument("--greedy", action="store_true", help="greedy soup by validation accuracy (default: uniform)")
    parser.add_argument("--no-bn-recalibration", action="store_true",
                        help="keep the averaged batch-norm statistics (default: re-estimate them on the "
                        "training data, as ZIB-IOL/SMS)")
    _out_flag(parser)
    args = parser.parse_args(argv)
    with _open_store(args.out) as store:
        row = soup_runs(store, args.out, args.runs, greedy=args.greedy,
                        recalibrate_bn=not args.no_bn_recalibration)
        among = _all_ids(store)
    print("\n" + comparison_table([row], among=among))
    return 0


def _bench_value(text: str) -> tuple[str, Any]:
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set and --scenario take KEY=VALUE; got {text!r}")
    try:
        return key.strip().replace("-", "_"), yaml.safe_load(value)
    except yaml.YAMLError:
        raise UserError(f"cannot read the value of {text!r} as YAML (python tags are not allowed)") from None


def cmd_bench(argv: Sequence[str]) -> int:
    from sparsetrain.experiments import ResultsStore
    from sparsetrain.experiments.bench import (expand_grid, list_presets, parse_devices, place_jobs, plan_grid,
                                               read_grid, run_grid)
    from sparsetrain.experiments.checks import check_grid, check_out_folder
    from sparsetrain.reporting import study_table, write_study_report

    parser = Parser(
        prog="sparsetrain bench", description="Train a grid of methods x densities x scenarios x seeds "
        "(from a YAML grid file, a preset, or flags) into the store in --out; finished runs are skipped, "
        "so an interrupted grid continues where it stopped. Grid format: see sparsetrain.experiments.bench.")
    parser.add_argument("grid", nargs="?", metavar="GRID.yaml", help="YAML grid file (keys: base, setups, "
                        "methods, method_options, densities, scenarios, seeds, jobs)")
    parser.add_argument("--preset", metavar="NAME", help=f"a shipped grid: {', '.join(list_presets())} "
                        "(see `sparsetrain list presets`)")
    parser.add_argument("--methods", metavar="A,B,...", help="comma-separated methods (replaces the grid's)")
    parser.add_argument("--densities", metavar="X,Y,...", help="comma-separated densities (replaces the grid's)")
    parser.add_argument("--seeds", metavar="A,B,...", help="comma-separated seeds (replaces the grid's)")
    parser.add_argument("--scenario", action="append", default=[], metavar="NAME=MAPPING",
                        help="a scenario, e.g. noise40='{label_noise: 0.4}'; repeatable (replaces the grid's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a base config key, e.g. epochs=5; repeatable")
    parser.add_argument("--data-dir", metavar="FOLDER", help="folder with the dataset files (e.g. CIFAR-10 python batches)")
    parser.add_argument("--out", metavar="FOLDER", help="run folders, results.db and report.html go here "
                        f"[default: {DEFAULT_OUT}/<preset> or {DEFAULT_OUT}]")
    parser.add_argument("--jobs", type=_number(int), metavar="N",
                        help="runs trained in parallel as processes [default: the grid's, else 1]")
    parser.add_argument("--threads", type=_number(int), metavar="N",
                        help="torch threads per job [default: CPU cores // jobs]")
    parser.add_argument("--devices", metavar="I,J,...", help="CUDA devices the jobs use, one job per GPU in "
                        "turn [default: every GPU; jobs default to their number]")
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
        grid["densities"] = [_density_item(d) for d in args.densities.split(",") if d.strip()]
    if args.seeds:
        grid["seeds"] = list(_seeds(args.seeds))
    if args.scenario:
        grid["scenarios"] = dict(_bench_value(s) for s in args.scenario)
    base = dict(grid.get("base") or {})
    base.update(_bench_value(s) for s in args.set)
    if args.data_dir:
        if not Path(args.data_dir).is_dir():
            raise UserError(f"--data-dir {args.data_dir!r} is not a folder")
        base["data_dir"] = args.data_dir
    grid["base"] = base
    runs = expand_grid(grid, where=where)
    devices = parse_devices(args.devices) if args.devices is not None else None
    jobs = args.jobs if args.jobs is not None else grid.get("jobs", len(devices) if devices else 1)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or not 1 <= jobs <= 256:
        raise UserError(f"{where}: jobs must be a whole number in [1, 256]; got {jobs!r}")
    if args.threads is not None and not 1 <= args.threads <= 1024:
        raise UserError(f"--threads must be in [1, 1024]; got {args.threads}")
    if devices is not None:
        import torch

        place_jobs(jobs, devices, torch.cuda.device_count())  # GPUs that are not there: one sentence, now
    out = Path(args.out or (f"{DEFAULT_OUT}/{args.preset}" if args.preset else DEFAULT_OUT))
    check_out_folder(out, "--out")
    check_grid(runs)
    if args.dry_run:
        planned = plan_grid(runs, out)
        for entry in planned:
            print(f"{entry.run_id}  {entry.label}")
        print(plural(len(planned), "run"))
        return 0
    result = run_grid(runs, out, jobs=jobs, threads=args.threads, force=args.force, devices=devices)
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
        print(f"sparsetrain: {plural(len(result['failed']), 'run')} failed: {', '.join(result['failed'])}",
              file=sys.stderr)
        return 1
    return 0


def _density_item(text: str) -> float:
    try:
        return _number(float)(text)
    except argparse.ArgumentTypeError as exc:
        raise UserError(f"--densities: each density {exc}") from None


def plural(count: int, noun: str) -> str:
    """``1 run``, ``3 runs``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def cmd_export(argv: Sequence[str]) -> int:
    parser = Parser(prog="sparsetrain export",
                    description="Write a run's model as a truly sparse inference model.")
    _run_arg(parser)
    _out_flag(parser)
    parser.add_argument("--dest", metavar="FOLDER", help="folder the exported model is written to "
                        "[default: <run folder>/export]")
    parser.add_argument("--to", dest="old_to", help=argparse.SUPPRESS)
    parser.add_argument("--shrink", action="store_true", help="write a smaller dense model instead: the dead "
                        "channels removed (st.shrink; a CNN's filters masked whole with their batch norm zero), "
                        "loaded back by st.load_shrunk [default folder: <run folder>/shrunk]")
    args = parser.parse_args(argv)
    flag = "--dest"
    if args.old_to is not None:
        if args.dest is not None:
            raise UserError("give --dest (or its old name --to), not both")
        flag, args.dest = "--to", args.old_to
    if args.dest is not None and Path(args.dest).exists() and not Path(args.dest).is_dir():
        raise UserError(f"{flag} {args.dest!r} is a file; give a folder to write the exported model into")
    if flag == "--to":
        from sparsetrain.config import note_once

        note_once("export --to is now called --dest; the old name still works but is deprecated")
    from sparsetrain.experiments.export import export_run

    with _open_store(args.out) as store:
        record = store.find_run(args.run)
    folder = export_run(record, args.out, args.dest, shrink=args.shrink)
    print(f"exported {record['run_id']} {'shrunk ' if args.shrink else ''}to {folder}")
    return 0


COMMANDS = {"train": cmd_train, "quickstart": cmd_quickstart, "list": cmd_list,
            "report": cmd_report, "show": cmd_show, "prune": cmd_prune, "lottery": cmd_lottery,
            "soup": cmd_soup, "bench": cmd_bench, "export": cmd_export}

SUMMARIES = {
    "train": "train one configuration (one run per seed) into the results store",
    "quickstart": "dense, static, SET, RigL and MEST at 90% sparsity on MNIST-1D, with a report",
    "list": "what can be named: methods, models, datasets, distributions, presets, ...",
    "report": "table (and HTML/PNG) of the finished runs in a store",
    "show": "one run's layers and metrics per epoch",
    "prune": "prune a finished run and fine-tune it",
    "lottery": "lottery tickets: iterative magnitude pruning with rewinding",
    "soup": "average runs that share one mask into a sparse model soup",
    "bench": "a grid of methods x densities x scenarios x seeds",
    "export": "write a run's model as a truly sparse inference model (--shrink: a smaller dense one)",
}


def top_help() -> str:
    lines = ["usage: sparsetrain COMMAND [options]   (sparsetrain COMMAND --help for its options)", "",
             "Sparse neural networks on PyTorch: train sparse from scratch, prune, export, evaluate.", "",
             "commands:"]
    lines += [f"  {name:<12} {SUMMARIES[name]}" for name in COMMANDS]
    lines += ["", "options:", "  -h, --help   this message", "  --version    the installed version"]
    return "\n".join(lines)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Our own warnings print as one line on stderr; others keep Python's format."""
    if issubclass(category, SparsetrainWarning):
        print(f"sparsetrain: warning: {message}", file=sys.stderr)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


def _run_distributed(argv: list[str]) -> int:
    """Under torchrun: rank 0 runs the command, writes every file and speaks; the other ranks
    train each run it starts alongside it (`sparsetrain.experiments.runner.follow`), print
    nothing and write nothing."""
    from sparsetrain.engine import distributed
    from sparsetrain.experiments.runner import follow

    distributed.init_from_env()
    if not distributed.is_main():
        sys.stdout = open(os.devnull, "w")
        warnings.simplefilter("ignore")
        follow()
        distributed.shutdown()
        sys.stderr.flush()
        os._exit(0)  # a follower writes nothing: skip the teardown, where gloo's threads can abort
    try:
        return COMMANDS[argv[0]](argv[1:])
    finally:
        try:
            distributed.broadcast_object(None)  # done: the followers return
        except RuntimeError:  # they are gone already (torchrun stops them when a rank fails)
            pass
        else:  # leave the group together: gloo aborts a rank whose peer is torn down mid-exchange
            distributed.shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _run(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:
        # the reader went away (`sparsetrain list | head`): stop quietly, as Python's docs advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _run(argv: list[str]) -> int:
    warnings.showwarning = _show_warning
    if not argv or argv[0] in ("-h", "--help"):
        print(top_help())
        return 0 if argv else 2
    if argv[0] in ("--version", "-V"):
        from sparsetrain import __version__

        print(f"sparsetrain {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        from sparsetrain.config import closest

        print(f"sparsetrain: error: unknown command {argv[0]!r}{closest(argv[0], COMMANDS)} "
              "(see sparsetrain --help)", file=sys.stderr)
        return 2
    from sparsetrain.experiments.process import exit_code, interrupt_on_terminate

    from sparsetrain.engine import distributed

    previous = interrupt_on_terminate()  # SIGTERM (timeout, SLURM) stops a run as Ctrl-C does
    try:
        if distributed.launched_by_torchrun():
            return _run_distributed(argv)
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
