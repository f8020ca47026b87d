"""Run one experiment end to end: data, model, Trainer, run folder, results store."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from sparsetrain import analysis
from sparsetrain.data import check_splits, load
from sparsetrain.engine import Callback, Trainer, distributed
from sparsetrain.engine.trainer import resolve_device
from sparsetrain.errors import DivergedError, UserError
from sparsetrain.experiments.checks import check_streamed
from sparsetrain.experiments.lock import RunLock
from sparsetrain.experiments.robustness import check_robust_eval, evaluate_robustness, robustness_callbacks
from sparsetrain.experiments.rundir import RunDir
from sparsetrain.experiments.spec import RunSpec
from sparsetrain.experiments.store import ResultsStore
from sparsetrain.models import create as create_model
from sparsetrain.scenarios.apply import ScenarioContext, apply_scenarios

FINAL_KEYS = ("test_acc", "test_loss", "val_acc", "val_loss", "train_acc", "train_loss")


class RecordCallback(Callback):
    """Writes each epoch to the store and metrics.jsonl; marks the run started and resumed."""

    def __init__(self, store: ResultsStore, run_dir: RunDir, run_id: str, spec: RunSpec,
                 log: Callable[[str], None] = print) -> None:
        self.store, self.run_dir, self.run_id, self.spec, self.log = store, run_dir, run_id, spec, log

    def on_fit_start(self, trainer: Trainer) -> None:
        resumed = trainer.epoch if trainer.epoch > 0 else None
        if resumed:
            self.log(f"{self.run_id}: resuming after epoch {resumed} of {trainer.config.epochs} from "
                     f"{str(self.run_dir.last_checkpoint)!r} (--restart starts over)")
        self.store.start(self.run_id, config_hash=self.spec.config_hash,
                         seed=self.spec.experiment.seed, config=self.spec.resolved(),
                         resume_from_epoch=resumed)
        self.run_dir.truncate_after_epoch(trainer.epoch)

    def on_eval(self, trainer: Trainer) -> None:
        metrics = trainer.history[-1]
        self.store.log_epoch(self.run_id, int(metrics["epoch"]), metrics)
        self.run_dir.append_metrics(metrics)


class ProgressCallback(Callback):
    """A tqdm bar over epochs showing the latest loss and accuracies; when stderr is not a
    terminal (a log file, a pipe), one plain line per epoch instead of redrawn frames."""

    def __init__(self, label: str, enabled: bool = True, stream: Any = None) -> None:
        self.label, self.enabled, self.bar = label, enabled, None
        self.stream = stream if stream is not None else sys.stderr
        self.lines = not getattr(self.stream, "isatty", lambda: False)()

    def on_fit_start(self, trainer: Trainer) -> None:
        if self.lines:
            return
        self.bar = tqdm(total=trainer.config.epochs, initial=trainer.epoch, desc=self.label,
                        disable=not self.enabled, leave=False, dynamic_ncols=True, file=self.stream)

    def on_epoch_end(self, trainer: Trainer) -> None:
        m = trainer.history[-1]
        stats = {"loss": f"{m['train_loss']:.3f}", "val": f"{m.get('val_acc', float('nan')):.3f}",
                 "test": f"{m['test_acc']:.3f}"}
        if self.lines:
            if self.enabled:
                shown = "  ".join(f"{k} {v}" for k, v in stats.items())
                print(f"{self.label}: epoch {trainer.epoch}/{trainer.config.epochs}  {shown}",
                      file=self.stream, flush=True)
            return
        self.bar.set_postfix(**stats)
        self.bar.update(1)

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()


def run(spec: RunSpec, *, root: str | Path, store: ResultsStore, resume: bool = False,
        force: bool = False, progress: bool = True,
        log: Callable[[str], None] = print, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Train ``spec`` unless the same config and seed already finished; returns its store row.

    With ``resume`` an unfinished run continues from its last checkpoint; without, it starts
    over. ``force`` trains a finished run again from the start; should that retry stop, the
    finished result (row, epochs, checkpoint, metrics) is put back. One process at a time
    trains a run (`RunLock`): another one gets `RunHeldError`. A run that stops is stored as
    ``diverged`` (non-finite loss), ``interrupted`` (SIGINT/SIGTERM) or ``failed``.

    Under torchrun this runs on rank 0, which holds the lock, decides (finished, resume,
    retry), writes the run folder and the store; the other ranks train alongside it in
    `follow`, told each run and each decision by broadcast.
    """
    exp = spec.experiment
    run_id = store.run_id(spec.config_hash, exp.seed)
    run_dir = RunDir(root, spec.config_hash, exp.seed)
    tell = _Followers(spec, root)
    # robustness callbacks first: their per-epoch metrics (test_robust_acc) are in the
    # history before RecordCallback writes the epoch to the store
    data, trainer = _setup(spec, root, run_dir, [RecordCallback(store, run_dir, run_id, spec, log),
                                                 ProgressCallback(f"{exp.method} seed {exp.seed}", progress),
                                                 *callbacks])
    # everything a user can get wrong has been checked above, before the store is touched
    with tell, RunLock(run_dir.lock_path, run_id):
        if store.is_finished(run_id) and not force:
            log(f"{run_id}: already finished (use --force to run it again)")
            return store.get_run(run_id)
        retried = store.get_run(run_id) if store.is_finished(run_id) else None  # --force
        previous_epochs = store.epochs(run_id) if retried else []
        run_dir.create()
        run_dir.remove_temporary()
        if retried:
            run_dir.set_aside()
        elif not resume:
            run_dir.last_checkpoint.unlink(missing_ok=True)  # start over: never resume it later
        run_dir.write_config(spec.resolved())
        log(f"{run_id}: {exp.method} on {exp.model}/{exp.dataset}, run folder {run_dir.path}"
            + (f", {trainer.world} processes" if trainer.world > 1 else ""))
        log(analysis.describe(analysis.layer_table(trainer.model, data.input_shape, _structure(spec)),
                              trainer.method.itop_rate()))
        resume = tell.resume(resume and not retried)  # the run folder is ready for every rank
        try:
            row = _train(trainer, spec, data, store, run_id, resume=resume, log=log)
        except BaseException as exc:
            status = stop_status(exc)
            if store.get_run(run_id) is not None:  # started: keep a record of why it stopped
                store.stop(run_id, status, stop_message(exc))
            if retried:
                run_dir.put_back()
                store.restore(retried, previous_epochs)
                log(f"{run_id}: the --force retry stopped ({status}); the finished result is kept")
            raise
        if retried:
            run_dir.drop_aside()
        return row


