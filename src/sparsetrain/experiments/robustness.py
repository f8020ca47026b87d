"""The robustness keys of an `ExperimentConfig`, applied in one place for the runner.

- `robustness_callbacks`: PGD adversarial training (`engine.adversarial`, Madry et al.
  2018) and WOT (`engine.wot`, Huang et al. 2023) as Trainer callbacks.
- `evaluate_robustness`: after training, the final metrics of ``robust_eval``:
  corruption accuracy per corruption x severity (Hendrycks & Dietterich 2019), mean
  corruption accuracy, low/high-pass frequency accuracy (Wang et al. 2020) and PGD /
  AutoAttack robust accuracy. The store keeps the per-corruption accuracies, so mCE
  against the dense run of the same setup is computed in the report.

Corruptions, filters and attacks act on pixels in [0, 1]; the dataset's
``normalization`` (set by its loader) maps model inputs back to pixels.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from sparsetrain.data import DatasetSplits
from sparsetrain.data.base import TensorData
from sparsetrain.engine import Callback
from sparsetrain.errors import UserError
from sparsetrain.scenarios.normalization import Normalization

STORED_KEYS = ("corruption_clean_acc", "corruption_acc", "corruption_accuracy", "frequency_accuracy",
               "robust_acc_linf", "robust_acc_l2", "autoattack_acc_linf", "autoattack_acc_l2",
               "robust_samples")
"""Final-metric keys `evaluate_robustness` may write to the store."""


def normalization_of(data: DatasetSplits, need: str) -> Normalization:
    """The dataset's input normalisation; a UserError when its inputs are not images (N, C, H, W).

    A dataset whose loader does not say (a user's npz arrays) is taken to feed pixels in [0, 1].
    """
    if len(data.input_shape) != 3:
        raise UserError(f"{need} needs image inputs (channels, height, width); dataset {data.name!r} "
                        f"has inputs of shape {tuple(data.input_shape)}")
    if not data.normalization or not data.normalization[0]:
        return Normalization.identity()
    mean, std = data.normalization
    return Normalization(tuple(mean), tuple(std))


def robustness_callbacks(exp: Any, data: DatasetSplits) -> list[Callback]:
    """The AdversarialTraining (and WOT) callbacks ``exp`` asks for, in firing order."""
    if not exp.adversarial_training:
        return []
    from sparsetrain.engine.adversarial import AdversarialTraining, AdversarialTrainingConfig
    from sparsetrain.engine.wot import WOT, WOTConfig

    normalization = normalization_of(data, "adversarial_training")
    at = AdversarialTrainingConfig(eps=exp.at_eps, step_size=exp.at_step_size, steps=exp.at_steps,
                                   eval_steps=exp.attack_steps,
                                   eval_step_size=2.5 * exp.at_eps / exp.attack_steps,
                                   eval_samples=exp.robust_samples)
    callbacks: list[Callback] = [AdversarialTraining(at, normalization)]
    if exp.wot != "none":
        if len(data.val) == 0:
            raise UserError("wot optimises its alphas on the validation split; set val_fraction above 0")
        wot = WOTConfig(variant=exp.wot, gap=exp.wot_gap, segments=exp.wot_segments,
                        alpha_init=exp.wot_alpha_init, eps=exp.at_eps, step_size=exp.at_step_size,
                        steps=exp.at_steps)
        callbacks.append(WOT(wot, normalization))
    return callbacks


def check_robust_eval(exp: Any, data: DatasetSplits) -> None:
    """Raise the UserError `evaluate_robustness` would, before any training."""
    if exp.robust_eval != "none":
        normalization_of(data, f"robust_eval={exp.robust_eval!r}")


def evaluate_robustness(model: nn.Module, data: DatasetSplits, exp: Any) -> dict[str, Any]:
    """Final robustness metrics of ``model`` on the test split, as ``exp.robust_eval`` asks.

    Keys (see `STORED_KEYS`): ``corruption_accuracy`` {name: [acc per severity]},
    ``corruption_clean_acc``, ``corruption_acc`` (mean over corruptions and severities),
    ``frequency_accuracy`` {"low"|"high": {cutoff: acc}}, ``robust_acc_<norm>`` (PGD) and
    ``autoattack_acc_<norm>``; accuracies in [0, 1].
    """
    if exp.robust_eval == "none":
        return {}
    from sparsetrain.scenarios.adversarial import AttackConfig, robust_accuracy
    from sparsetrain.scenarios.corruptions import list_corruptions
    from sparsetrain.scenarios.evaluation import corruption_accuracy, frequency_accuracy

    normalization = normalization_of(data, f"robust_eval={exp.robust_eval!r}")
    n = exp.robust_samples or len(data.test)
    test = TensorData(data.test.x[:n], data.test.y[:n])
    out: dict[str, Any] = {"robust_samples": len(test)}
    if exp.robust_eval in ("corruptions", "all"):
        names = list(exp.robust_corruptions) or list_corruptions()
        result = corruption_accuracy(model, test, normalization=normalization, corruptions=names,
                                     severities=tuple(exp.robust_severities), seed=exp.seed)
        out.update(corruption_clean_acc=result.clean, corruption_acc=result.mean,
                   corruption_accuracy={k: list(v) for k, v in result.accuracy.items()})
        if exp.frequency_cutoffs:
            freq = frequency_accuracy(model, test, normalization=normalization,
                                      cutoffs=tuple(exp.frequency_cutoffs))
            out["frequency_accuracy"] = {kind: {f"{c:g}": acc for c, acc in accs.items()}
                                         for kind, accs in freq.items()}
    if exp.robust_eval in ("adversarial", "all"):
        for norm in exp.attack_norms:
            eps = exp.attack_eps if norm == "linf" else exp.attack_eps_l2
            pgd = AttackConfig(attack="pgd", norm=norm, eps=eps, step_size=2.5 * eps / exp.attack_steps,
                               steps=exp.attack_steps)
            out[f"robust_acc_{norm}"] = robust_accuracy(model, test.x, test.y, pgd,
                                                        normalization=normalization, seed=exp.seed)
            if exp.autoattack:
                aa = AttackConfig(attack="autoattack", norm=norm, eps=eps)
                out[f"autoattack_acc_{norm}"] = robust_accuracy(model, test.x, test.y, aa,
                                                                normalization=normalization, seed=exp.seed)
    return out
