"""Sparse backend on a small CNN: ms per training step against masked PyTorch.

CNN for 3x32x32 inputs (CIFAR-sized): Conv 3-32, Conv 32-64, max-pool, Conv 64-128 (all 3x3,
padding 1, ReLU), global average pool, Linear 128-10; batch 64, SGD with momentum 0.9, every
layer at the same density. Variants, interleaved round by round, median over the rounds:

- ``masked``: masked PyTorch, each layer's forward with ``weight * mask``
- ``sparsetrain``: the sparse backend with its defaults (convolutions above
  ``CONV_BREAK_EVEN`` compute with torch's dense convolution over the scattered weights)
- ``sparsetrain_conv_kernels``: the same with every convolution forced onto im2col + the
  sparse kernels (``break_even = inf``), which is what measured ``CONV_BREAK_EVEN``

    python benchmarks/sparse_cnn.py --rounds 7 --threads 2 --out docs/performance_cnn.md
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import sparse_mlp as mlp  # noqa: E402  (timing and thread helpers)

BATCH = 64
VARIANTS = ("masked", "sparsetrain", "sparsetrain_conv_kernels")


def _cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))


class Masked(nn.Module):
    """Masked PyTorch around a Linear or Conv: the weight times a fixed mask in every forward."""

    def __init__(self, layer: nn.Module, density: float, gen: torch.Generator) -> None:
        super().__init__()
        self.layer = layer
        self.register_buffer("mask", (torch.rand(layer.weight.shape, generator=gen) < density).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.layer.weight * self.mask
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, weight, self.layer.bias)
        return self.layer._conv_forward(x, weight, self.layer.bias)


class Variant:
    """A model, its optimizer and its training step."""

    def __init__(self, name: str, density: float, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.model, self.method, self.algo = _cnn(), None, None
        if name == "masked":
            gen = torch.Generator().manual_seed(seed)
            for i, module in enumerate(self.model):
                if isinstance(module, (nn.Linear, nn.Conv2d)):
                    self.model[i] = Masked(module, density, gen)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        if name.startswith("sparsetrain"):
            import sparsetrain as st
            self.method = st.create("static", self.model, self.optimizer, density=density,
                                    distribution="uniform", backend="sparse", seed=seed)
            if name == "sparsetrain_conv_kernels":
                for w in self.method.weights:
                    if isinstance(w.module, nn.Conv2d):
                        w.module.break_even = math.inf

    train_step = mlp.Variant.train_step  # zero_grad, loss, backward, the method's (or optimizer's) step


def time_steps(densities: list[float], rounds: int, repeats: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(BATCH, 3, 32, 32, generator=gen), torch.randint(0, 10, (BATCH,), generator=gen)
    built = {(v, d): Variant(v, d) for d in densities for v in VARIANTS}
    for var in built.values():  # warm-up: JIT compilation, allocator
        for _ in range(2):
            var.train_step(x, y)
    times: dict = {key: [] for key in built}
    for _ in range(rounds):
        for key, var in built.items():
            times[key].append(mlp._timed(lambda: var.train_step(x, y), repeats))
    return {key: statistics.median(t) for key, t in times.items()}


def report(args: argparse.Namespace, steps: dict) -> str:
    lines = ["# Sparse backend on a CNN", "",
             f"Command: `python benchmarks/sparse_cnn.py {' '.join(args.argv)}`", "",
             mlp.machine_line(args.threads),
             f"CNN 3x32x32 -> Conv 32 -> Conv 64 -> pool -> Conv 128 -> avg pool -> Linear 10 (3x3, ReLU), "
             f"batch {BATCH}, SGD momentum 0.9, uniform density, variants interleaved, "
             f"median of {args.rounds} rounds x {args.repeats} steps.", "",
             "## Training step (ms) and speedup over masked PyTorch", "",
             "| density | " + " | ".join(VARIANTS) + " | "
             + " | ".join(f"{v} speedup" for v in VARIANTS if v != "masked") + " |",
             "|---" * (2 * len(VARIANTS)) + "|"]
    for d in args.densities:
        base = steps[("masked", d)]
        row = [f"{steps[(v, d)]:.1f}" for v in VARIANTS]
        row += [f"{base / steps[(v, d)]:.2f}x" for v in VARIANTS if v != "masked"]
        lines.append(f"| {d} | " + " | ".join(row) + " |")
    lines += ["", "`sparsetrain` runs each convolution with torch's dense kernels over its scattered "
              "weights (the default `CONV_BREAK_EVEN`); `sparsetrain_conv_kernels` forces im2col + "
              "the sparse kernels. Speedups are ratios within this one run.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=2, help="steps timed together per round")
    parser.add_argument("--densities", type=float, nargs="+", default=[0.5, 0.2, 0.1, 0.05, 0.01, 0.001])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="docs/performance_cnn.md")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    mlp._set_threads(args.threads)
    mlp.write_report(report(args, time_steps(args.densities, args.rounds, args.repeats)), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