def _setup(spec: RunSpec, root: str | Path, run_dir: RunDir,
           callbacks: Sequence[Callback]) -> tuple[Any, Trainer]:
    """The run's data (scenarios applied) and its Trainer, the same on every rank."""
    exp = spec.experiment
    data = load(exp.dataset, seed=exp.seed, val_fraction=exp.val_fraction, data_dir=exp.data_dir,
                **(exp.dataset_options or {}))
    check_splits(data, f"dataset {exp.dataset!r}" + (f" in {exp.data_dir!r}" if exp.data_dir else ""))
    check_streamed(exp, data)
    context = scenario_context(spec, data, root)
    data = apply_scenarios(data, exp, context)
    torch.manual_seed(exp.seed)
    model = context.make_model()
    check_robust_eval(exp, data)
    trainer = Trainer(model, data, spec.train, method=exp.method, method_config=spec.method,
                      seed=exp.seed, checkpoint_path=run_dir.last_checkpoint,
                      callbacks=[*robustness_callbacks(exp, data), *callbacks])
    return data, trainer


class _Followers:
    """Rank 0's side of `follow`: says which run comes (on creation), then whether the others
    train it and whether from its checkpoint (`resume`), or, if the run ends before that
    (finished already, held by another process, an error), that they do not. No-op in one process."""

    def __init__(self, spec: RunSpec, root: str | Path) -> None:
        self.told = not distributed.is_distributed()
        if not self.told:
            distributed.broadcast_object((spec, str(root)))

    def resume(self, resume: bool | None) -> bool | None:
        self.told = True
        return distributed.broadcast_object(resume)

    def __enter__(self) -> _Followers:
        return self

    def __exit__(self, kind: type | None, *_: object) -> None:
        if not self.told and kind is not KeyboardInterrupt:  # (torchrun stops every rank on a signal)
            self.resume(None)


