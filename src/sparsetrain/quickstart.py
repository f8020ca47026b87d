"""`sparsetrain quickstart`: dense, static-ERK, SET, RigL and MEST at 90% sparsity on MNIST-1D."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from sparsetrain.experiments import ResultsStore, build_spec, run
from sparsetrain.reporting import comparison_table, plot_comparison, write_study_report

METHODS = ("dense", "static", "set", "rigl", "mest")
SETTINGS: dict[str, Any] = {
    "model": "cnn1d", "dataset": "mnist1d", "epochs": 60, "batch_size": 64, "lr": 0.1,
    "momentum": 0.9, "weight_decay": 5e-4, "lr_schedule": "cosine",
}
SPARSE_SETTINGS: dict[str, Any] = {"density": 0.1, "distribution": "erk"}
DYNAMIC_SETTINGS: dict[str, Any] = {"update_interval": 25, "drop_fraction": 0.3, "stop_fraction": 0.75}


MEST_SETTINGS: dict[str, Any] = {"dense_first": False, "dense_last": False}
"""MEST keeps its released schedule (mutation every 5 epochs at rate 0.5, halved at 56% of
training, frozen at 75%) but shares the allocation of the others, so every column is 90% sparse."""


def quickstart_config(method: str, seed: int, epochs: int) -> dict[str, Any]:
    """The flat config of one quickstart run."""
    values = {**SETTINGS, "method": method, "seed": seed, "epochs": epochs}
    if method != "dense":
        values.update(SPARSE_SETTINGS)
    if method in ("set", "rigl"):
        values.update(DYNAMIC_SETTINGS)
    if method == "mest":
        values.update(MEST_SETTINGS)
    return values


def run_quickstart(out: str | Path, *, epochs: int = SETTINGS["epochs"], seeds: tuple[int, ...] = (0,),
                   force: bool = False, progress: bool = True,
                   log: Callable[[str], None] = print) -> dict[str, Path]:
    """Train every quickstart method, then write the table, a PNG figure and an HTML report."""
    out = Path(out)
    specs = [build_spec(quickstart_config(m, s, epochs), where="quickstart") for m in METHODS for s in seeds]
    quiet = lambda message: None  # noqa: E731  (per-run layer tables would bury the summary)
    with ResultsStore(out / "results.db") as store:
        runs = []
        for spec in specs:
            exp = spec.experiment
            if not force and store.is_finished(store.run_id(spec.config_hash, exp.seed)):
                log(f"{exp.method} (seed {exp.seed}): already finished, skipped (--force trains it again)")
            else:
                log(f"training {exp.method} (seed {exp.seed}) ...")
            runs.append(run(spec, root=out, store=store, force=force, progress=progress, log=quiet))
        histories = {r["run_id"]: store.epochs(r["run_id"]) for r in runs}
        among = [r["run_id"] for r in store.runs(status=None)]
    table = comparison_table(runs, among=among)
    figure = plot_comparison(runs, out / "quickstart.png")
    report = write_study_report(runs, out / "quickstart.html", figure=figure, histories=histories, among=among,
                                title="sparsetrain quickstart: 90% sparse 1D CNN on MNIST-1D")
    log("\n" + table)
    log(f"\nfigure: {figure}\nreport: {report}")
    return {"figure": figure, "report": report, "store": out / "results.db"}
