"""DDP scaling on the CPU: training samples per second of the CIFAR-form ResNet-20 on 1 and 2
processes (torchrun, gloo, one thread each), dense and RigL at density 0.1 (masked backend).

Each configuration is one torchrun launch of this file in worker mode: the Trainer trains on
synthetic CIFAR-shaped batches (3x32x32, 10 classes) with a fixed global batch, so 2 processes
take half of it each (strong scaling, the same optimization as 1 process). The first
``--warmup`` steps are not timed; samples/s = global batch x timed steps / their wall time on
rank 0 (which waits for every rank in each step's all-reduce). The load average of the machine
before and after goes into the table: on a shared machine the numbers say little.

    python benchmarks/ddp_scaling.py --steps 20 --batch 128 --out docs/performance_ddp.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

METHODS = {"dense": None, "rigl": {"density": 0.1, "update_interval": 10}}


def worker(args: argparse.Namespace) -> None:
    """One rank: train ``args.method`` for warm-up + timed steps; rank 0 writes the timing."""
    import sparsetrain as st
    from sparsetrain.data import DatasetSplits, TensorData
    from sparsetrain.engine import Callback, TrainConfig, Trainer, distributed

    torch.set_num_threads(1)
    distributed.init_from_env()
    steps = args.warmup + args.steps
    g = torch.Generator().manual_seed(0)
    x = torch.randn(steps * args.batch, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (len(x),), generator=g)
    empty = TensorData(x[:0], y[:0])
    data = DatasetSplits("synthetic-cifar", TensorData(x, y), empty, empty, 10, (3, 32, 32))
    torch.manual_seed(0)
    model = st.models.create("resnet20", input_shape=(3, 32, 32), num_classes=10)

    class Clock(Callback):
        def __init__(self) -> None:
            self.steps, self.started, self.elapsed = 0, 0.0, 0.0

        def on_batch_end(self, trainer: Trainer) -> None:
            self.steps += 1
            if self.steps == args.warmup:
                self.started = time.perf_counter()
            elif self.steps == steps:
                self.elapsed = time.perf_counter() - self.started

    clock = Clock()
    options = METHODS[args.method]
    trainer = Trainer(model, data, TrainConfig(epochs=1, batch_size=args.batch, lr=0.05, device="cpu"),
                      method=args.method if options else "dense", callbacks=[clock],
                      method_config=st.algorithms.config_class(args.method)(**options) if options else None)
    trainer.fit()
    if distributed.is_main():
        Path(args.result).write_text(json.dumps({"samples_per_s": args.batch * args.steps / clock.elapsed,
                                                 "step_s": clock.elapsed / args.steps}))
    distributed.shutdown()


def launch(processes: int, method: str, args: argparse.Namespace) -> dict:
    """One torchrun launch of the worker; its timing."""
    with tempfile.TemporaryDirectory() as folder:
        result = Path(folder) / "result.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                   __file__, "--worker", "--method", method, "--batch", str(args.batch), "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--result", str(result)]
        done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{processes} process(es), {method}: failed\n{done.stderr[-3000:]}")
        return json.loads(result.read_text())


def report(rows: list[dict], args: argparse.Namespace, load_before: tuple, load_after: tuple) -> str:
    lines = ["# DDP scaling on the CPU (ResNet-20, CIFAR form)", "",
             f"`python benchmarks/ddp_scaling.py --steps {args.steps} --batch {args.batch}"
             f"{'' if args.warmup == 3 else f' --warmup {args.warmup}'} --out {args.out}`", "",
             f"Training samples per second of the Trainer on synthetic 3x32x32 batches, global batch {args.batch} "
             f"(each of N processes takes {args.batch}/N), SGD, {args.steps} timed steps after {args.warmup} "
             "warm-up steps; torchrun with gloo, one thread per process (OMP_NUM_THREADS=1); RigL at density "
             "0.1 on the masked backend with a topology update every 10 steps (its dense-gradient reads and "
             "the per-step mask check included).", "",
             "| method | processes | per-process batch | samples/s | ms per step | speed-up |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        base = next(r for r in rows if r["method"] == row["method"] and r["processes"] == 1)
        lines.append(f"| {row['method']} | {row['processes']} | {args.batch // row['processes']} | "
                     f"{row['samples_per_s']:.1f} | {1000 * row['step_s']:.0f} | "
                     f"{row['samples_per_s'] / base['samples_per_s']:.2f}x |")
    lines += ["", f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
              f"Machine: {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
              f"torch {torch.__version__}, Python {platform.python_version()}. Load average (1, 5, 15 min) "
              f"before: {', '.join(f'{v:.2f}' for v in load_before)}; after: "
              f"{', '.join(f'{v:.2f}' for v in load_after)}.", ""]
    cores = os.cpu_count() or 1
    if max(load_before[0], load_after[0]) > cores / 2:
        lines += [f"The machine was loaded (a 1-minute load average above half its {cores} cores): other "
                  "processes shared the cores, so these numbers, and the speed-up above all, are not "
                  "the machine's; re-run on a quiet machine.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--batch", type=int, default=128, help="global batch (examples per optimizer step)")
    parser.add_argument("--out", default="docs/performance_ddp.md")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", default="dense", choices=tuple(METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    load_before = os.getloadavg()
    rows = []
    for method in METHODS:
        for processes in (1, 2):
            rows.append({"method": method, "processes": processes, **launch(processes, method, args)})
            print(f"{method}, {processes} process(es): {rows[-1]['samples_per_s']:.1f} samples/s", flush=True)
    text = report(rows, args, load_before, os.getloadavg())
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
