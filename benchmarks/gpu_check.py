"""The GPU check (issue 18, item 7): one prepared script that proves the CUDA path and measures it.

    PYTHONPATH=src python benchmarks/gpu_check.py                      # on one GPU: writes docs/gpu.md
    PYTHONPATH=src python benchmarks/gpu_check.py --device cpu --quick # a dry run of every section here

Sections, each timed and recorded as passed or FAILED (a failure never stops the others):
  1. the device-parametrized tests (``pytest --device cuda``: every method on the masked and
     the sparse backend, attacks, corruption evaluation, precision and speed options);
  2. every registered method a few steps on the masked backend on the device (density kept);
  3. the sparse backend's torch CSR path on the device (training, and inference equal to masked);
  4. PGD attacks and corruption evaluation on the device;
  5. torch.compile (inductor) sees mask changes;
  6. ResNet-18 (CIFAR form, batch 128) training throughput, dense vs masked RigL at 90%
     sparsity, fp32 and bf16 (and bf16 channels-last): the cost of masking as a ratio;
  7. 2:4 semi-structured inference vs dense for a large Linear stack.
The whole check is sized to run in under 8 minutes on one H200. A run on a machine without
CUDA prints its report but never writes docs/gpu.md unless ``--allow-cpu`` is given (CPU
numbers must not pass for GPU numbers).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
DEVICE_TESTS = ["tests/conformance/test_methods.py", "tests/conformance/test_methods_on_sparse_backend.py",
                "tests/unit/scenarios/test_attacks.py", "tests/unit/scenarios/test_corruption_eval.py",
                "tests/unit/engine/test_precision.py", "tests/unit/engine/test_speed_options.py"]
TESTS_TIMEOUT_S = 300
"""The device tests' share of the check's 8 minutes (the other sections take about 2 on an H200)."""
QUICK_TEST = "tests/unit/engine/test_precision.py::test_fp16_step_skipped_by_the_grad_scaler_leaves_everything_untouched"


@dataclasses.dataclass
class Check:
    device: torch.device
    quick: bool
    budget_s: float
    started: float = dataclasses.field(default_factory=time.perf_counter)
    lines: list[str] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)

    def section(self, title: str, run: Callable[["Check"], list[str]]) -> None:
        """Run one section, recording its lines, its time, and any failure (never raised)."""
        self.lines += [f"## {title}", ""]
        if time.perf_counter() - self.started > self.budget_s:
            self.lines += [f"SKIPPED: the check's time budget ({self.budget_s:.0f} s) is spent.", ""]
            self.failures.append(f"{title}: skipped")
            return
        began = time.perf_counter()
        try:
            body = run(self)
            status = "passed"
        except Exception as exc:  # a broken section is a result of the check, not its end
            body = [f"FAILED: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"]
            status = "FAILED"
            self.failures.append(title)
        self.lines += body + ["", f"_{status} in {time.perf_counter() - began:.1f} s_", ""]
        print(f"[{time.perf_counter() - self.started:6.1f}s] {title}: {status}", file=sys.stderr, flush=True)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


# --- 1. the device-parametrized tests ----------------------------------------------------
def device_tests(check: Check) -> list[str]:
    targets = [QUICK_TEST] if check.quick else DEVICE_TESTS
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--device", str(check.device), *targets]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TESTS_TIMEOUT_S)
    tail = [line for line in done.stdout.strip().splitlines() if line.strip()][-8:]
    if done.returncode != 0:
        raise RuntimeError(f"pytest --device {check.device} exited {done.returncode}: " + " | ".join(tail[-3:]))
    return [f"`pytest --device {check.device} {' '.join(targets)}`", "", "```", *tail, "```"]


# --- 2. every method on the masked backend ----------------------------------------------
def toy(device: torch.device):
    from sparsetrain.data import DatasetSplits, TensorData

    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 1, 12, generator=g)
    y = (x.sum(dim=(1, 2)) > 0).long() + (x[:, 0, 0] > 1).long()
    part = lambda a, b: TensorData(x[a:b], y[a:b])  # noqa: E731
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(60, 16), nn.ReLU(), nn.Linear(16, 3))
    return model, DatasetSplits("toy", part(0, 64), part(64, 80), part(80, 96), 3, (1, 12))


def method_config(name: str, **extra):
    from sparsetrain.algorithms import config_class
    from sparsetrain.config import from_dict

    cls = config_class(name)
    names = {f.name for f in dataclasses.fields(cls)}
    wanted = {"density": 0.3, "update_interval": 3, "drop_fraction": 0.5, "min_kernel": 3, **extra}
    return from_dict(cls, {k: v for k, v in wanted.items() if k in names})


def train_toy(name: str, device: torch.device, epochs: int = 2, **extra):
    from sparsetrain.engine import TrainConfig, Trainer

    model, data = toy(device)
    config = TrainConfig(epochs=epochs, batch_size=16, lr=0.05, device=str(device))
    trainer = Trainer(model, data, config, method=name, method_config=method_config(name, **extra), seed=3)
    return trainer, trainer.fit()


def every_method(check: Check) -> list[str]:
    from sparsetrain.algorithms import METHODS

    names = METHODS.names()[:3] if check.quick else METHODS.names()
    rows, bad = ["| method | final train loss | density | weights on | ok |", "|---|---|---|---|---|"], []
    for name in names:
        try:
            trainer, history = train_toy(name, check.device)
            weights = {p.device.type for p in trainer.model.parameters()}
            method = trainer.method
            exact = (not hasattr(method, "current_targets")
                     or {w.name: w.active for w in method.weights} == method.current_targets())
            finite = torch.isfinite(torch.tensor(history[-1]["train_loss"])).item()
            ok = finite and weights == {check.device.type} and exact
            rows.append(f"| {name} | {history[-1]['train_loss']:.4f} | {trainer.method.density():.4f} | "
                        f"{','.join(sorted(weights))} | {'yes' if ok else 'NO'} |")
        except Exception as exc:  # one method's failure is a row, not the end of the table
            ok = False
            rows.append(f"| {name} | FAILED: {type(exc).__name__}: {str(exc)[:120]} | | | NO |")
        if not ok:
            bad.append(name)
    if bad:
        check.failures.append("methods: " + ", ".join(bad))
    return [f"{len(names)} methods, 2 epochs of a 1D CNN on toy data (density 0.3) on `{check.device}`:", "", *rows]


# --- 3. the sparse backend ---------------------------------------------------------------
def sparse_backend(check: Check) -> list[str]:
    from sparsetrain.backends import to_sparse
    from sparsetrain.backends.sparse import SparseLayer

    lines = []
    for name in ("static", "rigl"):
        trainer, history = train_toy(name, check.device, backend="sparse")
        layers = [m for m in trainer.model.modules() if isinstance(m, SparseLayer)]
        if not layers or not torch.isfinite(torch.tensor(history[-1]["train_loss"])):
            raise RuntimeError(f"{name} on the sparse backend: {len(layers)} sparse layers, loss {history[-1]['train_loss']}")
        lines.append(f"- {name}, backend=sparse: {len(layers)} sparse layers on "
                     f"{layers[0].values.device}, final train loss {history[-1]['train_loss']:.4f}, "
                     f"density {trainer.method.density():.4f}")
    trainer, _ = train_toy("rigl", check.device)
    x = trainer.data.test.x.to(check.device)
    trainer.model.eval()
    with torch.no_grad():
        masked = trainer.model(x)
        to_sparse(trainer.model)
        sparse = trainer.model(x)
    diff = float((masked - sparse).abs().max())
    if diff > 1e-4:
        raise RuntimeError(f"sparse inference differs from masked by {diff:g}")
    return lines + [f"- inference of a RigL model converted by `to_sparse`: max |masked - sparse| = {diff:.2e}"]


# --- 4. attacks and corruptions ----------------------------------------------------------
def attacks_and_corruptions(check: Check) -> list[str]:
    from sparsetrain.data import TensorData
    from sparsetrain.scenarios.adversarial import pgd
    from sparsetrain.scenarios.evaluation import corruption_accuracy

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 16 * 16, 5)).to(check.device)
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(32, 3, 16, 16, generator=g), torch.randint(0, 5, (32,), generator=g)
    lines = []
    for norm, eps in (("linf", 8 / 255), ("l2", 0.5)):
        xd, yd = x.to(check.device), y.to(check.device)
        adv = pgd(model, xd, yd, eps=eps, step_size=eps / 4, steps=10, norm=norm, restarts=1,
                  generator=torch.Generator().manual_seed(0))
        delta = (adv - xd).flatten(1)
        size = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
        model.eval()
        with torch.no_grad():
            clean = F.cross_entropy(model(xd), yd)
            robust = F.cross_entropy(model(adv), yd)
        if adv.device.type != check.device.type or not (size <= eps + 1e-5).all() or robust < clean:
            raise RuntimeError(f"PGD {norm} on {adv.device}: max size {float(size.max()):g}, loss {float(clean):.4f} -> {float(robust):.4f}")
        lines.append(f"- PGD-10 {norm} eps {eps:.4f} on {adv.device}: loss {float(clean):.4f} -> {float(robust):.4f}, inside the ball")
    corruptions = ("gaussian_noise", "fog") if check.quick else ("gaussian_noise", "fog", "contrast", "pixelate")
    result = corruption_accuracy(model, TensorData(x, y), corruptions=corruptions, severities=(1, 5))
    accs = [a for v in result.accuracy.values() for a in v]
    if not all(0 <= a <= 1 for a in accs):
        raise RuntimeError(f"corruption accuracies out of range: {accs}")
    return lines + [f"- corruption accuracy ({', '.join(corruptions)}, severities 1 and 5) on the model on "
                    f"{check.device}: clean {result.clean:.3f}, " + ", ".join(f"{k} {v[0]:.3f}/{v[1]:.3f}"
                                                                    for k, v in result.accuracy.items())]


# --- 5. torch.compile -------------------------------------------------------------------
def compiled_masks(check: Check) -> list[str]:
    import sparsetrain as st
    from sparsetrain.engine.precision import compile_model

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 8 * 8, 10)).to(check.device)
    sparsifier = st.create("static", model, torch.optim.SGD(model.parameters(), lr=0.1), density=0.5)
    backend = "aot_eager" if check.quick else "inductor"
    compile_model(model, backend=backend)
    x = torch.randn(8, 3, 8, 8, device=check.device)
    with torch.no_grad():
        before = model(x)
    layer = sparsifier.weights[0]
    layer.set_mask(layer.mask & (torch.arange(layer.numel, device=layer.mask.device).reshape(layer.shape) % 3 == 0))
    with torch.no_grad():
        after, eager = model(x), model.forward(x)
    diff = float((after - eager).abs().max())
    if torch.allclose(after, before) or diff > 1e-4:
        raise RuntimeError(f"compiled output did not follow the mask change (|compiled - eager| = {diff:g})")
    return [f"- torch.compile (backend {backend}) on {check.device}: after a mask change the compiled output "
            f"follows the eager one (max difference {diff:.2e})"]


# --- 6. ResNet-18 throughput --------------------------------------------------------------
def throughput(check: Check) -> list[str]:
    import sparsetrain as st
    from sparsetrain.engine.precision import Precision, to_channels_last

    arch, batch, size, warmup, steps = ("resnet20", 8, 8, 1, 2) if check.quick else ("resnet18", 128, 32, 10, 100)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g).to(check.device)
    y = torch.randint(0, 10, (batch,), generator=g).to(check.device)
    setups = [("fp32", False), ("bf16", False), ("bf16", True)]
    results: dict[tuple[str, bool, str], float] = {}
    for precision_name, channels_last in setups:
        for method in ("dense", "rigl"):
            torch.manual_seed(0)
            model = st.models.create(arch, num_classes=10).to(check.device)
            opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
            options = {} if method == "dense" else {"density": 0.1, "distribution": "erk", "update_interval": 100}
            sparsifier = st.create(method, model, opt, total_steps=10_000, **options)
            if channels_last:
                to_channels_last(model)
            precision = Precision(precision_name, check.device)
            for i in range(warmup + steps):
                if i == warmup:
                    check.sync()
                    began = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                with precision.autocast():
                    loss = F.cross_entropy(model(x), y)
                precision.backward(loss)
                precision.step(sparsifier, opt)
            check.sync()
            results[(precision_name, channels_last, method)] = steps * batch / (time.perf_counter() - began)
    rows = [f"{arch} (CIFAR form), batch {batch}, {size}x{size} random inputs on the device, SGD with momentum, "
            f"{warmup} warm-up then {steps} timed steps (RigL: ERK at density 0.1, ΔT = 100"
            + (", so the timed window holds one topology update" if warmup + steps > 100 else "")
            + "); masked backend; torch's default TF32 settings (cuDNN convolutions TF32, matmuls fp32).", "",
            "| precision | layout | dense samples/s | RigL 90% samples/s | masked / dense |", "|---|---|---|---|---|"]
    for precision_name, channels_last in setups:
        dense, rigl = (results[(precision_name, channels_last, m)] for m in ("dense", "rigl"))
        rows.append(f"| {precision_name} | {'channels-last' if channels_last else 'default'} | {dense:,.0f} | "
                    f"{rigl:,.0f} | {rigl / dense:.2f} |")
    return rows


# --- 7. 2:4 semi-structured ---------------------------------------------------------------
def two_four_mask(weight: torch.Tensor) -> torch.Tensor:
    """The 2 largest |w| of every group of 4 along the fan-in (magnitude 2:4 pruning)."""
    groups = weight.abs().reshape(weight.shape[0], -1, 4)
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, groups.topk(2, dim=-1).indices, True)
    return keep.reshape(weight.shape)


def semi_structured_bench(check: Check) -> list[str]:
    import sparsetrain as st
    from sparsetrain.backends.semi_structured import eligibility
    from sparsetrain.errors import UserError

    width, depth, tokens, reps = (128, 2, 64, 2) if check.quick else (8192, 4, 8192, 20)
    torch.manual_seed(0)
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    model = nn.Sequential(*layers[:-1])
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.mul_(two_four_mask(m.weight))
    eligible = [n for n, why in eligibility(model).items() if why is None]
    lines = [f"Linear stack: {depth} x Linear({width}, {width}) with ReLU, magnitude 2:4 masks, "
             f"{tokens} inputs; eligible layers: {len(eligible)} of {depth}.", ""]
    if check.device.type != "cuda":
        try:
            st.semi_structured(model)
        except UserError as exc:
            return lines + [f"- refused as it must be here: {exc}"]
        raise RuntimeError("semi_structured did not refuse a model off the GPU")
    rows = ["| dtype | dense ms | 2:4 ms | speed-up | max rel. difference |", "|---|---|---|---|---|"]
    for dtype in (torch.float16, torch.bfloat16):
        dense_model = model.to(check.device, dtype).eval()
        x = torch.randn(tokens, width, device=check.device, dtype=dtype)
        sparse_model = __import__("copy").deepcopy(dense_model)
        converted = st.semi_structured(sparse_model)
        times = {}
        with torch.inference_mode():
            for label, net in (("dense", dense_model), ("2:4", sparse_model)):
                for _ in range(3):
                    out = net(x)
                check.sync()
                began = time.perf_counter()
                for _ in range(reps):
                    out = net(x)
                check.sync()
                times[label] = (time.perf_counter() - began) / reps * 1000
            reference, result = dense_model(x).float(), sparse_model(x).float()
        rel = float((result - reference).abs().max() / reference.abs().max())
        if not converted or rel > 0.05:
            raise RuntimeError(f"{dtype}: {len(converted)} layers converted, outputs differ from dense by {rel:.1e} (relative)")
        rows.append(f"| {str(dtype).split('.')[-1]} ({len(converted)} layers) | {times['dense']:.2f} | "
                    f"{times['2:4']:.2f} | {times['dense'] / times['2:4']:.2f}x | {rel:.1e} |")
    return lines + rows


SECTIONS = {"tests": ("Device-parametrized tests", device_tests),
            "methods": ("Every method on the masked backend", every_method),
            "sparse": ("The sparse backend (torch CSR path)", sparse_backend),
            "robustness": ("Attacks and corruption evaluation", attacks_and_corruptions),
            "compile": ("torch.compile sees mask changes", compiled_masks),
            "throughput": ("Training throughput: the cost of masking", throughput),
            "semi": ("2:4 semi-structured inference", semi_structured_bench)}


def environment(device: torch.device) -> list[str]:
    where = (f"{torch.cuda.get_device_name(device)} (compute capability "
             f"{'.'.join(map(str, torch.cuda.get_device_capability(device)))})" if device.type == "cuda" else
             f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)")
    return [f"- device: `{device}`, {where}", f"- torch {torch.__version__}, CUDA {torch.version.cuda}, "
            f"Python {platform.python_version()}", f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu [default: cuda]")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a dry run of every section")
    parser.add_argument("--doc", default=str(ROOT / "docs" / "gpu.md"), help="markdown written [default: docs/gpu.md]")
    parser.add_argument("--allow-cpu", action="store_true", help="write --doc even from a run without CUDA")
    parser.add_argument("--budget-s", type=float, default=420.0, help="start no section after this many seconds")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda, but torch sees no CUDA device here; use --device cpu --quick for a dry run",
              file=sys.stderr)
        return 2
    chosen = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SECTIONS]
    if unknown or not chosen:
        print(f"gpu_check: --sections takes names among {', '.join(SECTIONS)}; got {args.sections!r}", file=sys.stderr)
        return 2
    check = Check(device, args.quick, args.budget_s)
    for name in chosen:
        check.section(*SECTIONS[name])
    total = time.perf_counter() - check.started
    head = ["# The GPU check", "", f"Command: `PYTHONPATH=src python benchmarks/gpu_check.py"
            f"{' --device ' + args.device if args.device != 'cuda' else ''}{' --quick' if args.quick else ''}"
            f"{' --sections ' + args.sections if len(chosen) < len(SECTIONS) else ''}`", "",
            *environment(device), f"- total time: {total:.0f} s",
            f"- result: {'every section passed' if not check.failures else 'FAILED: ' + '; '.join(check.failures)}", ""]
    if device.type != "cuda":
        head.insert(2, "**A CPU run: these are not GPU numbers.**\n")
    text = "\n".join(head + check.lines)
    print(text)
    if device.type != "cuda" and not args.allow_cpu:
        print(f"gpu_check: a run without CUDA does not write {args.doc} (give --allow-cpu to write it anyway)",
              file=sys.stderr)
    else:
        Path(args.doc).write_text(text)
        print(f"gpu_check: wrote {args.doc}", file=sys.stderr)
    return 1 if check.failures else 0


if __name__ == "__main__":
    sys.exit(main())
