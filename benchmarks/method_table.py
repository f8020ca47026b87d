"""A small table of test accuracy (mean ± std over seeds) for rows of run settings.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/method_table.py supermask \\
        --seeds 0,1,2 --out runs/bench_methods --doc docs/methods_supermask.md

Each row is one flat config (the keys `sparsetrain train` takes) run once per seed through
the experiments runner, so every run is a row in the results store under ``--out`` and a
second call skips what finished. The suites below are the measurements of issue 19; they are
kept small (a few epochs on 2 shared CPU cores).
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from sparsetrain.experiments import ResultsStore, RunDir, build_spec, run

MNIST1D_MLP = {"model": "mlp", "dataset": "mnist1d", "batch_size": 128, "momentum": 0.9,
               "lr_schedule": "cosine", "device": "cpu", "model_options": {"widths": [256, 256]}}



def aeon_archives() -> str:
    """The folder of UCR/UEA archives shipped inside the aeon package (pip install --no-deps aeon);
    found without importing aeon (whose own dependencies are not installed here)."""
    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the dsn suite reads the archives inside aeon: pip install --no-deps aeon")
    return str(Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data")


def _ucr_rows(name: str, train_size: int, epochs: int, density: float = 0.2) -> list[tuple[str, dict]]:
    """DSN against the same network dense and with RigL at DSN's overall density in its wide kernels
    (``density`` inside regions of 13/26/39 of 39 taps = density * 2/3; 0.2 for UCR, 0.1 for UEA), the
    reference's optimizer and batch size."""
    base = {"model": "dsn", "dataset": "ucr", "dataset_options": {"name": name}, "val_fraction": 0.0,
            "epochs": epochs, "batch_size": max(int(min(train_size / 10, 16)), 2), "optimizer": "adam",
            "lr": 3e-4, "momentum": 0.9, "weight_decay": 0.0, "lr_schedule": "cosine", "device": "cpu"}
    steps = -(-train_size // base["batch_size"])
    return [(f"{name}: dense", {**base, "method": "dense"}),
            (f"{name}: RigL, density {round(density * 2 / 3, 4)} in the wide kernels", {
                **base, "method": "rigl", "density": round(density * 2 / 3, 4), "include": ("blocks.*.conv.weight",),
                "distribution": "uniform", "update_interval": 5 * steps, "drop_fraction": 0.5, "stop_fraction": 0.8}),
            (f"{name}: DSN, density {density} in regions", {**base, "method": "dsn", "density": density})]


SUITES: dict[str, dict] = {
    "supermask": {
        "title": "Untrained subnetworks (edge-popup) against trained dense, MNIST-1D, MLP 40-256-256-10",
        "rows": [("trained dense", {**MNIST1D_MLP, "method": "dense", "epochs": 40, "lr": 0.05,
                                    "weight_decay": 5e-4})]
        + [(f"edge-popup, density {d} (weights untrained)",
            {**MNIST1D_MLP, "method": "edge-popup", "density": d, "epochs": 40, "lr": 0.1,
             "weight_decay": 1e-4}) for d in (0.1, 0.3, 0.5, 0.7)]
        + [("edge-popup, density 0.5, 4x wider (40-1024-1024-10, untrained)",
            {**MNIST1D_MLP, "method": "edge-popup", "density": 0.5, "epochs": 40, "lr": 0.1,
             "weight_decay": 1e-4, "model_options": {"widths": [1024, 1024]}})],
    },
    "suptickets": {
        "title": "Sup-tickets against its RigL/SET/GraNet underneath, MNIST-1D, MLP 40-256-256-10, density 0.1",
        "rows": [("trained dense", {**MNIST1D_MLP, "method": "dense", "epochs": 40, "lr": 0.05, "weight_decay": 5e-4})]
        + [(label, {**MNIST1D_MLP, "epochs": 40, "lr": 0.05, "weight_decay": 5e-4, "density": 0.1,
                    "update_interval": 50, **extra}) for label, extra in [
            ("RigL (drop 0.5 constant, every 50 steps)", {"method": "rigl", "drop_fraction": 0.5, "anneal": "constant"}),
            ("Sup-tickets on RigL, CAA, 3 cycles of 2 epochs", {"method": "sup-tickets", "cycle_epochs": 2,
                                                                "cycle_fraction": 0.15}),
            ("Sup-tickets on RigL, EMA 0.5, 3 cycles of 2 epochs", {"method": "sup-tickets", "cycle_epochs": 2,
                                                                    "cycle_fraction": 0.15, "superpose": "ema"}),
            ("SET (drop 0.5 constant, every 50 steps)", {"method": "set", "drop_fraction": 0.5, "anneal": "constant"}),
            ("Sup-tickets on SET, CAA, 3 cycles of 2 epochs", {"method": "sup-tickets", "regrowth": "random",
                                                               "cycle_epochs": 2, "cycle_fraction": 0.15}),
            ("GraNet (0.5 -> 0.1 until 44%, drop 0.5 constant, every 50 steps)",
             {"method": "granet", "drop_fraction": 0.5, "anneal": "constant", "prune_stop_fraction": 0.44}),
            ("Sup-tickets on GraNet, CAA, 3 cycles of 2 epochs", {"method": "sup-tickets-granet", "cycle_epochs": 2,
                                                                  "cycle_fraction": 0.15}),
        ]],
    },
}


def _ugts_rows(epochs: int = 100) -> list[tuple[str, dict]]:
    """UGTs (untrained, scores trained by AdamW 0.01 without weight decay, sparsity rising over the
    first half) against the trained dense GCN (AdamW 0.01, weight decay 5e-4), as the reference's GCN
    command (2 layers, one full-graph step per epoch: the batch holds every training node) with 100
    epochs instead of 400 and hidden width 64 instead of 256, on the default csbm graph."""
    base = {"model": "gcn", "dataset": "csbm", "batch_size": 1024, "optimizer": "adamw", "lr": 0.01,
            "momentum": 0.9, "lr_schedule": "constant", "epochs": epochs, "device": "cpu"}
    return [("GCN trained dense", {**base, "method": "dense", "weight_decay": 5e-4})] + [
        (f"UGTs, density {d} (weights untrained)", {**base, "method": "ugts", "density": d, "weight_decay": 0.0})
        for d in (0.5, 0.2, 0.1)]


SUITES["ugts"] = {"title": "Untrained GNN tickets (UGTs) against the trained dense GCN, csbm graph (600 nodes, "
                  "4 classes, 32 features), GCN 32-64-4", "rows": _ugts_rows()}


def _srigl_rows() -> list[tuple[str, dict]]:
    """SRigL against RigL at density 0.1 (ERK, drop 0.3 cosine to 0 at 75%, both every 50 steps), each
    with its reference's own order on update iterations (RigL skips the optimizer step, SRigL takes it),
    on the MLP 40-256-256-10 and the 1D CNN (32/64/128 channels); dense rows for scale; SRigL without
    ablation and with the ablation threshold the reference uses for ViT."""
    base = {**MNIST1D_MLP, "epochs": 40, "lr": 0.05, "weight_decay": 5e-4}
    sparse = {"density": 0.1, "update_interval": 50}
    rows = []
    for label, model in (("MLP 40-256-256-10", {}), ("1D CNN", {"model": "cnn1d", "model_options": {}})):
        config = {**base, **model}
        rows += [(f"{label}: dense", {**config, "method": "dense"}),
                 (f"{label}: RigL", {**config, **sparse, "method": "rigl"}),
                 (f"{label}: SRigL (gamma_sal 0.3, ablation)", {**config, **sparse, "method": "srigl"}),
                 (f"{label}: SRigL without ablation", {**config, **sparse, "method": "srigl", "ablation": False}),
                 (f"{label}: SRigL, gamma_sal 0.95 (the ViT setting)", {**config, **sparse, "method": "srigl",
                                                                       "gamma_sal": 0.95})]
    return rows


SUITES["srigl"] = {"title": "SRigL against RigL at density 0.1, MNIST-1D", "rows": _srigl_rows(),
                   "empty_neurons": True}


def empty_neurons(checkpoint: Path) -> int:
    """Neurons (rows of a weight's mask) without any active weight in a run's last checkpoint."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    return sum(int((~m.reshape(m.shape[0], -1).any(dim=1)).sum()) for k, m in state.items() if k.endswith("_mask"))


def digits32(out: Path) -> str:
    """scikit-learn's 8x8 digits scaled to [0, 1] and enlarged 4x (nearest) to 1x32x32, written once as
    ``out/digits32.npz`` (x, y; the npz reader holds out a stratified 20% as test)."""
    path = out / "digits32.npz"
    if not path.is_file():
        import numpy as np
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.kron(digits.images / 16.0, np.ones((4, 4)))[:, None].astype(np.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, x=images, y=digits.target.astype(np.int64))
    return str(path)


def _slak_rows() -> list[tuple[str, dict]]:
    """slak-small at width 8/16/32 against its dense twins; AdamW 2e-3 with 1 warm-up epoch, weight decay
    0.05 (ConvNeXt/SLaK use AdamW 4e-3 at batch 4096), 6 epochs, topology updates every 50 steps (the
    reference's 2000 exceed such a short run). Small because 2 shared CPU cores run it."""
    base = {"dataset": "npz", "epochs": 6, "batch_size": 32, "optimizer": "adamw", "lr": 2e-3, "momentum": 0.9,
            "warmup_epochs": 1, "weight_decay": 0.05, "lr_schedule": "cosine", "device": "cpu",
            "model_options": {"dims": [8, 16, 32]}}
    return [("slak-baseline (dense 7x7 kernels)", {**base, "model": "slak-baseline", "method": "dense"}),
            ("slak-small dense (15/11/7 as 5-wide rectangles + 5x5)", {**base, "model": "slak-small", "method": "dense"}),
            ("slak-small + slak sparsity (density 0.6 on the large kernels)",
             {**base, "model": "slak-small", "method": "slak", "update_interval": 50})]


SUITES["slak"] = {"title": "SLaK on digits enlarged to 32x32 (scikit-learn 8x8 digits, 4x nearest), width 8/16/32",
                  "rows": _slak_rows(), "data_dir": digits32}

if importlib.util.find_spec("aeon") is not None:
    SUITES["dsn"] = {
        "title": "DSN on UCR archives shipped inside aeon (GunPoint, ItalyPowerDemand), dsn network (width 47, depth 4, kernel 39)",
        "rows": _ucr_rows("GunPoint", 50, 40) + _ucr_rows("ItalyPowerDemand", 67, 40),
        "data_dir": aeon_archives(),
    }
    SUITES["dsn-arrowhead"] = {
        "title": "DSN on ArrowHead (UCR, 36 training series of length 251) shipped inside aeon, dsn network",
        "rows": _ucr_rows("ArrowHead", 36, 40),
        "data_dir": aeon_archives(),
    }
    SUITES["dsn-uea"] = {
        "title": "DSN on BasicMotions (UEA, 6 channels, density 0.1 as for UEA) shipped inside aeon",
        "rows": _ucr_rows("BasicMotions", 40, 40, density=0.1),
        "data_dir": aeon_archives(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", choices=sorted(SUITES))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default="runs/bench_methods")
    parser.add_argument("--doc", default=None, help="write the markdown table here")
    args = parser.parse_args(argv)
    suite = SUITES[args.suite]
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    store = ResultsStore(out / "results.db")
    neurons = suite.get("empty_neurons", False)
    lines = [f"## {suite['title']}", "",
             "| run | test accuracy (mean ± std) | seeds | minutes per run |" + (" neurons without weights |" if neurons else ""),
             "|---|---|---|---|" + ("---|" if neurons else "")]
    started_all = time.perf_counter()
    for label, config in suite["rows"]:
        accs, times, empty = [], [], []
        for seed in seeds:
            started = time.perf_counter()
            if "data_dir" in suite:
                where = suite["data_dir"]
                config = {**config, "data_dir": where(out) if callable(where) else where}
            spec = build_spec({**config, "seed": seed})
            row = run(spec, root=out, store=store, progress=False, log=lambda *_: None)
            if neurons and config["method"] != "dense":
                empty.append(empty_neurons(RunDir(out, spec.config_hash, seed).last_checkpoint))
            times.append(time.perf_counter() - started)
            accs.append(100 * row["final"]["test_acc"])
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        lines.append(f"| {label} | {statistics.mean(accs):.2f} ± {std:.2f} | {len(accs)} | "
                     f"{statistics.mean(times) / 60:.1f} |" + (f" {'/'.join(map(str, empty)) or '-'} |" if neurons else ""))
        print(lines[-1], flush=True)
    command = f"OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/method_table.py {args.suite} " \
              f"--seeds {args.seeds} --out {args.out}"
    lines += ["", f"Command: `{command}`", "",
              f"Settings per row (flat `sparsetrain train` keys): see `SUITES['{args.suite}']` in "
              "`benchmarks/method_table.py`.",
              f"Machine: {platform.machine()}, torch {torch.__version__}, CPU shared with other jobs "
              f"(times are not benchmarks); total {(time.perf_counter() - started_all) / 60:.1f} min.", ""]
    return publish(lines, args.doc)


def publish(lines: list[str], doc: str | None) -> int:
    """Print the markdown ``lines`` and write them to ``doc`` if given; 0 (the exit status)."""
    if doc:
        Path(doc).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
