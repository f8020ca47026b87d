"""Where the time of one sparse training step goes (the MLP of benchmarks/sparse_mlp.py).

Times each module's forward, the loss, the backward and the optimizer step of the
``sparsetrain`` (or ``--variant sparsetrain_fused``) variant, median over rounds, in two states:

- ``cold``: right after a masked-PyTorch step and forward, as in the interleaved
  benchmark (caches and thread pools hold the other variant's work),
- ``busy``: right after 11 ms of a Python busy loop that touches almost no memory (how
  much of ``cold`` is the core's state after any other work, not the masked step's data),
- ``warm``: after a step of the same variant.

It also times the whole step with the ReLU modules replaced by identities, which bounds
what fusing the activation into the sparse kernels could save, and with every numba kernel
(products, transpose, ReLU gradient) replaced by a call that does nothing: the floor that
no kernel can go below (PyTorch's autograd, loss, optimizer and the layers' own Python).
Below that, PyTorch's own floor: the same MLP whose layers are an autograd op that only
allocates its outputs and gradients, with parameters of the same sizes (no layer code of
ours at all).

    python benchmarks/sparse_step_profile.py --sparsities 0.9 0.99 0.999 --rounds 40
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
import sparse_mlp as bench  # noqa: E402


def _phases(var: bench.Variant, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Seconds of each phase of one training step of ``var``."""
    out: dict[str, float] = {}
    var.optimizer.zero_grad(set_to_none=True)
    h, start = x, time.perf_counter()
    for i, module in enumerate(var.model):
        h = module(h)
        now = time.perf_counter()
        out[f"forward {i} {type(module).__name__}"], start = now - start, now
    loss = F.cross_entropy(h, y)
    now = time.perf_counter()
    out["loss"], start = now - start, now
    loss.backward()
    now = time.perf_counter()
    out["backward"], start = now - start, now
    var.method.step()
    out["optimizer step"] = time.perf_counter() - start
    return out


class _Nothing(torch.autograd.Function):
    """A linear layer's autograd op that computes nothing: outputs and gradients are only allocated."""

    @staticmethod
    def forward(ctx, x, values, bias):  # noqa: ANN001, ANN205
        ctx.save_for_backward(x, values)
        return x.new_empty(x.shape[0], bias.shape[0])

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        x, values = ctx.saved_tensors
        gx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        return gx, torch.empty_like(values), grad.new_empty(grad.shape[1])


class NothingLinear(torch.nn.Module):
    """Parameters of a sparse layer's size (active values, bias) around `_Nothing`."""

    def __init__(self, n_in: int, n_out: int, density: float) -> None:
        super().__init__()
        self.values = torch.nn.Parameter(torch.zeros(max(1, round(n_in * n_out * density))))
        self.bias = torch.nn.Parameter(torch.zeros(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Nothing.apply(x, self.values, self.bias)


class PyTorchFloor:
    """The benchmark MLP with `NothingLinear` layers, ReLU, loss and SGD with momentum."""

    def __init__(self, sparsity: float) -> None:
        self.model = bench._mlp(lambda a, b: NothingLinear(a, b, 1.0 - sparsity))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.method = self.algo = None

    train_step = bench.Variant.train_step  # zero_grad, loss, backward, optimizer step


def profile(sparsity: float, rounds: int, variant: str = "sparsetrain") -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    x, y = bench._data()
    var, masked = bench.Variant(variant, sparsity), bench.Variant("masked", sparsity)
    no_relu = bench.Variant("sparsetrain", sparsity)
    for i, module in enumerate(no_relu.model):
        if isinstance(module, torch.nn.ReLU):
            no_relu.model[i] = torch.nn.Identity()
    floor = PyTorchFloor(sparsity)
    for v in (var, masked, no_relu, floor):
        for _ in range(3):
            v.train_step(x, y)
    samples: dict[str, dict[str, list[float]]] = {s: defaultdict(list) for s in STATES}
    steps: dict[str, list[float]] = defaultdict(list)
    for _ in range(rounds):
        masked.train_step(x, y)
        masked.infer(x)
        for state in ("cold", "warm", "busy"):
            if state == "busy":
                _busy(0.011)
            for name, seconds in _phases(var, x, y).items():
                samples[state][name].append(seconds)
        masked.train_step(x, y)
        steps["masked"].append(bench._timed(lambda: masked.train_step(x, y), 3))
        steps[variant].append(bench._timed(lambda: var.train_step(x, y), 3))
        masked.train_step(x, y)
        steps["sparsetrain, ReLU removed"].append(bench._timed(lambda: no_relu.train_step(x, y), 3))
        masked.train_step(x, y)
        with _kernels_doing_nothing():
            steps[f"{variant}, kernels doing nothing"].append(bench._timed(lambda: var.train_step(x, y), 3))
        masked.train_step(x, y)
        steps["PyTorch floor (layers that compute nothing)"].append(bench._timed(lambda: floor.train_step(x, y), 3))
    phases = {state: {name: statistics.median(v) * 1e3 for name, v in by_name.items()}
              for state, by_name in samples.items()}
    return phases, {name: statistics.median(v) for name, v in steps.items()}


STATES = ("cold", "busy", "warm")
KERNELS = ("spmm_serial", "spmm_parallel", "backward_serial", "backward_parallel",
           "transpose_serial", "transpose_parallel", "relu_grad")


@contextlib.contextmanager
def _kernels_doing_nothing():
    """Every numba kernel of a training step replaced by a no-op (outputs stay as allocated)."""
    from sparsetrain.backends import kernels
    saved = {name: getattr(kernels, name) for name in KERNELS}
    try:
        for name in KERNELS:
            setattr(kernels, name, lambda *args: None)
        yield
    finally:
        for name, kernel in saved.items():
            setattr(kernels, name, kernel)


def _busy(seconds: float) -> None:
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.99, 0.999])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variant", default="sparsetrain", choices=("sparsetrain", "sparsetrain_fused"))
    args = parser.parse_args(argv)
    bench._set_threads(args.threads)
    for sparsity in args.sparsities:
        phases, steps = profile(sparsity, args.rounds, args.variant)
        print(f"\n## sparsity {sparsity}: ms per phase (median of {args.rounds})\n")
        print("| phase | cold | after 11 ms busy loop | warm |\n|---|---|---|---|")
        for name in phases["cold"]:
            print(f"| {name} | " + " | ".join(f"{phases[s][name]:.3f}" for s in STATES) + " |")
        print("| total | " + " | ".join(f"{sum(phases[s].values()):.3f}" for s in STATES) + " |")
        print("\nms per step, 3 steps timed together after a masked step: "
              + ", ".join(f"{name} {ms:.3f}" for name, ms in steps.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
