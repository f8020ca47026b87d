"""Truly sparse MLP benchmark: ms per training step / inference forward, memory, bytes per weight.

MLP 3072-1024-512-10, ReLU, batch 100, SGD with momentum 0.9, every layer at the same
sparsity. Variants, interleaved round by round (so machine noise hits all of them alike),
median over the rounds:

- ``dense``: plain ``nn.Linear`` layers (no sparsity at all)
- ``masked``: masked PyTorch, ``F.linear(x, W * mask, b)`` (the baseline of the speedups)
- ``torch_csr``: the obvious torch.sparse CSR layer (`CSRLinear` below, ~60 lines)
- ``sparsetrain``: sparsetrain's ``sparse`` backend (Static method, uniform density)
- ``sparsetrain_fused``: the same with ``fuse_activations=True`` (ReLU folded into the kernels)
- ``sparselab``: the peer sparselab 0.2.2 ``SparseLinear`` when it is installed

Peak memory is the peak resident set size (sampled from /proc/self/statm every 0.5 ms)
above the baseline of a fresh subprocess while one variant is built and trained for 3 steps. Bytes per active weight count
the persistent tensors of the sparsified weights (values, indices, row pointers), their
optimizer state and the sparse method's own state (sparsetrain's ITOP record), divided by
the active weights. It also times one SET and one RigL update
of a 1024x3072 layer (optimizer state remap included).

    python benchmarks/sparse_mlp.py --rounds 20 --threads 2 --out docs/performance.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SIZES = (3072, 1024, 512, 10)
BATCH = 100
VARIANTS = ("dense", "masked", "torch_csr", "sparsetrain", "sparsetrain_fused", "sparselab")
EXTRA = ("sparsetrain_kernels", "sparsetrain_densepath")  # break-even scan: forced sparse / dense


# --- baselines --------------------------------------------------------------------------
class MaskedLinear(nn.Module):
    """Masked PyTorch: a dense weight multiplied by a fixed mask in every forward."""

    def __init__(self, n_in: int, n_out: int, density: float, gen: torch.Generator) -> None:
        super().__init__()
        layer = nn.Linear(n_in, n_out)
        self.weight, self.bias = layer.weight, layer.bias
        self.register_buffer("mask", (torch.rand(n_out, n_in, generator=gen) < density).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class _CSRMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values, crow, col, shape, x):  # noqa: ANN001
        w = torch.sparse_csr_tensor(crow, col, values.detach(), shape)
        ctx.save_for_backward(values, crow, col, x)
        ctx.shape = shape
        return torch.sparse.mm(w, x.t()).t()

    @staticmethod
    def backward(ctx, gy):  # noqa: ANN001
        values, crow, col, x = ctx.saved_tensors
        pattern = torch.sparse_csr_tensor(crow, col, torch.zeros_like(values), ctx.shape)
        gw = torch.sparse.sampled_addmm(pattern, gy.t().contiguous(), x).values()
        gx = None
        if ctx.needs_input_grad[4]:
            w = torch.sparse_csr_tensor(crow, col, values.detach(), ctx.shape)
            gx = torch.sparse.mm(w.t(), gy.t()).t()
        return gw, None, None, None, gx


class CSRLinear(nn.Module):
    """The obvious torch.sparse layer: CSR weight values as the parameter, MKL products."""

    def __init__(self, n_in: int, n_out: int, density: float, gen: torch.Generator) -> None:
        super().__init__()
        layer = nn.Linear(n_in, n_out)
        mask = torch.rand(n_out, n_in, generator=gen) < density
        csr = (layer.weight.detach() * mask).to_sparse_csr()
        self.values = nn.Parameter(csr.values().clone())
        self.register_buffer("crow", csr.crow_indices().clone())
        self.register_buffer("col", csr.col_indices().clone())
        self.bias = layer.bias
        self.shape = (n_out, n_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _CSRMatmul.apply(self.values, self.crow, self.col, self.shape, x) + self.bias


# --- the variants -----------------------------------------------------------------------
def _mlp(layer) -> nn.Module:  # noqa: ANN001
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(SIZES, SIZES[1:])):
        mods.append(layer(a, b))
        if i < len(SIZES) - 2:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


class Variant:
    """A model, its optimizer and the step function of one variant at one sparsity."""

    def __init__(self, name: str, sparsity: float, seed: int = 0) -> None:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        density = 1.0 - sparsity
        self.name, self.method, self.algo = name, None, None
        if name == "dense":
            self.model = _mlp(nn.Linear)
        elif name == "masked":
            self.model = _mlp(lambda a, b: MaskedLinear(a, b, density, gen))
        elif name == "torch_csr":
            self.model = _mlp(lambda a, b: CSRLinear(a, b, density, gen))
        elif name == "sparselab":
            import sparselab
            self.model = _mlp(lambda a, b: sparselab.SparseLinear(a, b, sparsity=sparsity))
            self.algo = sparselab.Static(sparsity=sparsity)
            self.model.apply(self.algo)
        elif name.startswith("sparsetrain"):
            self.model = _mlp(nn.Linear)
        else:
            raise ValueError(name)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        if name.startswith("sparsetrain"):
            import sparsetrain as st
            self.method = st.create("static", self.model, self.optimizer, density=density,
                                    distribution="uniform", backend="sparse", seed=seed,
                                    fuse_activations=name == "sparsetrain_fused")
            forced = {"sparsetrain_kernels": math.inf, "sparsetrain_densepath": 0.0}.get(name)
            for w in self.method.weights:
                if forced is not None:
                    w.module.break_even = forced

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(self.model(x), y).backward()
        if self.method is not None:
            self.method.step()
        else:
            self.optimizer.step()
            if self.algo is not None:
                self.algo.step()

    def infer(self, x: torch.Tensor) -> None:
        with torch.no_grad():
            self.model(x)

    def active_weights(self) -> int:
        if self.name in ("dense",):
            return sum(m.weight.numel() for m in self.model if isinstance(m, nn.Linear))
        if self.name == "masked":
            return sum(int(m.mask.sum()) for m in self.model if isinstance(m, MaskedLinear))
        if self.method is not None:
            return sum(w.active for w in self.method.weights)
        if self.name == "sparselab":
            return sum(m.nnz for m in self.model if hasattr(m, "nnz"))
        return sum(m.values.numel() for m in self.model if isinstance(m, CSRLinear))

    def weight_state_bytes(self) -> int:
        """Bytes of the weights' persistent tensors (not biases) plus their optimizer state and
        the tensors the sparse method keeps between steps (e.g. its ITOP record)."""
        tensors = list(_tensors(self.method.state_dict())) if self.method is not None else []
        for module in self.model:
            for name, t in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
                if name != "bias":
                    tensors.append(t)
                    for s in self.optimizer.state.get(t, {}).values():
                        if isinstance(s, torch.Tensor):
                            tensors.append(s)
            csr = getattr(module, "_csr", None)  # sparselab keeps its indices in C++
            if csr is not None:
                for attr in ("col_indices", "row_start", "row_nnz", "row_capacity"):
                    value = getattr(csr, attr, None)
                    if value is not None and hasattr(value, "nbytes"):
                        tensors.append(torch.from_numpy(value) if not isinstance(value, torch.Tensor) else value)
        return sum(t.numel() * t.element_size() for t in tensors)


def _tensors(state) -> list[torch.Tensor]:  # noqa: ANN001
    """Every tensor in a nested dict/list state."""
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        state = list(state.values())
    if isinstance(state, (list, tuple)):
        return [t for item in state for t in _tensors(item)]
    return []


def _data(seed: int = 0, batch: int = BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, SIZES[0], generator=gen), torch.randint(0, SIZES[-1], (batch,), generator=gen)


def _timed(fn, repeats: int) -> float:  # noqa: ANN001
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) * 1000 / repeats


def _set_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        import numba
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass


def _available(variants: list[str]) -> list[str]:
    out = []
    for v in variants:
        if v == "sparselab":
            try:
                import sparselab  # noqa: F401
            except Exception:  # not installed or broken build: skip the peer
                continue
        out.append(v)
    return out


# --- measurements ------------------------------------------------------------------------
def time_steps(variants: list[str], sparsities: list[float], rounds: int, repeats: int,
               batch: int = BATCH) -> dict:
    x, y = _data(batch=batch)
    built = {(v, s): Variant(v, s) for s in sparsities for v in variants}
    for var in built.values():  # warm-up: JIT compilation, allocator, first-touch
        for _ in range(3):
            var.train_step(x, y)
            var.infer(x)
    train = {k: [] for k in built}
    infer = {k: [] for k in built}
    for _ in range(rounds):
        for key, var in built.items():
            train[key].append(_timed(lambda: var.train_step(x, y), repeats))
            infer[key].append(_timed(lambda: var.infer(x), repeats))
    return {key: {"train_ms": statistics.median(train[key]), "infer_ms": statistics.median(infer[key]),
                  "active": built[key].active_weights(),
                  "bytes_per_active": built[key].weight_state_bytes() / max(built[key].active_weights(), 1)}
            for key in built}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _peak_memory_child(variant: str, sparsity: float, threads: int) -> None:
    """Peak resident memory above the baseline (after imports and data), sampled every
    0.5 ms by a thread while the variant is built and trained for 3 steps."""
    import threading
    _set_threads(threads)
    x, y = _data()
    if variant.startswith("sparsetrain"):  # compile the kernels first: JIT memory is not the model's
        Variant(variant, 0.99).train_step(x, y)
    baseline, peak, done = _rss_bytes(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    var = Variant(variant, sparsity)
    for _ in range(3):
        var.train_step(x, y)
    done.set()
    sampler.join()
    peak[0] = max(peak[0], _rss_bytes())
    print(json.dumps({"peak_mib": (peak[0] - baseline) / 2**20}))


def peak_memory(variant: str, sparsity: float, threads: int) -> float:
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import sparse_mlp; "
            f"sparse_mlp._peak_memory_child({variant!r}, {sparsity!r}, {threads})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"]


def time_updates(sparsities: list[float], repeats: int) -> dict:
    """One SET and one RigL update of a 1024x3072 layer, optimizer state remap included
    (the timed region is ``update_topology``); for RigL also the forming of the dense
    gradient it reads (``_dense_grads``, done once before the optimizer step), timed apart."""
    import sparsetrain as st
    out = {}
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 3072, generator=gen)
    for method in ("set", "rigl"):
        for sparsity in sparsities:
            times, grad_times = [], []
            for r in range(repeats):
                torch.manual_seed(r)
                model = nn.Sequential(nn.Linear(3072, 1024))
                opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
                m = st.create(method, model, opt, density=1 - sparsity, distribution="uniform",
                              backend="sparse", total_steps=1000, update_interval=1, drop_fraction=0.3)
                opt.zero_grad()
                model(x).square().mean().backward()
                start = time.perf_counter()
                grads = m._dense_grads() if m.needs_dense_grad else {}
                grad_times.append((time.perf_counter() - start) * 1000)
                opt.step()
                start = time.perf_counter()
                m.update_topology(grads)
                times.append((time.perf_counter() - start) * 1000)
            out[(method, sparsity)] = statistics.median(times)
            out[(method + "_grad", sparsity)] = statistics.median(grad_times)
    return out


# --- report ------------------------------------------------------------------------------
def _fmt(v: float) -> str:
    return f"{v:.2f}" if v >= 0.995 else f"{v:.3f}"


def _speedup_table(title: str, key: str, fmt: str, sparsities: list[float], variants: list[str],
                   steps: dict) -> list[str]:
    """Markdown lines: ``key`` (ms) of every variant per sparsity, then its speedup over masked."""
    lines = [f"## {title} (ms) and speedup over masked PyTorch", "",
             "| sparsity | " + " | ".join(variants) + " | "
             + " | ".join(f"{v} speedup" for v in variants if v != "masked") + " |",
             "|---" * (2 * len(variants)) + "|"]
    for s in sparsities:
        base = steps[("masked", s)][key]
        row = [fmt.format(steps[(v, s)][key]) for v in variants]
        row += [f"{base / steps[(v, s)][key]:.2f}x" for v in variants if v != "masked"]
        lines.append(f"| {s} | " + " | ".join(row) + " |")
    return lines


def report(args: argparse.Namespace, variants: list[str], steps: dict, memory: dict, updates: dict) -> str:
    lines = ["# Performance: truly sparse execution", "",
             f"Command: `python benchmarks/sparse_mlp.py {' '.join(args.argv)}`", "",
             machine_line(args.threads),
             f"MLP {'-'.join(map(str, SIZES))}, ReLU, batch {args.batch}, SGD momentum 0.9, uniform sparsity, "
             f"variants interleaved, median of {args.rounds} rounds x {args.repeats} steps.", ""]
    lines += _speedup_table("Training step", "train_ms", "{:.2f}", args.sparsities, variants, steps)
    lines += [""] + _speedup_table("Inference forward", "infer_ms", "{:.3f}", args.sparsities, variants, steps)
    lines += ["", "## Bytes per active weight (weights, indices, row pointers, optimizer state, the sparse method's own state such as its ITOP record; biases excluded)", "",
              "| sparsity | " + " | ".join(variants) + " |", "|---" * (len(variants) + 1) + "|"]
    for s in args.sparsities:
        lines.append(f"| {s} | " + " | ".join(f"{steps[(v, s)]['bytes_per_active']:.1f}" for v in variants) + " |")
    lines.append("")
    lines.append("sparselab keeps its indices in C++ (`PaddedCSR`); its bytes count only what Python can see.")
    if memory:
        lines += ["", "## Peak memory (MiB): peak RSS above baseline (sampled /proc/self/statm) while building and training 3 steps, fresh process", "",
                  "| sparsity | " + " | ".join(variants) + " |", "|---" * (len(variants) + 1) + "|"]
        for s in args.sparsities:
            lines.append(f"| {s} | " + " | ".join(f"{memory[(v, s)]:.1f}" for v in variants) + " |")
    if updates:
        lines += ["", "## One topology update of a 1024x3072 layer (ms, optimizer state remap included)", "",
                  "| sparsity | SET | RigL | RigL dense gradient (apart) | sparsetrain train step of the MLP |",
                  "|---|---|---|---|---|"]
        for s in args.update_sparsities:
            step = steps.get(("sparsetrain", s), {}).get("train_ms", float("nan"))
            lines.append(f"| {s} | {updates[('set', s)]:.2f} | {updates[('rigl', s)]:.2f} | "
                         f"{updates[('rigl_grad', s)]:.2f} | {step:.2f} |")
    lines += ["", "Speedups are ratios within this one run. The sparse backend switches a layer to dense "
              f"kernels above density {_break_even(args.batch):.3g} at batch {args.batch} (its break-even).", ""]
    return "\n".join(lines)


def machine_line(threads: int) -> str:
    """The report line naming the machine, thread count, torch version and time."""
    return (f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
            f"{threads} threads; torch {torch.__version__}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.")


def write_report(text: str, out: str) -> None:
    """Write the markdown report to ``out`` and print it."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text, encoding="utf-8")
    print(text)


