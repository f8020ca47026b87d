"""What channel-level sparsity buys on this CPU: Chase-shrunk CNNs against dense and masked ones.

    PYTHONPATH=src python benchmarks/structured.py                 # full: both parts, writes the doc
    PYTHONPATH=src python benchmarks/structured.py --quick         # minutes: small batch, 1 seed, 3 epochs
    PYTHONPATH=src python benchmarks/structured.py --part speed    # or --part accuracy

Part 1, speed: VGG-16 and ResNet-18 in their CIFAR form (10 classes, 3x32x32), batch 128,
``--threads`` (2) threads. Variants of each model:

- ``dense``: the plain model;
- ``masked 90%``: the masked backend at density 0.1 (ERK), as every unstructured method trains;
  its training step includes the method's step (mask the gradients, step, re-apply the masks);
- ``chase Sc=s, beta=b`` (``--chase``, default ``0.3:0.2,0.5:0.2,0.5:0.5,0.5:1``): the model
  after Chase (density 0.1) removed the fraction Sc of its prunable channels with the per-layer
  floor int(out (1 - Sc) beta), shrunk by ``st.shrink`` into a smaller dense model; timed as a
  plain dense model (its training step: forward, backward, SGD step). beta = 0.2 is the
  reference's VGG-19 script (our default), 0.5 its ResNet-50 script and argparse default, and
  beta = 1 makes the floor (1 - Sc) of every layer, so each layer loses exactly Sc of its
  channels. Which channels go follows Chase's own rule (global ranking by mean |w| of the
  filter, then the floors), applied to the initialized model (or after ``--structure-steps``
  training steps on random inputs with the channel schedule compressed into them), up to
  exactly Sc: the layer widths, not the weight values, decide the time, and a CIFAR-trained
  Chase model may keep other layers wide.

Each round times every variant once (inference: one eval-mode forward under inference_mode;
training: one step), in an order rotated by the round; the tables give the median over the
rounds and the median of the per-round ratios to dense (so a busy moment hits every variant
of a round alike). The machine's load average is recorded before and after.

Part 2, accuracy: dense, RigL and Chase (``--accuracy-chase``: Sc 0.5 with beta 0.2, 0.5 and 1)
at density 0.1 on MNIST-1D with the 1D CNN, the quickstart's training settings (``sparsetrain.quickstart.SETTINGS``: SGD lr 0.1,
momentum 0.9, wd 5e-4, batch 64, cosine, 60 epochs), ERK, update every 25 steps for both
sparse methods (RigL: the quickstart's drop fraction 0.3 until 75%; Chase: its reference
schedule), ``--seeds`` seeds, mean ± std of the final test accuracy; one torch thread. Runs go to the results
store under ``--out`` (a second call skips finished runs).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

import sparsetrain as st
from sparsetrain import analysis

MODELS = ("vgg16", "resnet18")
DENSITY = 0.1
SPEED_CHASE = "0.3:0.2,0.5:0.2,0.5:0.5,0.5:1"
ACCURACY_CHASE = "0.5:0.2,0.5:0.5,0.5:1"
"""Chase settings ``Sc:beta`` (channel sparsity, per-layer floor) of each part."""


def parse_chase(text: str) -> tuple[tuple[float, float], ...]:
    """``"0.5:0.2,0.5:1"`` -> ((0.5, 0.2), (0.5, 1.0))."""
    pairs = []
    for item in text.split(","):
        sc, _, beta = item.partition(":")
        pairs.append((float(sc), float(beta or 0.2)))
    return tuple(pairs)


def chase_label(sc: float, beta: float) -> str:
    return f"Sc={sc:g}, beta={beta:g}"


# --- part 1: speed ----------------------------------------------------------------------------
def chase_structure(name: str, sc: float, beta: float, steps: int, batch: int,
                    seed: int = 0) -> tuple[nn.Module, Any]:
    """``name`` after Chase at density 0.1 removed the fraction ``sc`` of its prunable channels
    with floor ``beta`` (``steps`` training steps on random inputs, then topped up to exactly ``sc``)."""
    torch.manual_seed(seed)
    model = st.models.create(name, num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    chase = st.create("chase", model, opt, density=DENSITY, channel_sparsity=sc, channel_floor=beta,
                      total_steps=max(steps, 2), update_interval=2, channel_interval=1, seed=seed)
    g = torch.Generator().manual_seed(seed)
    model(torch.randn(1, 3, 32, 32, generator=g))  # finds the prunable channels
    for _ in range(steps):
        x, y = torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        chase.step()
    chase.prune_channels(sc)
    return model.eval(), chase


def shrunk(model: nn.Module) -> nn.Module:
    """The channel-masked model as a smaller dense one."""
    return st.shrink(model, (3, 32, 32))


class Variant:
    """A model with its optimizer (and method) for timing inference and a training step."""

    def __init__(self, label: str, model: nn.Module, method: Callable[[nn.Module, Any], Any] | None = None) -> None:
        self.label = label
        self.model = model
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        self.method = method(model, self.optimizer) if method else None
        rows = analysis.layer_table(model, (3, 32, 32))
        self.params = sum(p.numel() for p in model.parameters())
        self.flops = analysis.totals(rows)["dense_flops"]
        self.infer_s: list[float] = []
        self.train_s: list[float] = []

    def infer(self, x: torch.Tensor) -> float:
        self.model.eval()
        with torch.inference_mode():
            started = time.perf_counter()
            self.model(x)
            return time.perf_counter() - started

    def train(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.model.train()
        started = time.perf_counter()
        self.optimizer.zero_grad()
        F.cross_entropy(self.model(x), y).backward()
        (self.method or self.optimizer).step()
        return time.perf_counter() - started


def variants_for(name: str, args: argparse.Namespace, log: Callable[[str], None]) -> list[Variant]:
    torch.manual_seed(0)
    out = [Variant("dense", st.models.create(name, num_classes=10)),
           Variant("masked 90% (unstructured)", st.models.create(name, num_classes=10),
                   lambda m, opt: st.create("static", m, opt, density=DENSITY))]
    for sc, beta in args.chase:
        started = time.perf_counter()
        masked, chase = chase_structure(name, sc, beta, args.structure_steps, args.structure_batch)
        small = shrunk(masked)
        kept = sum(a for a, _ in chase.channel_counts().values())
        total = sum(b for _, b in chase.channel_counts().values())
        log(f"{name} {chase_label(sc, beta)}: {kept}/{total} prunable channels left, "
            f"{small.shrink_summary.params_before:,} -> {small.shrink_summary.params_after:,} parameters "
            f"({time.perf_counter() - started:.0f} s)")
        variant = Variant(f"chase {chase_label(sc, beta)}, shrunk", small)
        variant.widths = {k: v for k, v in chase.channel_counts().items()}  # type: ignore[attr-defined]
        out.append(variant)
    return out


def time_model(name: str, args: argparse.Namespace, log: Callable[[str], None]) -> list[Variant]:
    variants = variants_for(name, args, log)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(args.batch, 3, 32, 32, generator=g), torch.randint(0, 10, (args.batch,), generator=g)
    for v in variants:  # warm-up: allocator, oneDNN primitives
        v.infer(x)
        v.train(x, y)
    for r in range(args.rounds):
        shift = r % len(variants)
        for v in variants[shift:] + variants[:shift]:
            v.infer_s.append(v.infer(x))
            v.train_s.append(v.train(x, y))
        log(f"{name} round {r + 1}/{args.rounds}: " + ", ".join(
            f"{v.label.split(',')[0]} {1000 * v.infer_s[-1]:.0f}/{1000 * v.train_s[-1]:.0f} ms" for v in variants))
    return variants


def median_ratio(dense_s: list[float], times_s: list[float]) -> float:
    """Median over the rounds of dense's time / the variant's time in the same round."""
    return statistics.median(d / t for d, t in zip(dense_s, times_s))


def speed_ratios(variants: list[Variant]) -> dict[str, float]:
    """Variant label -> its inference speed-up over dense (`median_ratio`)."""
    return {v.label: median_ratio(variants[0].infer_s, v.infer_s) for v in variants}


def speed_table(name: str, variants: list[Variant]) -> list[str]:
    dense = variants[0]
    lines = [f"### {name} (batch {{batch}})", "",
             "| variant | parameters | FLOPs / sample | inference ms (median) | speed-up vs dense | "
             "training step ms (median) | speed-up vs dense |", "|---|---|---|---|---|---|---|"]
    ratios = speed_ratios(variants)
    for v in variants:
        train_ratio = median_ratio(dense.train_s, v.train_s)
        lines.append(f"| {v.label} | {v.params:,} | {v.flops / 1e6:,.0f} M | {1000 * statistics.median(v.infer_s):,.0f} | "
                     f"{ratios[v.label]:.2f}x | {1000 * statistics.median(v.train_s):,.0f} | {train_ratio:.2f}x |")
    met = [label for label, r in ratios.items() if label.startswith("chase") and r >= 1.5]
    lines += ["", "Target (a Chase-shrunk model infers at least 1.5x faster than dense): "
              + (f"met by {', '.join(met)}." if met else "not met by any Chase setting.") + " Per setting: "
              + "; ".join(f"{label.removeprefix('chase ').removesuffix(', shrunk')} {r:.2f}x"
                          for label, r in ratios.items() if label.startswith("chase")) + "."]
    widths = [v for v in variants if hasattr(v, "widths")]
    if widths:
        lines += ["", "Channels left per prunable layer (of the original):", ""]
        for v in widths:
            lines.append(f"- {v.label}: " + ", ".join(f"{k.removesuffix('.weight')} {a}/{b}"
                                                      for k, (a, b) in v.widths.items()))
    return lines


# --- part 2: accuracy -------------------------------------------------------------------------
def accuracy_configs(epochs: int, chase: tuple[tuple[float, float], ...]) -> list[tuple[str, dict]]:
    from sparsetrain.quickstart import SETTINGS

    base = {**SETTINGS, "epochs": epochs}
    sparse = {"density": DENSITY, "distribution": "erk", "update_interval": 25}
    rows = [("dense", {**base, "method": "dense"}),
            ("RigL", {**base, **sparse, "method": "rigl", "drop_fraction": 0.3, "stop_fraction": 0.75})]
    rows += [(f"Chase {chase_label(sc, beta)}",
              {**base, **sparse, "method": "chase", "channel_sparsity": sc, "channel_floor": beta})
             for sc, beta in chase]
    return rows


def accuracy(args: argparse.Namespace, log: Callable[[str], None]) -> tuple[list[str], dict]:
    from sparsetrain.engine import Callback
    from sparsetrain.experiments import ResultsStore, build_spec, run

    class Final(Callback):
        """The trained model's channel counts and shrunk size (when the run trains now)."""

        def __init__(self) -> None:
            self.found: dict[str, Any] = {}

        def on_fit_end(self, trainer) -> None:  # noqa: ANN001
            counts = getattr(trainer.method, "channel_counts", None)
            if counts is None:
                return
            small = st.shrink(trainer.model, tuple(trainer.data.input_shape))
            self.found = {"channels": counts(), "params": (small.shrink_summary.params_before,
                                                            small.shrink_summary.params_after)}

    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, list[dict]] = {}
    extra: dict[str, list[dict]] = {}
    with ResultsStore(Path(args.out) / "results.db") as store:
        for seed in seeds:
            for label, config in accuracy_configs(args.epochs, args.accuracy_chase):
                started = time.perf_counter()
                final = Final()
                row = run(build_spec({**config, "seed": seed, "device": "cpu"}), root=args.out, store=store,
                          progress=False, log=lambda message: None, callbacks=[final])
                results.setdefault(label, []).append(row)
                if final.found:
                    extra.setdefault(label, []).append(final.found)
                log(f"seed {seed} {label:14s} test {row['final']['test_acc']:.4f}  "
                    f"({time.perf_counter() - started:.0f} s)")
    lines = ["| method | test acc (%) mean ± std | per seed | active weights | shrunk parameters (of dense) | "
             "shrunk FLOPs / sample |", "|---|---|---|---|---|---|"]
    for label, rows in results.items():
        accs = [100 * r["final"]["test_acc"] for r in rows]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        active = rows[0]["final"].get("active_weights", "")
        shrink = extra.get(label)
        params = (f"{statistics.fmean(e['params'][1] for e in shrink):,.0f} of {shrink[0]['params'][0]:,}"
                  if shrink else "—")
        flops = [r["final"].get("shrunk_flops") for r in rows]
        flops_text = f"{statistics.fmean(flops) / 1e3:,.0f} K" if None not in flops else "—"
        lines.append(f"| {label} | {statistics.fmean(accs):.2f} ± {std:.2f} | "
                     f"{', '.join(f'{a:.1f}' for a in accs)} | {active:,} | {params} | {flops_text} |")
    for label, found in extra.items():
        lines.append("")
        lines.append(f"{label}, channels left (seed {seeds[0]}): " + ", ".join(
            f"{k.removesuffix('.weight')} {a}/{b}" for k, (a, b) in found[0]["channels"].items()))
    return lines, {label: [r["final"]["test_acc"] for r in rows] for label, rows in results.items()}


