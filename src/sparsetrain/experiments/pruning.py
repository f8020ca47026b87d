"""Runs derived from finished runs: prune + fine-tune, lottery-ticket levels, Lottery Pools.

Each derived run is an ordinary run of the store (its own config hash and run folder),
trained by `run`, and linked to the run it came from with `ResultsStore.link`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from sparsetrain import analysis
from sparsetrain.algorithms.averaging import greedy_soup, lottery_pools, neighbour_order, uniform_soup
from sparsetrain.algorithms.averaging import recalibrate_bn as recalibrate_bn_on
from sparsetrain.algorithms.after_training import read_weights
from sparsetrain.algorithms.base import selection_options
from sparsetrain.config import check_range, config_hash, option, validate_choices
from sparsetrain.data import DatasetSplits, TensorData, batches, in_memory, load
from sparsetrain.engine import Callback, TrainConfig
from sparsetrain.errors import UserError
from sparsetrain.experiments.rundir import RunDir
from sparsetrain.experiments.runner import run
from sparsetrain.experiments.spec import ExperimentConfig, build_spec, data_identity, identity_values
from sparsetrain.experiments.store import ResultsStore
from sparsetrain.models import create as create_model
from sparsetrain.sparse import SPARSIFIABLE_LAYERS, attach, select_weights
from sparsetrain.sparse.structures import NM, parse_structure

PRUNE_METHODS = {"global": "prune-global", "layer": "prune-layer", "lamp": "prune-lamp", "dp": "prune-dp"}
"""`sparsetrain prune --method` names -> registered methods."""

SELECTION_KEYS = ("dense_first", "dense_last", "include", "exclude", "backend", "structure")
"""Keys of a sparse parent's config that a derived run keeps (which weights are sparse, and
their structure: a channel-pruned run is pruned further in whole channels unless told otherwise)."""


def find_run(store: ResultsStore, prefix: str, *, finished: bool = True) -> dict[str, Any]:
    """The one run whose id starts with ``prefix`` (as `sparsetrain show` accepts), finished by default."""
    return store.find_run(prefix, finished=finished)


def run_dir_of(root: str | Path, record: dict[str, Any]) -> RunDir:
    return RunDir(root, record["config_hash"], record["seed"])


def base_values(record: dict[str, Any]) -> dict[str, Any]:
    """The parent's experiment and trainer keys, and which weights it sparsified."""
    keep = {f.name for cls in (ExperimentConfig, TrainConfig) for f in dataclasses.fields(cls)}
    keep |= set(SELECTION_KEYS)
    return {k: v for k, v in (record.get("config") or {}).items() if k in keep}


