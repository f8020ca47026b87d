"""Robustness of dense vs SET on the 8x8 digits: common corruptions and PGD.

Trains a dense and a SET PreActResNet-18 (width 8; SET at density 0.3) for a few epochs
with the Trainer, then
prints the accuracy per corruption (mean over the 5 severities), the mean corruption
accuracy, the mCE of SET relative to dense, and the PGD-20 robust accuracy.

With ``--adversarial`` it instead trains SET (density 0.5) with PGD adversarial training,
with and without WOT, and prints clean and PGD-20 robust test accuracy per epoch.

Run: OMP_NUM_THREADS=1 python examples/robustness.py [--adversarial]
"""

from __future__ import annotations

import sys

import torch

import sparsetrain as st
from sparsetrain.engine.adversarial import AdversarialTraining, AdversarialTrainingConfig
from sparsetrain.engine.wot import WOT, WOTConfig
from sparsetrain.algorithms.dynamic import DynamicConfig
from sparsetrain.engine.config import TrainConfig
from sparsetrain.engine.trainer import Trainer
from sparsetrain.scenarios.adversarial import AttackConfig, robust_accuracy
from sparsetrain.scenarios.corruptions import list_corruptions
from sparsetrain.scenarios.evaluation import corruption_accuracy, mce, relative_mce

ATTACKS = {"PGD-20 Linf 8/255": AttackConfig(eps=8 / 255, step_size=2 / 255, steps=20),
           "PGD-20 L2 0.5": AttackConfig(norm="l2", eps=0.5, step_size=0.125, steps=20)}


def main(epochs: int = 10, seed: int = 0, corruptions: list[str] | None = None) -> dict[str, dict]:
    torch.manual_seed(seed)
    data = st.data.load("digits", seed=seed)  # pixels in [0, 1]: no normalisation to invert
    corruptions = corruptions or list_corruptions()
    runs = {"dense": ("dense", None), "set 0.3": ("set", DynamicConfig(density=0.3, update_interval=20))}
    results: dict[str, dict] = {}
    for label, (method, method_config) in runs.items():
        torch.manual_seed(seed)
        model = st.models.create("preactresnet18", input_shape=data.input_shape,
                                 num_classes=data.num_classes, width=8)
        trainer = Trainer(model, data, TrainConfig(epochs=epochs, batch_size=64, lr=0.05, device="cpu"),
                          method=method, method_config=method_config, seed=seed)
        trainer.fit()
        corrupted = corruption_accuracy(model, data.test, corruptions=corruptions, seed=seed)
        robust = {name: robust_accuracy(model, data.test.x, data.test.y, cfg, seed=seed)
                  for name, cfg in ATTACKS.items()}
        results[label] = {"corruptions": corrupted, "robust": robust, "density": trainer.method.density()}

    labels = list(results)
    print(f"{'':20s}" + "".join(f"{label:>12s}" for label in labels))
    print(f"{'density':20s}" + "".join(f"{results[l]['density']:12.3f}" for l in labels))
    print(f"{'clean':20s}" + "".join(f"{results[l]['corruptions'].clean:12.3f}" for l in labels))
    for name in corruptions:
        print(f"{name:20s}" + "".join(f"{results[l]['corruptions'].per_corruption()[name]:12.3f}" for l in labels))
    print(f"{'mean corruption acc':20s}" + "".join(f"{results[l]['corruptions'].mean:12.3f}" for l in labels))
    for name in ATTACKS:
        print(f"{name:20s}" + "".join(f"{results[l]['robust'][name]:12.3f}" for l in labels))
    dense, sparse = results["dense"]["corruptions"], results["set 0.3"]["corruptions"]
    print(f"SET vs dense: mCE {mce(sparse, dense):.3f}, relative mCE {relative_mce(sparse, dense):.3f} "
          "(below 1: more robust than dense)")
    return results


def adversarial(epochs: int = 10, seed: int = 0, eps: float = 0.1) -> dict[str, list[dict]]:
    """SET (density 0.5) with PGD-5 adversarial training at L-inf ``eps``, with and without WOT."""
    data = st.data.load("digits", seed=seed)
    at = AdversarialTrainingConfig(eps=eps, step_size=eps / 4, steps=5, eval_step_size=eps / 4)
    # alphas start at 1 (the current weights): in a run this short a window of 3 x 20 steps
    # moves the weights too little for zero-initialised alphas to grow (their gradient
    # <dw, g> scales with the gap; the reference uses gap 400 on CIFAR)
    wot = WOTConfig(gap=20, segments=3, alpha_init="one", eps=eps, step_size=eps / 4, steps=5, bn_batches=20)
    histories: dict[str, list[dict]] = {}
    for label, extra in (("AT", []), ("AT+WOT", [WOT(wot)])):
        torch.manual_seed(seed)
        model = st.models.create("preactresnet18", input_shape=data.input_shape,
                                 num_classes=data.num_classes, width=8)
        trainer = Trainer(model, data, TrainConfig(epochs=epochs, batch_size=64, lr=0.05, device="cpu"),
                          method="set", method_config=DynamicConfig(density=0.5, update_interval=20),
                          seed=seed, callbacks=[AdversarialTraining(at), *extra])
        histories[label] = trainer.fit()
    print(f"SET 0.5, PGD adversarial training at Linf eps {eps}: test accuracy clean / PGD-20 per epoch")
    print("epoch" + "".join(f"{label:>20s}" for label in histories))
    for epoch in range(epochs):
        cells = [f"{h[epoch]['test_acc']:.3f} / {h[epoch]['test_robust_acc']:.3f}" for h in histories.values()]
        print(f"{epoch + 1:5d}" + "".join(f"{c:>20s}" for c in cells))
    print(f"WOT refinements: {histories['AT+WOT'][-1]['wot_refinements']}")
    return histories


if __name__ == "__main__":
    adversarial() if "--adversarial" in sys.argv[1:] else main()