def _break_even(batch: int) -> float:
    from sparsetrain.backends.sparse import BREAK_EVEN, batch_scale
    return BREAK_EVEN * batch_scale(batch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="steps timed together per round")
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.8, 0.9, 0.95, 0.99, 0.999])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS + EXTRA,
                        help="sparsetrain_kernels / sparsetrain_densepath force the sparse kernels / the "
                             "dense fallback (to measure the break-even density)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=BATCH,
                        help="batch of the step and inference timings (the update timing keeps 100)")
    parser.add_argument("--update-sparsities", type=float, nargs="*", default=[0.9, 0.99],
                        help="sparsities of the SET/RigL update timing (none: skip it)")
    parser.add_argument("--update-repeats", type=int, default=9,
                        help="fresh layers per update timing (their median: parallel regions "
                             "now and then stall for milliseconds on a shared VM)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--out", default="docs/performance.md")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    _set_threads(args.threads)
    variants = _available(args.variants)
    if "masked" not in variants:
        parser.error("the masked variant is the baseline of every speedup; keep it in --variants")
    steps = time_steps(variants, args.sparsities, args.rounds, args.repeats, args.batch)
    for s in args.update_sparsities:  # the update table compares with the train step at s
        if ("sparsetrain", s) not in steps and "sparsetrain" in variants:
            steps.update(time_steps(["sparsetrain"], [s], args.rounds, args.repeats, args.batch))
    updates = time_updates(args.update_sparsities, args.update_repeats) if "sparsetrain" in variants else {}
    memory = {} if args.no_memory else {(v, s): peak_memory(v, s, args.threads)
                                        for s in args.sparsities for v in variants}
    write_report(report(args, variants, steps, memory, updates), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