def prune_run(store: ResultsStore, root: str | Path, parent: str, *, method: str, density: float,
              finetune_epochs: int, overrides: dict[str, Any] | None = None, progress: bool = True,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Prune the finished run ``parent`` (id or prefix) with ``method`` (global/layer/lamp/dp)
    to ``density``, fine-tune it ``finetune_epochs`` epochs, and store it linked to the parent."""
    if method not in PRUNE_METHODS:
        raise UserError(f"--method must be one of {', '.join(PRUNE_METHODS)}; got {method!r}")
    check_range("finetune_epochs", finetune_epochs, 1)
    record = find_run(store, parent)
    checkpoint = run_dir_of(root, record).last_checkpoint
    if not checkpoint.is_file():
        raise UserError(f"run {record['run_id']} has no checkpoint at {str(checkpoint)!r}")
    values = {**base_values(record), **(overrides or {}), "method": PRUNE_METHODS[method],
              "density": density, "epochs": finetune_epochs, "checkpoint": str(checkpoint.resolve())}
    if values.get("warmup_epochs", 0) > finetune_epochs:  # a long warm-up does not fit a short fine-tune
        values["warmup_epochs"] = 0.0
    row = run(build_spec(values, where="prune"), root=root, store=store, progress=progress, log=log)
    store.link(row["run_id"], parent_run=record["run_id"])
    return row


# --- lottery tickets ---------------------------------------------------------------------
@dataclass(frozen=True)
class LotteryConfig:
    """Iterative magnitude pruning (Frankle & Carbin 2019) with rewinding."""

    levels: int = option(5, "pruning levels after the dense level 0")
    prune_fraction: float = option(0.2, "fraction of the remaining weights pruned per level, in (0, 1)")
    rewind: str = option("init", "where each level restarts: init (Frankle & Carbin 2019), epoch (weights of "
                         "rewind_epoch, Frankle et al. 2020) or lr (trained weights, full schedule; Renda et al. 2020)",
                         choices=("init", "epoch", "lr"))
    rewind_epoch: int = option(1, "rewind=epoch: the epoch whose weights each level restarts from; "
                               "levels then train from that epoch on, continuing level 0's learning-rate "
                               "schedule and batch order (open_lth)")
    conv_only: bool = option(False, "prune only convolution weights (Linear layers stay dense)")

    def __post_init__(self) -> None:
        validate_choices(self)
        check_range("levels", self.levels, 1)
        check_range("prune_fraction", self.prune_fraction, 0, 1, low_open=True, high_open=True)
        check_range("rewind_epoch", self.rewind_epoch, 1)

    def density(self, level: int) -> float:
        """Density of level ``level``: (1 - prune_fraction) ** level."""
        return (1 - self.prune_fraction) ** level


class SaveWeightsAt(Callback):
    """Saves the model's state_dict to ``path`` at the end of epoch ``epoch`` (the rewind point)."""

    def __init__(self, epoch: int, path: Path) -> None:
        self.epoch, self.path = epoch, path

    def on_epoch_end(self, trainer: Any) -> None:
        if trainer.epoch == self.epoch:
            from sparsetrain.atomic import atomic_torch_save
            atomic_torch_save({k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}, self.path)


def rewind_start(lottery: LotteryConfig) -> dict[str, Any]:
    """Config keys of a level: rewound to epoch k, it trains epochs k..E-1 of level 0's schedule
    (open_lth ``training/train.py``: the lr schedule is stepped k iterations, then continues)."""
    return {"start_epoch": lottery.rewind_epoch} if lottery.rewind == "epoch" else {}


BEST_WEIGHTS = "weights_best_val.pt"
"""In a lottery level's run folder: its weights at the epoch of best validation accuracy."""


class SaveBestWeights(Callback):
    """Saves the model's state_dict to ``path`` whenever validation accuracy beats every
    earlier epoch (the ``model_SA_best`` checkpoint that Lottery Pools reads in
    luuyin/Lottery-pools, written by its ``main_imp.py`` when ``val acc > best``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_eval(self, trainer: Any) -> None:
        accuracies = [h.get("val_acc", float("nan")) for h in trainer.history]
        if not accuracies or not math.isfinite(accuracies[-1]):
            return
        earlier = [a for a in accuracies[:-1] if math.isfinite(a)]
        if not earlier or accuracies[-1] > max(earlier) or not self.path.is_file():
            from sparsetrain.atomic import atomic_torch_save
            atomic_torch_save({k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}, self.path)


def conv_weight_names(model: nn.Module) -> tuple[str, ...]:
    return tuple(f"{name}.weight" for name, m in model.named_modules()
                 if isinstance(m, SPARSIFIABLE_LAYERS) and not isinstance(m, nn.Linear))


def lottery_structure(values: dict[str, Any]) -> dict[str, Any]:
    """``{"structure": spec}`` for the IMP levels of a lottery (nothing when unstructured), or a
    UserError for N:M, whose fixed density N/M no level of density (1 - f) ** k can hold."""
    if values.get("structure") is None:
        return {}
    structure = parse_structure(values["structure"])
    if isinstance(structure, NM):
        raise UserError(f"lottery: structure {structure.spec} fixes every layer's density at {structure.n}/"
                        f"{structure.m}, so it cannot hold the levels' densities (1 - prune_fraction) ** level; "
                        "use block:B or channel")
    return {} if structure.unstructured else {"structure": structure.spec}


def run_lottery(store: ResultsStore, root: str | Path, values: dict[str, Any], lottery: LotteryConfig, *,
                progress: bool = True, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train level 0 dense, then ``lottery.levels`` IMP levels; each level is a run linked to
    the previous one and to one experiment id. Returns the store rows, level 0 first. A
    ``structure`` in ``values`` applies to the IMP levels (level 0 is dense) and is part of
    the experiment id."""
    structure = lottery_structure(values)
    values = {k: v for k, v in values.items() if k not in ("method", "structure")}
    level0 = build_spec({**values, "method": "dense"}, where="lottery")
    experiment = "lottery/" + config_hash({**level0.resolved(), **dataclasses.asdict(lottery), **structure})
    epochs = level0.train.epochs
    if lottery.rewind == "epoch" and lottery.rewind_epoch >= epochs:
        raise UserError(f"rewind_epoch must be below epochs ({epochs}); got {lottery.rewind_epoch}")
    dir0 = RunDir(root, level0.config_hash, level0.experiment.seed)
    rewind_file = dir0.path / f"weights_epoch_{lottery.rewind_epoch}.pt"
    callbacks = [SaveWeightsAt(lottery.rewind_epoch, rewind_file)] if lottery.rewind == "epoch" else []
    callbacks.append(SaveBestWeights(dir0.path / BEST_WEIGHTS))
    force = lottery.rewind == "epoch" and not rewind_file.is_file()
    log(f"{experiment}: level 0 (dense)")
    rows = [run(level0, root=root, store=store, progress=progress, log=log, callbacks=callbacks, force=force)]
    store.link(rows[0]["run_id"], experiment=experiment, level=0)
    extra: dict[str, Any] = {}
    if lottery.conv_only:
        extra["include"] = conv_names_of(level0)
    rewind_to = {"init": "init", "epoch": str(rewind_file.resolve()), "lr": None}[lottery.rewind]
    resume_at = rewind_start(lottery)
    for level in range(1, lottery.levels + 1):
        previous = rows[-1]
        checkpoint = run_dir_of(root, previous).last_checkpoint.resolve()
        spec = build_spec({**values, **extra, **structure, "method": "imp", "density": lottery.density(level),
                           "checkpoint": str(checkpoint), "rewind_to": rewind_to, **resume_at},
                          where="lottery")
        log(f"{experiment}: level {level} (density {lottery.density(level):.4g})")
        best = SaveBestWeights(RunDir(root, spec.config_hash, spec.experiment.seed).path / BEST_WEIGHTS)
        rows.append(run(spec, root=root, store=store, progress=progress, log=log, callbacks=[best]))
        store.link(rows[-1]["run_id"], parent_run=previous["run_id"], experiment=experiment, level=level)
    return rows


# --- lottery tickets in a grid (`sparsetrain bench`, method "lottery") --------------------
EXACT = 1e-9
"""Relative tolerance under which a requested density is the standard level (1 - f) ** k."""


def ticket_levels(prune_fraction: float, density: float) -> tuple[int, bool]:
    """``(k, exact)``: the level that reaches ``density`` with IMP at ``prune_fraction`` per level,
    k = ceil(log density / log(1 - prune_fraction)). ``exact`` when (1 - f) ** k is ``density``
    (it is then the standard level k); otherwise level k is a branch pruned from the standard
    level k - 1 straight to ``density`` (its fraction 1 - density / (1 - f) ** (k - 1) < f)."""
    check_range("density", density, 0, 1, low_open=True, high_open=True)
    ratio = math.log(density) / math.log(1 - prune_fraction)
    k = max(1, math.ceil(ratio - EXACT))
    return k, math.isclose((1 - prune_fraction) ** k, density, rel_tol=EXACT)


@dataclass(frozen=True)
class TicketRun:
    """One run of a lottery chain: its level, density, the grid density it stands for
    (None: an intermediate level), config values (file paths included) and identity."""

    level: int
    density: float
    target: float | None
    values: dict[str, Any]
    config_hash: str
    seed: int
    parent: int | None  # index of the parent run in the chain's list

    @property
    def run_id(self) -> str:
        return ResultsStore.run_id(self.config_hash, self.seed)


@dataclass(frozen=True)
class LotteryChain:
    """Lottery tickets at several densities of one setup, scenario and seed, sharing levels.

    Level 0 trains ``dense_values`` dense; standard level k prunes level k - 1 by
    ``lottery.prune_fraction`` to (1 - f) ** k (the runs `run_lottery` trains). A density d
    that is no standard level is a branch: pruned from the standard level k - 1 with
    k = ceil(log d / log(1 - f)) straight to d, then rewound and trained like any level.
    Standard levels are shared by every density (0.2's are a prefix of 0.05's).
    """

    dense_values: dict[str, Any]
    level_values: dict[str, Any]
    lottery: LotteryConfig
    densities: tuple[float, ...]

    def level0(self) -> Any:
        return build_spec({**self.dense_values, "method": "dense"}, where="lottery")

    @property
    def experiment(self) -> str:
        """The experiment id linking the chain's standard levels (independent of the densities)."""
        options = {k: v for k, v in dataclasses.asdict(self.lottery).items() if k != "levels"}
        return "lottery/" + config_hash({**self.level0().resolved(), **self.level_values, **options})

    def runs(self, root: str | Path) -> list[TicketRun]:
        """Every run of the chain in training order (level 0, standard levels, branches),
        with the identities they will have under ``root`` (computed before any file exists)."""
        lottery, level0 = self.lottery, self.level0()
        seed, epochs = level0.experiment.seed, level0.train.epochs
        if lottery.rewind == "epoch" and lottery.rewind_epoch >= epochs:
            raise UserError(f"rewind_epoch must be below epochs ({epochs}); got {lottery.rewind_epoch}")
        plan = {d: ticket_levels(lottery.prune_fraction, d) for d in self.densities}
        top = max([k if exact else k - 1 for k, exact in plan.values()], default=0)
        exact = {k: d for d, (k, is_exact) in plan.items() if is_exact}
        runs = [TicketRun(0, 1.0, None, dict(self.dense_values, method="dense"), level0.config_hash, seed, None)]
        rewind_file = RunDir(root, level0.config_hash, seed).path / f"weights_epoch_{lottery.rewind_epoch}.pt"
        rewind_to = {"init": "init", "epoch": str(rewind_file.resolve()), "lr": None}[lottery.rewind]
        base = {**self.level_values, **self.include(level0), "method": "imp",
                **rewind_start(lottery)}

        def child(parent: int, level: int, density: float, target: float | None) -> TicketRun:
            checkpoint = str(RunDir(root, runs[parent].config_hash, seed).last_checkpoint.resolve())
            values = {**base, "density": density, "checkpoint": checkpoint, "rewind_to": rewind_to}
            return TicketRun(level, density, target, values, planned_hash(values, "checkpoint", "rewind_to"),
                             seed, parent)

        for level in range(1, top + 1):
            runs.append(child(level - 1, level, lottery.density(level), exact.get(level)))
        for d, (k, is_exact) in plan.items():
            if not is_exact:
                runs.append(child(k - 1, k, d, d))
        return runs

    def include(self, level0: Any) -> dict[str, Any]:
        """``{"include": conv weights}`` for conv_only (needs the model), else nothing."""
        if not self.lottery.conv_only:
            return {}
        return {"include": conv_names_of(level0)}


def conv_names_of(level0: Any) -> tuple[str, ...]:
    """The convolution weights of ``level0``'s model (a UserError when it has none)."""
    exp = level0.experiment
    data = load(exp.dataset, seed=exp.seed, val_fraction=exp.val_fraction, data_dir=exp.data_dir,
                **(exp.dataset_options or {}))
    model = create_model(exp.model, input_shape=data.input_shape, num_classes=data.num_classes,
                         **(exp.model_options or {}))
    names = conv_weight_names(model)
    if not names:
        raise UserError(f"conv_only: model {exp.model!r} has no convolution")
    return names


def planned_hash(values: dict[str, Any], *files: str) -> str:
    """The config hash ``values`` will have, before the files its keys ``files`` name exist
    (the spec is validated with those keys unset, then hashed as `RunSpec.config_hash` does)."""
    spec = build_spec({**values, **{k: None for k in files}}, where="lottery")
    resolved = {**spec.resolved(), **{k: values[k] for k in files}}
    identity = identity_values(resolved)
    identity.update(data_identity(spec.experiment))
    return config_hash(identity)


def run_lottery_chain(store: ResultsStore, root: str | Path, chain: LotteryChain, *, force: bool = False,
                      progress: bool = False, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train the runs of ``chain`` not yet finished (all with ``force``), in order; standard
    levels are linked to ``chain.experiment`` and their parent, a branch to its parent only.
    Returns the store rows in the order of `LotteryChain.runs`."""
    planned = chain.runs(root)
    experiment, lottery = chain.experiment, chain.lottery
    rewind_file = RunDir(root, planned[0].config_hash, planned[0].seed).path / f"weights_epoch_{lottery.rewind_epoch}.pt"
    rows: list[dict[str, Any]] = []
    for ticket in planned:
        again = force or (ticket.level == 0 and lottery.rewind == "epoch" and not rewind_file.is_file())
        if store.is_finished(ticket.run_id) and not again:
            rows.append(store.get_run(ticket.run_id))
        else:
            spec = build_spec(ticket.values, where="lottery")
            if spec.config_hash != ticket.config_hash:  # the planned identity must be the trained one
                raise RuntimeError(f"lottery level {ticket.level}: planned {ticket.config_hash}, got {spec.config_hash}")
            callbacks = [SaveWeightsAt(lottery.rewind_epoch, rewind_file)] if ticket.level == 0 and \
                lottery.rewind == "epoch" else []
            callbacks.append(SaveBestWeights(RunDir(root, ticket.config_hash, ticket.seed).path / BEST_WEIGHTS))
            log(f"{experiment}: level {ticket.level} (density {ticket.density:.4g})")
            rows.append(run(spec, root=root, store=store, progress=progress, log=log, callbacks=callbacks,
                            force=again))
        parent = None if ticket.parent is None else planned[ticket.parent].run_id
        branch = ticket.level > 0 and not math.isclose(ticket.density, lottery.density(ticket.level), rel_tol=EXACT)
        store.link(ticket.run_id, parent_run=parent, experiment=None if branch else experiment, level=ticket.level)
    return rows


def lottery_levels(store: ResultsStore, experiment: str) -> list[dict[str, Any]]:
    """The runs of a lottery experiment with their ``level``, in level order."""
    out = []
    for link in store.links(experiment=experiment):
        run_row = store.get_run(link["run_id"])
        if run_row is not None:
            out.append({**run_row, "level": link["level"]})
    return out


# --- Lottery Pools -------------------------------------------------------------------------
@torch.no_grad()
def accuracy(model: nn.Module, data: TensorData, device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy of ``model`` on ``data`` (eval mode)."""
    model.eval()
    correct = 0
    for x, y in batches(data, 1024, shuffle=False, device=device):
        correct += int((model(x).argmax(1) == y).sum())
    return correct / max(len(data), 1)


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


POOLS_CHECKPOINTS = ("best", "last")


def pools_for_level(store: ResultsStore, root: str | Path, levels: list[dict[str, Any]], level: int, *,
                    search_num: int = 3, checkpoint: str = "best", alphas: tuple[float, ...] | None = None,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Lottery Pools on ticket ``level`` of a lottery experiment (``levels`` from `lottery_levels`):
    interpolate with the ``search_num - 1`` nearest tickets (reference default search_num = 3),
    store the result as a run (method ``lottery-pools``) linked to the ticket, return its row.

    As the reference (luuyin/Lottery-pools ``CIFAR/Lottery_pools.py``, which reads each level's
    ``model_SA_best``), every ticket enters with its weights at its best-validation epoch
    (``checkpoint="best"``; ``"last"`` takes the final weights), and alpha runs over the README's
    11 values (`DEFAULT_ALPHAS`) unless ``alphas`` is given."""
    from sparsetrain.algorithms.averaging import DEFAULT_ALPHAS

    if checkpoint not in POOLS_CHECKPOINTS:
        raise UserError(f"checkpoint must be one of {', '.join(POOLS_CHECKPOINTS)}; got {checkpoint!r}")
    by_level = {r["level"]: r for r in levels}
    if level not in by_level or level == 0:
        raise UserError(f"level must be one of {', '.join(str(k) for k in sorted(by_level) if k)}; got {level}")
    ticket = by_level[level]
    config = ticket["config"]
    data, model, weights = _rebuild(ticket)
    if len(data.val) == 0:
        raise UserError("Lottery Pools needs a validation set; the ticket's run has val_fraction 0")
    ordered = sorted(by_level)
    neighbours = [ordered[i] for i in neighbour_order(ordered.index(level), len(ordered), search_num - 1)]
    own = model.state_dict()
    states = {}
    for k in (level, *neighbours):  # only the tickets that take part (level 0 may be a plain dense run)
        state = read_weights(_ticket_weights(root, by_level[k], checkpoint))
        states[k] = {key: state.get(key, own[key]) for key in own}  # level 0 (dense) has no masks: all ones
    train_batches = [x for x, _ in batches(data.train, 256, shuffle=False)]
    recalibrate = (lambda m: torch.optim.swa_utils.update_bn(train_batches, m)) if has_batch_norm(model) else None
    started = time.time()
    result = lottery_pools(model, weights, states[level], [states[k] for k in neighbours],
                           lambda m: accuracy(m, data.val), recalibrate,
                           alphas=DEFAULT_ALPHAS if alphas is None else tuple(alphas))
    final = {"val_acc": result.val_acc, "test_acc": accuracy(model, data.test), "ticket_val_acc": result.ticket_val_acc,
             "accepted": [[neighbours[i], a] for i, a in result.accepted]}
    layers = analysis.layer_table(model, data.input_shape, config.get("structure"))
    final.update(analysis.totals(layers))
    pools_config = {**config, "method": "lottery-pools", "ticket": ticket["run_id"], "search_num": search_num,
                    "pools_checkpoint": checkpoint, "alphas": list(DEFAULT_ALPHAS if alphas is None else alphas)}
    run_id = _store_result(store, root, pools_config, final, layers, time.time() - started, model)
    store.link(run_id, parent_run=ticket["run_id"], experiment=None, level=level)
    log(f"lottery pools on level {level}: val {result.ticket_val_acc:.4f} -> {result.val_acc:.4f}, "
        f"test {final['test_acc']:.4f}, accepted {final['accepted']}")
    return store.get_run(run_id)


def _ticket_weights(root: str | Path, record: dict[str, Any], checkpoint: str) -> Path:
    """The weights file of a lottery level: its best-validation weights, or its last checkpoint."""
    folder = run_dir_of(root, record)
    if checkpoint == "last":
        return folder.last_checkpoint
    best = folder.path / BEST_WEIGHTS
    if not best.is_file():
        raise UserError(f"run {record['run_id']} has no best-validation weights ({BEST_WEIGHTS}; lottery levels "
                        "trained before they were kept): retrain with --force or use the last weights "
                        "(--pools-checkpoint last)")
    return best


def _rebuild(record: dict[str, Any]) -> tuple[DatasetSplits, nn.Module, list]:
    """The data, a fresh model and its sparse weights for a stored run's config."""
    spec = build_spec(record["config"], where=f"run {record['run_id']}")
    exp = spec.experiment
    data = load(exp.dataset, seed=exp.seed, val_fraction=exp.val_fraction, data_dir=exp.data_dir,
                **(exp.dataset_options or {}))
    if not in_memory(data):
        raise UserError(f"run {record['run_id']} trained on {exp.dataset!r}, which streams its images from disk; "
                        "Lottery Pools and soups hold the training set in memory to re-estimate batch-norm statistics")
    model = create_model(exp.model, input_shape=data.input_shape, num_classes=data.num_classes,
                         **(exp.model_options or {}))
    cfg = spec.method
    if not hasattr(cfg, "backend"):  # a dense run: nothing is sparse
        return data, model, []
    names = select_weights(model, **selection_options(cfg))
    return data, model, attach(model, names, cfg.backend)


def _store_result(store: ResultsStore, root: str | Path, config: dict[str, Any], final: dict[str, Any],
                  layers: list[dict[str, Any]], duration_s: float, model: nn.Module) -> str:
    """Record a result that was computed, not trained, as a finished run with its weights
    in the run folder (``checkpoints/last.pt``, ``{"model": state_dict}``); returns its id."""
    from sparsetrain.atomic import atomic_torch_save

    identity = config_hash(config)
    seed = int(config.get("seed", 0))
    run_id = store.run_id(identity, seed)
    folder = RunDir(root, identity, seed).create()
    folder.write_config(config)
    atomic_torch_save({"model": {k: v.detach().cpu() for k, v in model.state_dict().items()}},
                      folder.last_checkpoint)
    store.start(run_id, config_hash=identity, seed=seed, config=config)
    store.finish(run_id, final, layers, duration_s=duration_s)
    return run_id


# --- sparse model soups ----------------------------------------------------------------------
def soup_runs(store: ResultsStore, root: str | Path, run_refs: list[str], *, greedy: bool = False,
              recalibrate_bn: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Average finished runs that share one mask (e.g. fine-tunings of one pruned model) into a
    sparse model soup (Wortsman et al. 2022; Zimmer et al. 2024, ZIB-IOL/SMS): uniform, or
    greedy by validation accuracy. The soup keeps the mask; it is stored as a run (method
    ``soup-uniform``/``soup-greedy``). As in SMS, batch-norm statistics are re-estimated on the
    training data (unshuffled, the first run's batch size) for every ingredient and mix before
    it is evaluated and for the soup itself; ``recalibrate_bn=False`` keeps the plain average
    of the ingredients' statistics instead."""
    records = [find_run(store, ref) for ref in run_refs]
    if len(records) < 2:
        raise UserError("a soup needs at least two runs")
    started = time.time()
    data, model, _ = _rebuild(records[0])
    own = model.state_dict()
    states = []
    for record in records:
        state = read_weights(run_dir_of(root, record).last_checkpoint)
        if set(state) != set(own):
            raise UserError(f"run {record['run_id']} has another architecture or sparsity than {records[0]['run_id']}")
        states.append(state)
    recalibrate = None
    if recalibrate_bn and has_batch_norm(model):
        size = int(records[0]["config"].get("batch_size", 128))
        inputs = [x for x, _ in batches(data.train, size, shuffle=False)]
        recalibrate = lambda m: recalibrate_bn_on(m, inputs)  # noqa: E731
    if greedy:
        soup, chosen = greedy_soup(states, model, lambda m: accuracy(m, data.val), recalibrate)
    else:
        soup, chosen = uniform_soup(states), list(range(len(states)))
        model.load_state_dict(soup)
        if recalibrate is not None:
            recalibrate(model)
    final = {"val_acc": accuracy(model, data.val), "test_acc": accuracy(model, data.test),
             "ingredients": [records[i]["run_id"] for i in chosen]}
    layers = analysis.layer_table(model, data.input_shape, records[0]["config"].get("structure"))
    final.update(analysis.totals(layers))
    method = "soup-greedy" if greedy else "soup-uniform"
    config = {**records[0]["config"], "method": method, "runs": sorted(r["run_id"] for r in records),
              "recalibrate_bn": recalibrate_bn}
    run_id = _store_result(store, root, config, final, layers, time.time() - started, model)
    store.link(run_id, parent_run=records[0]["run_id"])  # all ingredients: final["ingredients"]
    log(f"{method} of {len(records)} runs ({len(chosen)} used): test {final['test_acc']:.4f}")
    return store.get_run(run_id)