# --- the document ---------------------------------------------------------------------------
NOTES = (
    "Where the time goes: Chase ranks channels of all layers together by the mean |w| of the whole filter, "
    "pruned weights counting as 0 (the reference's `--mag_wise`). On an ERK mask the widest layers are the "
    "sparsest, so their filters score lowest and they lose channels first, down to their floor "
    "int(out x (1 - Sc) x beta) (51 of 512 at Sc = 0.5 and beta = 0.2), before the narrow early layers lose "
    "any. In these CIFAR networks every stage costs about the same FLOPs (channels double as the resolution "
    "halves), so removing half of the channels from the last stages removes far less than half of the "
    "FLOPs, and the inference time falls with the FLOPs, not with the parameter count. The floor beta decides "
    "how far this goes: beta = 0.5 (the reference's ResNet-50 script) keeps a quarter of each layer at "
    "Sc = 0.5, and beta = 1 makes every layer keep exactly (1 - Sc) of its channels (the global ranking then "
    "only chooses which channels within each layer). So the 1.5x target is met only where the floor makes "
    "Chase take channels from every layer (beta = 1, an allowed value of the reference's `--minumum_ratio`, "
    "though its published scripts use 0.2 and 0.5); at the published floors the shrunk models are faster by "
    "less. On MNIST-1D the floors cost about the same accuracy (beta 0.2 and 0.5 even leave the same "
    "channels there: both floors stay below what the ranking keeps). (The reference measures its 1.7x throughput on "
    "ResNet-50/ImageNet on a GPU, with channels chosen by a full training run.) "
    "ResNet-18 can only lose the channels inside its blocks (conv1 of each basic block): channels tied by "
    "a residual add stay, as in the reference. Masked unstructured sparsity multiplies the zeros like any "
    "weight: no faster than dense, and its training step also pays for the masks. Timings on a shared "
    "machine are noisy: compare the ratios within a round (the table's speed-ups), not the milliseconds "
    "across runs.")


