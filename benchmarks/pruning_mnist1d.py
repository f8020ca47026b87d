"""Pruning methods on MNIST-1D with the 1D CNN at 90% sparsity (density 0.1), several seeds.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/pruning_mnist1d.py \\
        --seeds 0,1,2 --out runs/bench_pruning --doc docs/pruning.md

Training settings are the quickstart's (`sparsetrain.quickstart.SETTINGS`: SGD, lr 0.1,
momentum 0.9, weight decay 5e-4, batch 64, cosine) with ``--epochs`` epochs per training
run. Methods (each a run in the results store under ``--out``, so a second call skips what
finished):

- dense; pruning at init: SNIP, GraSP, SynFlow (global ranking); gradual: GMP, GraNet
  (their default schedules);
- after training, from the dense run of the same seed: one-shot global magnitude, LAMP,
  layer-adaptive DP (Xu et al. 2023), each followed by ``--finetune-epochs`` epochs of
  fine-tuning at ``--finetune-lr``;
- IMP: 5 levels with rewinding to init; the per-level pruning fraction is 1 - 0.1^(1/5)
  (= 36.9%) so that level 5 reaches density 0.1 (the dense run is level 0);
- Lottery Pools on the level-5 ticket, interpolating with its two nearest tickets (levels
  4 and 3, the reference's search_num = 3), each level's best-validation weights, the README's
  11 alphas (`DEFAULT_ALPHAS`).

Writes a mean ± std table of test accuracy (and the per-level IMP accuracies) to ``--doc``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from sparsetrain.algorithms import METHODS
from sparsetrain.algorithms.averaging import DEFAULT_ALPHAS
from sparsetrain.experiments import ResultsStore, build_spec, run
from sparsetrain.experiments.pruning import (
    LotteryConfig, lottery_levels, pools_for_level, prune_run, run_lottery,
)
from sparsetrain.quickstart import SETTINGS

DENSITY = 0.1
IMP_LEVELS = 5
IMP_FRACTION = 1 - DENSITY ** (1 / IMP_LEVELS)
ROWS = [("dense", "dense"), ("snip", "SNIP"), ("grasp", "GraSP"), ("synflow", "SynFlow"), ("gmp", "GMP"),
        ("granet", "GraNet"), ("oneshot", "one-shot global magnitude + fine-tune"), ("lamp", "LAMP + fine-tune"),
        ("dp", "layer-adaptive DP + fine-tune"), ("imp", f"IMP ({IMP_LEVELS} levels, rewind to init)"),
        ("pools", "Lottery Pools (on the IMP level-5 ticket)")]


def run_seed(seed: int, args: argparse.Namespace, store: ResultsStore, log) -> dict[str, dict]:
    """Every method for one seed; returns {row key: store row}."""
    out = Path(args.out)
    base = {**SETTINGS, "epochs": args.epochs, "seed": seed, "device": "cpu"}
    quiet = {"progress": False, "log": lambda message: None}
    rows: dict[str, dict] = {}

    def timed(key: str, fn) -> None:
        started = time.perf_counter()
        rows[key] = fn()
        log(f"seed {seed} {key:8s} test {rows[key]['final']['test_acc']:.4f}  ({time.perf_counter() - started:.0f} s)")

    timed("dense", lambda: run(build_spec({**base, "method": "dense"}), root=out, store=store, **quiet))
    for method in ("snip", "grasp", "synflow", "gmp", "granet"):
        if method not in METHODS.names():
            log(f"seed {seed} {method}: not registered, not run")
            continue
        timed(method, lambda m=method: run(build_spec({**base, "method": m, "density": DENSITY}),
                                           root=out, store=store, **quiet))
    parent = rows["dense"]["run_id"]
    for key, method in (("oneshot", "global"), ("lamp", "lamp"), ("dp", "dp")):
        timed(key, lambda m=method: prune_run(store, out, parent, method=m, density=DENSITY,
                                              finetune_epochs=args.finetune_epochs,
                                              overrides={"lr": args.finetune_lr}, **quiet))
    started = time.perf_counter()
    lottery = LotteryConfig(levels=IMP_LEVELS, prune_fraction=IMP_FRACTION, rewind="init")
    imp = run_lottery(store, out, {**base, "method": "dense"}, lottery, **quiet)
    rows["imp"] = imp[-1]
    log(f"seed {seed} imp      test {imp[-1]['final']['test_acc']:.4f}  ({time.perf_counter() - started:.0f} s)")
    experiment = store.links(run_id=imp[-1]["run_id"])[0]["experiment"]
    levels = lottery_levels(store, experiment)
    rows["levels"] = levels  # type: ignore[assignment]
    timed("pools", lambda: pools_for_level(store, out, levels, IMP_LEVELS, log=lambda message: None))
    return rows


def mean_std(values: list[float]) -> str:
    if not values:
        return "not run"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.2f} ± {100 * std:.2f}"


def write_doc(path: Path, results: list[dict], args: argparse.Namespace, wall_s: float, command: str) -> str:
    lines = ["# Pruning methods on MNIST-1D (1D CNN, 90% sparsity)", "",
             f"Command: `{command}`", "",
             f"Settings: quickstart training settings (SGD lr 0.1, momentum 0.9, weight decay 5e-4, batch 64, "
             f"cosine), {args.epochs} epochs per training run; density {DENSITY} over all Conv/Linear weights; "
             f"seeds {args.seeds}. One-shot/LAMP/DP prune the dense run of the same seed and fine-tune "
             f"{args.finetune_epochs} epochs at lr {args.finetune_lr} (cosine). IMP: {IMP_LEVELS} levels, "
             f"{100 * IMP_FRACTION:.1f}% of the remaining weights pruned per level (1 - 0.1^(1/5), so level "
             f"{IMP_LEVELS} has density 0.1), rewinding to init, {args.epochs} epochs per level. Lottery Pools: "
             "level-5 ticket interpolated with levels 4 and 3 (each level's best-validation weights), alpha in "
             f"{', '.join(f'{a:g}' for a in DEFAULT_ALPHAS)}, re-pruned to the ticket's density by global "
             "magnitude, kept only if validation accuracy improves. Layer-adaptive DP: the reference's "
             "worst-case distortion curve (`dp_curve: worst`).", "",
             f"Machine: {platform.machine()} CPU, torch {torch.__version__}, 1 thread, shared with other jobs; "
             f"total wall time {wall_s / 60:.1f} min.", "",
             "| method | test acc (%) mean ± std | train time per seed (s) |", "|---|---|---|"]
    for key, label in ROWS:
        accs = [r[key]["final"]["test_acc"] for r in results if key in r]
        if key == "imp":
            times = [sum(lv.get("duration_s") or 0 for lv in r["levels"][1:]) for r in results if key in r]
        else:
            times = [r[key].get("duration_s") or 0 for r in results if key in r]
        cost = f"{statistics.fmean(times):.0f}" if times else "-"
        lines.append(f"| {label} | {mean_std(accs)} | {cost} |")
    lines += ["", "IMP test accuracy per level (mean ± std over seeds):", "",
              "| level | density | test acc (%) |", "|---|---|---|"]
    for level in range(IMP_LEVELS + 1):
        accs = [r["levels"][level]["final"]["test_acc"] for r in results if "levels" in r]
        lines.append(f"| {level} | {(1 - IMP_FRACTION) ** level:.4f} | {mean_std(accs)} |")
    pools = [r["pools"]["final"] for r in results if "pools" in r]
    if pools:
        lines += ["", "Lottery Pools, per seed: ticket val acc -> pooled val acc (accepted [level, alpha]): " +
                  "; ".join(f"{100 * p['ticket_val_acc']:.1f} -> {100 * p['val_acc']:.1f} {p['accepted']}"
                            for p in pools)]
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=SETTINGS["epochs"])
    parser.add_argument("--finetune-epochs", type=int, default=20)
    parser.add_argument("--finetune-lr", type=float, default=0.01)
    parser.add_argument("--out", default="runs/bench_pruning")
    parser.add_argument("--doc", default="docs/pruning.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    command = "OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/pruning_mnist1d.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    results = []
    with ResultsStore(Path(args.out) / "results.db") as store:
        for seed in (int(s) for s in args.seeds.split(",")):
            results.append(run_seed(seed, args, store, lambda m: print(m, flush=True)))
            text = write_doc(Path(args.doc), results, args, time.perf_counter() - started, command)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