def follow() -> None:
    """A rank other than 0 under torchrun: set up and train every run rank 0 starts (same data,
    model, masks), until rank 0 says it is done; writes nothing. An error that every rank meets
    (bad input, a diverged run, diverged masks) ends that run here as on rank 0."""
    while True:
        message = distributed.broadcast_object(None)
        if message is None:
            return
        spec, root = message
        try:
            data, trainer = _setup(spec, root, RunDir(root, spec.config_hash, spec.experiment.seed), [])
        except UserError:
            continue
        resume = distributed.broadcast_object(None)
        if resume is None:  # rank 0 does not train it
            continue
        try:
            trainer.fit(resume=resume)
        except UserError:
            continue


def _train(trainer: Trainer, spec: RunSpec, data: Any, store: ResultsStore, run_id: str, *,
           resume: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Fit, evaluate and store the run as finished; returns its store row."""
    started = time.perf_counter()
    history = trainer.fit(resume=resume)
    layers = analysis.layer_table(trainer.model, data.input_shape, _structure(spec))
    final = {k: history[-1][k] for k in FINAL_KEYS if k in history[-1]}
    final.update(analysis.totals(layers), itop_rate=trainer.method.itop_rate(),
                 epochs=len(history), train_time_s=time.perf_counter() - started)
    final.update(train_samples=len(data.train), test_samples=len(data.test),
                 trained_weights=trainer.method.trains_weights)
    if trainer.world > 1:
        final["world_size"] = trainer.world
    final.update(evaluate_robustness(trainer.model, data, spec.experiment))
    store.finish(run_id, final, layers)
    log(analysis.describe(layers, trainer.method.itop_rate()))
    log(f"{run_id}: test accuracy {final['test_acc']:.4f}")
    return store.get_run(run_id)


def _structure(spec: RunSpec) -> str | None:
    """The run's structure option (N:M, block, channel), when its method has one."""
    value = spec.resolved().get("structure")
    return None if value is None else str(value)


def stop_message(exc: BaseException) -> str:
    """What the store records as the reason a run stopped."""
    if isinstance(exc, KeyboardInterrupt):
        return str(exc) or "interrupted by SIGINT (Ctrl-C)"
    return str(exc) if isinstance(exc, DivergedError) else f"{type(exc).__name__}: {exc}"


def stop_status(exc: BaseException) -> str:
    """The store status of a run stopped by ``exc``: diverged, interrupted or failed."""
    if isinstance(exc, DivergedError):
        return "diverged"
    return "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"


def scenario_context(spec: RunSpec, data: Any, root: str | Path) -> ScenarioContext:
    """What the scenarios of ``spec`` need: seed, dataset, a model factory and the score cache."""
    exp = spec.experiment

    def make_model() -> torch.nn.Module:
        return create_model(exp.model, input_shape=data.input_shape, num_classes=data.num_classes,
                            **(exp.model_options or {}))

    identity = {"dataset": exp.dataset, "model": exp.model, "model_options": exp.model_options,
                "dataset_options": exp.dataset_options, "val_fraction": exp.val_fraction}
    return ScenarioContext(seed=exp.seed, dataset=exp.dataset, make_model=make_model,
                           batch_size=spec.train.batch_size, lr=spec.train.lr,
                           device=str(resolve_device(spec.train.device)),
                           cache_dir=Path(root) / "scores", identity=identity)