def both_targets(speed: dict[str, dict[str, float]], accs: dict[str, list[float]]) -> list[str]:
    """One line per Chase setting timed and trained: its inference speed-up on each CIFAR model and
    its accuracy against RigL on MNIST-1D, and whether it meets both targets at once."""
    lines = ["Both targets at once (the same Chase setting: at least 1.5x on every timed model, and within "
             "1 point of RigL):", ""]
    rigl = statistics.fmean(accs["RigL"])
    for label, values in accs.items():
        if not label.startswith("Chase"):
            continue
        setting = label.removeprefix("Chase ")
        ratios = {name: r.get(f"chase {setting}, shrunk") for name, r in speed.items()}
        if None in ratios.values():
            continue
        gap = 100 * (statistics.fmean(values) - rigl)
        met = min(ratios.values()) >= 1.5 and gap >= -1.0
        lines.append(f"- {setting}: " + ", ".join(f"{name} {r:.2f}x" for name, r in ratios.items())
                     + f"; {gap:+.2f} points vs RigL: {'both met' if met else 'not both met'}.")
    return lines


def load_average() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: batch 16, 2 rounds, 2 structure steps, 1 seed of 3 epochs")
    parser.add_argument("--part", choices=("speed", "accuracy", "both"), default="both")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--structure-steps", type=int, default=0,
                        help="Chase training steps on random inputs before its channel rule is applied (0: at init)")
    parser.add_argument("--chase", default=SPEED_CHASE, help="Chase settings Sc:beta of the speed part")
    parser.add_argument("--structure-batch", type=int, default=32)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--accuracy-chase", default=ACCURACY_CHASE, help="Chase settings Sc:beta of the accuracy part")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--out", default="runs/bench_structured")
    parser.add_argument("--doc", default="docs/performance_structured.md")
    args = parser.parse_args(argv)
    args.chase, args.accuracy_chase = parse_chase(args.chase), parse_chase(args.accuracy_chase)
    if args.quick:
        args.batch, args.rounds, args.structure_batch = 16, 2, 8
        args.seeds, args.epochs = "0", 3
        if args.doc == parser.get_default("doc"):
            args.doc = str(Path(args.out) / "performance_structured_quick.md")
    torch.set_num_threads(args.threads)
    command = "PYTHONPATH=src python benchmarks/structured.py " + " ".join(sys.argv[1:] if argv is None else argv)

    def log(message: str) -> None:
        print(message, flush=True)

    started = time.perf_counter()
    load_before = load_average()
    lines = ["# Channel-level sparsity on the CPU: Chase-shrunk CNNs (issue 17)", "", f"Command: `{command.strip()}`", ""]
    speed: dict[str, dict[str, float]] = {}
    if args.part in ("speed", "both"):
        lines += ["## Speed", "",
                  f"CIFAR-form models, 10 classes, 3x32x32 inputs, batch {args.batch}, {args.threads} threads, "
                  f"{args.rounds} interleaved rounds (median; ratios are medians of per-round ratios). Masked = the "
                  "masked backend at density 0.1 (ERK): the zeros are multiplied like any weight. Chase rows: the "
                  "model after Chase at density 0.1 removed Sc of its prunable channels by its own rule (global "
                  "ranking by mean |w| of the whole filter, per-layer floor int(out (1 - Sc) beta); beta 0.2 is "
                  "the reference's VGG-19 script and our default, 0.5 its ResNet-50 script, and beta 1 takes "
                  "exactly Sc of every layer's channels) applied "
                  + (f"after {args.structure_steps} training steps on random inputs" if args.structure_steps else
                     "to the initialized weights (no CIFAR here to train it)") + ", shrunk with `st.shrink` "
                  "(Torch-Pruning) and timed as a plain dense model. FLOPs: 2 x multiply-accumulates of the "
                  "Conv/Linear layers at the shrunk widths, zeros included.", ""]
        for name in MODELS:
            variants = time_model(name, args, log)
            speed[name] = speed_ratios(variants)
            lines += [line.replace("{batch}", str(args.batch)) for line in speed_table(name, variants)] + [""]
    if args.part in ("accuracy", "both"):
        lines += ["## Accuracy: MNIST-1D, 1D CNN, density 0.1", "",
                  f"Quickstart training settings (SGD lr 0.1, momentum 0.9, weight decay 5e-4, batch 64, cosine), "
                  f"{args.epochs} epochs; ERK at density 0.1; weight updates every 25 steps for RigL (drop 0.3, "
                  "cosine, until 75%) and Chase (its reference schedule: prune to the budget and grow 5% on top "
                  "until 81%, then RigL-style with 0.5 cosine; channel pruning every 8 updates until 81%, "
                  f"per-layer floor int(out (1 - Sc) beta)); seeds {args.seeds}. Chase's prunable channels in "
                  "this CNN are the outputs of its first two convs (the third feeds the classifier through a flatten, as the reference's last "
                  "VGG conv).", ""]
        torch.set_num_threads(1)  # tiny models: one thread is as fast, and two oversubscribe a busy machine
        table, accs = accuracy(args, log)
        lines += table + [""]
        rigl = accs.get("RigL")
        for label, values in accs.items():
            if label.startswith("Chase") and rigl:
                gap = 100 * (statistics.fmean(values) - statistics.fmean(rigl))
                lines.append(f"Target ({label} within 1 point of RigL at the same weight density): "
                             f"{'met' if gap >= -1.0 else 'not met'} ({gap:+.2f} points).")
                lines.append("")
        if speed and rigl:
            lines += both_targets(speed, accs) + [""]
    load_after = load_average()
    lines += ["## Reading the numbers", "", NOTES, ""]
    lines += [f"Machine: {platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}; load average "
              f"(1/5/15 min) {load_before} before, {load_after} after (the machine is shared); wall time "
              f"{(time.perf_counter() - started) / 60:.1f} min.", ""]
    text = "\n".join(lines)
    path = Path(args.doc)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
