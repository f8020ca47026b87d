"""Which stored runs are one experiment: the rows every table and figure of a report shows.

A row is one resolved configuration minus its seed (issue 14 §1): the run's stored config
without ``seed`` and without the keys that only say where or how fast a run happens
(`NOT_IDENTITY`, except a ``data_dir`` that names the user's own files), exactly what the
run hash covers (`RunSpec.config_hash`) bar the seed. "Seeds" are the distinct seeds of
that configuration. The dense baseline of a row is the dense row with the same training
settings (every experiment and trainer key: setup, scenario, epochs, lr ...); without one
the row has none and says so. Only finished runs form rows; the others are listed apart.
Everything here reads store run dicts only.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import types
from typing import Any, Mapping, Sequence

from sparsetrain.algorithms.base import SparsityConfig
from sparsetrain.engine.config import TrainConfig
from sparsetrain.experiments.spec import ExperimentConfig, identity_values
from sparsetrain.scenarios.apply import describe as describe_scenario

Run = Mapping[str, Any]

DENSE = "dense"
FINISHED = "finished"
LABEL_KEYS = ("method", "density")
"""Keys every table shows in their own columns, never in the hyperparameter diff."""
_ROW_FIELDS = ("method", "model", "dataset", "density")
_TRAINING_KEYS = frozenset(
    f.name for cls in (ExperimentConfig, TrainConfig) for f in dataclasses.fields(cls)
) - {"method", "seed"}
_COMMON_KEYS = _TRAINING_KEYS | {f.name for f in dataclasses.fields(SparsityConfig)}
"""Keys with the same meaning for every method (the experiment, the trainer and the options every
sparse method shares, e.g. ``distribution``); the other keys are a method's own options."""
# Fields of ``final`` (or of the run itself) averaged over the seeds of a row.
MEAN_FIELDS = ("active_weights", "total_weights", "flops", "itop_rate", "duration_s")


def is_finished(run: Run) -> bool:
    """Whether ``run`` is a finished result (hand-made rows without a status count when they
    have final metrics)."""
    return run.get("status", FINISHED) == FINISHED and bool(run.get("final"))


def identity(run: Run) -> dict[str, Any]:
    """The configuration that makes ``run`` the experiment it is: its stored config without
    the seed and without `NOT_IDENTITY` keys (a ``data_dir`` of the user's own files stays),
    completed by the run row's method, model, dataset and density."""
    config = dict(run.get("config") or {})
    keep_dir = config.get("data_dir") is not None and _path_in_identity(config)
    values = {k: v for k, v in identity_values(config).items() if k != "seed"}
    if keep_dir:
        values["data_dir"] = config["data_dir"]
    for key in _ROW_FIELDS:
        if values.get(key) is None and run.get(key) is not None:
            values[key] = run[key]
    if values.get("method") == DENSE:
        values.pop("density", None)
    return values


def training_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an `identity` a dense baseline must share: the experiment and trainer keys."""
    return {k: v for k, v in values.items() if k in _TRAINING_KEYS}


def setup_of(run: Run) -> str:
    return f"{run.get('dataset')}/{run.get('model')}"


def scenario_of(run: Run) -> str:
    """The scenario label of a run, from its stored config (defaults for keys it lacks)."""
    config = run.get("config") or {}
    defaults = {f.name: f.default for f in dataclasses.fields(ExperimentConfig)}
    values = {k: config.get(k, v) if config.get(k) is not None else v for k, v in defaults.items()}
    label, training = describe_scenario(types.SimpleNamespace(**values)), training_of(run)
    return label if not training else training if label == "clean" else f"{label}, {training}"


def training_of(run: Run) -> str:
    """"adversarial training" (+ ", WOT-block" / ", WOT-whole") for adversarially trained runs, else ""."""
    config = run.get("config") or {}
    if not config.get("adversarial_training"):
        return ""
    wot = config.get("wot") or "none"
    return "adversarial training" + ("" if wot == "none" else f", WOT-{wot}")


def experiment_groups(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One dict per experiment (finished runs of one `identity`), sorted by setup, scenario
    (clean first), method (dense first), density and the remaining configuration.

    Each has ``setup``, ``scenario``, ``method``, ``density`` (None for dense), ``config``
    (the identity), ``runs`` (one per distinct seed, the latest started), ``seeds``,
    ``n_seeds``, ``run_ids``, ``test_acc_mean``, ``test_acc_std`` (sample std; None below two
    seeds), the seed mean of each of `MEAN_FIELDS`, ``layers`` (mean per-layer density),
    ``dense`` (the baseline row or None), ``dense_acc_mean``/``dense_acc_std`` and ``delta``
    (mean minus the baseline's; None without one, 0 for a dense row).
    """
    members: dict[str, dict[Any, Run]] = {}
    configs: dict[str, dict[str, Any]] = {}
    for run in sorted((r for r in runs if is_finished(r)), key=lambda r: r.get("started_at") or 0):
        values = identity(run)
        key = _canonical(values)
        configs[key] = values
        members.setdefault(key, {})[run.get("seed")] = run  # a later run of the same seed wins
    rows = [_row(configs[key], list(by_seed.values())) for key, by_seed in members.items()]
    dense = {_canonical(training_settings(r["config"])): r for r in rows if r["method"] == DENSE}
    for row in rows:
        base = dense.get(_canonical(training_settings(row["config"])))
        row["dense"] = base
        row["dense_acc_mean"] = base["test_acc_mean"] if base else None
        row["dense_acc_std"] = base["test_acc_std"] if base else None
        row["delta"] = None if base is None or row["test_acc_mean"] is None or base["test_acc_mean"] is None \
            else row["test_acc_mean"] - base["test_acc_mean"]
    rows.sort(key=lambda r: (r["setup"], r["scenario"] != "clean", r["scenario"], r["method"] != DENSE,
                             r["method"], -1.0 if r["density"] is None else float(r["density"]),
                             _canonical(r["config"])))
    return rows


