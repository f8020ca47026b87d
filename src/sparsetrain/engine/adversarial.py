"""PGD adversarial training as a Trainer callback (Madry et al., ICLR 2018).

At every BATCH_START the training batch is replaced by PGD adversarial examples of the
current model, so the loss, the backward pass and every sparsity method's step (masks,
drop/grow) see adversarial inputs; the callback never touches weights or masks, so it
composes with every method. After each epoch (EVAL) the robust accuracy under the
evaluation attack (PGD-20 by default) is recorded in ``trainer.history`` as
``<split>_robust_acc``, the data of a robust-overfitting curve (Rice et al., ICML 2020).

    trainer = Trainer(model, data, TrainConfig(...), method="set", method_config=...,
                      callbacks=[AdversarialTraining(AdversarialTrainingConfig())])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sparsetrain.config import check_range, option, validate_choices
from sparsetrain.engine.events import Callback
from sparsetrain.errors import ConfigError
from sparsetrain.scenarios.adversarial import AttackConfig, pgd, robust_accuracy
from sparsetrain.scenarios.normalization import Normalization, PixelModel
from sparsetrain.sparse import generator, seed_for


@dataclass(frozen=True)
class AdversarialTrainingConfig:
    """PGD adversarial training; defaults eps 8/255, step 2/255, 10 steps (PGD-20 to evaluate)."""

    norm: str = option("linf", "threat model", choices=("linf", "l2"))
    eps: float = option(8 / 255, "perturbation radius in pixel units ([0, 1] scale)")
    step_size: float = option(2 / 255, "PGD step size during training")
    steps: int = option(10, "PGD iterations during training")
    random_start: bool = option(True, "training PGD starts at a random point of the ball")
    attack_mode: str = option("train", "model mode while crafting training attacks (train: BN uses "
                              "batch statistics, as in the reference code of Rice et al. and WOT)",
                              choices=("train", "eval"))
    eval_steps: int = option(20, "PGD iterations of the per-epoch robust evaluation")
    eval_step_size: float = option(2 / 255, "PGD step size of the robust evaluation")
    eval_restarts: int = option(1, "random restarts of the robust evaluation")
    eval_splits: tuple[str, ...] = option(("test",), "splits whose robust accuracy is recorded each epoch")
    eval_samples: int = option(0, "evaluate robustness on the first N samples of each split (0 = all)")

    def __post_init__(self) -> None:
        validate_choices(self)
        check_range("eps", self.eps, 0)
        check_range("step_size", self.step_size, 0)
        check_range("steps", self.steps, 1)
        check_range("eval_steps", self.eval_steps, 1)
        check_range("eval_step_size", self.eval_step_size, 0)
        check_range("eval_restarts", self.eval_restarts, 1)
        check_range("eval_samples", self.eval_samples, 0)
        for split in self.eval_splits:
            if split not in ("train", "val", "test"):
                raise ConfigError(f"eval_splits must name train, val or test; got {split!r}")

    def train_attack(self) -> AttackConfig:
        return AttackConfig(attack="pgd", norm=self.norm, eps=self.eps, step_size=self.step_size,
                            steps=self.steps, random_start=self.random_start)

    def eval_attack(self) -> AttackConfig:
        return AttackConfig(attack="pgd", norm=self.norm, eps=self.eps, step_size=self.eval_step_size,
                            steps=self.eval_steps, restarts=self.eval_restarts, random_start=True)


class AdversarialTraining(Callback):
    """Replaces each training batch by PGD examples and records robust accuracy per epoch.

    ``normalization`` is the dataset's input normalisation (identity for pixel inputs):
    attacks run in pixel space [0, 1] and the model sees normalised adversarial inputs.
    """

    def __init__(self, config: AdversarialTrainingConfig | None = None,
                 normalization: Normalization | None = None) -> None:
        self.config = config or AdversarialTrainingConfig()
        self.normalization = normalization or Normalization.identity()

    def on_batch_start(self, trainer: Any) -> None:
        x, y = trainer.batch
        pixels = self.normalization.invert(x).clamp(0, 1)
        cfg = self.config
        # seeded by the run seed and the method's (checkpointed) step: resumed runs repeat exactly
        random = generator(trainer.seed, "adversarial", trainer.method.step_count)
        adv = pgd(PixelModel(trainer.model, self.normalization), pixels, y, eps=cfg.eps,
                  step_size=cfg.step_size, steps=cfg.steps, norm=cfg.norm,
                  random_start=cfg.random_start, generator=random,
                  eval_mode=cfg.attack_mode == "eval")
        trainer.batch = (self.normalization.apply(adv), y)

    def on_eval(self, trainer: Any) -> None:
        metrics = trainer.history[-1]
        for split in self.config.eval_splits:
            metrics[f"{split}_robust_acc"] = self.robust_accuracy(trainer, split)

    def robust_accuracy(self, trainer: Any, split: str = "test") -> float:
        """Accuracy of the trainer's model on ``split`` under the evaluation attack."""
        data = getattr(trainer.data, split)
        n = self.config.eval_samples or len(data)
        if len(data) == 0:
            return float("nan")
        return robust_accuracy(trainer.model, data.x[:n], data.y[:n], self.config.eval_attack(),
                               normalization=self.normalization,
                               seed=seed_for(trainer.seed, trainer.epoch, "robust-eval"))