def diff_keys(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Configuration keys that tell rows apart beyond setup, scenario, method and density.
    Within one setup and scenario, a key counts when two rows of the same method hold it with
    different values, or one of them lacks it (a run stored before the option existed); across
    methods only for keys every method means the same by (training settings such as ``epochs``,
    and the options of every sparse method such as ``distribution``) when every sparse row holds
    them, so a method's own options (RigL's ``update_interval`` and ``anneal`` beside MEST's) do
    not read as a difference between two experiments, even where every method has them."""
    keys: set[str] = set()
    panels: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        panels.setdefault((row["setup"], row["scenario"]), []).append(row)
    for panel in panels.values():
        sparse = [row for row in panel if row["method"] != DENSE] or panel
        shared = set.intersection(*(set(row["config"]) for row in sparse)) & _COMMON_KEYS
        for row in panel:
            for key, value in row["config"].items():
                if key in LABEL_KEYS or key in keys:
                    continue
                for other in panel:
                    if key not in other["config"]:
                        differs = other["method"] == row["method"]
                    else:
                        differs = _canonical(other["config"][key]) != _canonical(value) and (
                            other["method"] == row["method"] or key in shared)
                    if differs:
                        keys.add(key)
                        break
    return sorted(keys)


def format_setting(value: Any) -> str:
    """A configuration value as a short table cell (YAML-like flow style for lists and mappings)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_setting(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {format_setting(v)}" for k, v in value.items()) + "}"
    return str(value)


def row_label(row: Mapping[str, Any], keys: Sequence[str] = (), *, density: bool = True) -> str:
    """``method density`` plus ``key=value`` of ``keys`` the row holds, e.g. ``rigl 0.1, epochs=30``."""
    text = str(row["method"])
    if density and row["density"] is not None:
        text += f" {row['density']:.3g}"
    extra = [f"{k}={format_setting(row['config'][k])}" for k in keys if k in row["config"]]
    return ", ".join([text, *extra])


def not_finished(runs: Sequence[Run]) -> list[Run]:
    """Runs that are no result (running, failed, diverged, interrupted ...), oldest first."""
    return [r for r in runs if not is_finished(r)]


def short_ids(run_ids: Sequence[str], among: Sequence[str], minimum: int = 8) -> list[str]:
    """The shortest prefixes (at least ``minimum`` characters) of ``run_ids`` that match no
    other id of ``among``: what `sparsetrain show` accepts."""
    others = sorted(set(among) | set(run_ids))
    out = []
    for run_id in run_ids:
        length = min(minimum, len(run_id))
        while length < len(run_id) and sum(o.startswith(run_id[:length]) for o in others) > 1:
            length += 1
        out.append(run_id[:length])
    return out


def _row(values: dict[str, Any], members: list[Run]) -> dict[str, Any]:
    members.sort(key=lambda r: (r.get("seed") is None, r.get("seed") or 0))
    first = members[0]
    accs = [float(a) for a in (_lookup(r, "test_acc") for r in members) if a is not None]
    row: dict[str, Any] = {
        "setup": setup_of(first), "scenario": scenario_of(first), "method": str(first.get("method")),
        "density": None if first.get("method") == DENSE or first.get("density") is None
        else float(first["density"]),
        "config": values, "runs": members, "seeds": [r.get("seed") for r in members],
        "n_seeds": len(members), "run_ids": [str(r.get("run_id")) for r in members],
        "test_acc_mean": statistics.fmean(accs) if accs else None,
        "test_acc_std": statistics.stdev(accs) if len(accs) > 1 else None,
        "layers": _mean_layers(members),
    }
    for field in MEAN_FIELDS:
        found = [float(v) for v in (_lookup(r, field) for r in members) if v is not None]
        row[field] = statistics.fmean(found) if found else None
    return row


def _mean_layers(members: Sequence[Run]) -> list[dict[str, Any]]:
    tables = [t for t in (r.get("layers") or [] for r in members) if t]
    if not tables:
        return []
    length = min(len(t) for t in tables)
    return [{"name": str(tables[0][j].get("name", j)),
             "density": statistics.fmean(float(t[j]["density"]) for t in tables)} for j in range(length)]


def _lookup(run: Run, key: str) -> Any:
    # A field may live on the run row, in its final metrics, or only in its config.
    if run.get(key) is not None:
        return run[key]
    for part in ("final", "config"):
        section = run.get(part)
        if isinstance(section, Mapping) and section.get(key) is not None:
            return section[key]
    return None


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _path_in_identity(config: Mapping[str, Any]) -> bool:
    from sparsetrain.data import path_in_identity

    try:
        return path_in_identity(str(config.get("dataset")), config.get("dataset_options"))
    except Exception:  # a dataset this version no longer registers: keep the folder, to be safe
        return True
