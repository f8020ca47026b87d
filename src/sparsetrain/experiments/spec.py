"""A run's full, validated configuration and its identity (the hash of the resolved config).

A config is flat (one YAML mapping, one flag per key): the experiment's keys below, the
Trainer's (`TrainConfig`) and those of the chosen method's own config dataclass.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from sparsetrain.algorithms import METHODS, config_class
from sparsetrain.config import (
    canonical_names, check_range, config_hash, from_dict, note_once, option, to_dict, unknown_key,
    validate_choices,
)
from sparsetrain.data import DATASETS, path_in_identity
from sparsetrain.engine import TrainConfig
from sparsetrain.errors import ConfigError
from sparsetrain.models import MODELS

NOT_IDENTITY = ("device", "data_dir", "channels_last", "compile", "workers")
"""Keys that change where or how fast a run happens, not what it computes (``precision`` does
change what it computes, so it is part of a run's identity)."""

NEUTRAL_DEFAULTS = {"structure": "unstructured", "precision": "fp32"}
"""Keys added after runs were stored, left out of a run's identity at the value that computes what
runs did before the key existed, so a store's earlier runs keep their hash (found, resumed and
reported with the same configuration run today)."""


def identity_values(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (a resolved config) without the keys that are not part of a run's identity:
    `NOT_IDENTITY`, and `NEUTRAL_DEFAULTS` keys at their neutral value."""
    return {k: v for k, v in values.items()
            if k not in NOT_IDENTITY and not (k in NEUTRAL_DEFAULTS and v == NEUTRAL_DEFAULTS[k])}


@dataclass(frozen=True)
class ExperimentConfig:
    method: str = option("rigl", "sparsity method (see `sparsetrain list`)")
    model: str = option("cnn1d", "model architecture (see `sparsetrain list`)")
    dataset: str = option("mnist1d", "dataset (see `sparsetrain list`)")
    seed: int = option(0, "seed of initialization, masks, data order and validation split")
    val_fraction: float = option(0.1, "fraction of the training set held out for validation, in [0, 1)")
    data_dir: str | None = option(None, "folder with dataset files or the dataset cache")
    model_options: dict | None = option(None, "extra model options, e.g. {channels: [16, 32, 64]}")
    dataset_options: dict | None = option(None, "extra dataset options, e.g. {num_samples: 10000}")
    # challenging-data scenarios (sparsetrain.scenarios), applied to the train split only
    label_noise: float = option(0.0, "fraction of training labels flipped, in [0, 1)")
    noise_type: str = option("symmetric", "label noise: symmetric (to a uniform other class) or asymmetric "
                             "(class pairs: CIFAR-10 map, else c -> c+1 mod K)", choices=("symmetric", "asymmetric"))
    data_fraction: float = option(1.0, "fraction of every class of the training set kept, in (0, 1]")
    imbalance_ratio: float = option(1.0, "long-tailed train set: largest/smallest class size, exponential profile (1: off)")
    subset: str = option("none", "keep only the hardest or easiest samples by subset_score",
                         choices=("none", "hardest", "easiest"))
    subset_score: str = option("el2n", "hardness score from short dense runs", choices=("el2n", "grand", "forgetting"))
    subset_fraction: float = option(0.5, "fraction of samples kept by subset, in (0, 1]")
    subset_split: str = option("train", "train on the subset, or evaluate on the subset of the test set",
                               choices=("train", "test"))
    score_epochs: int = option(5, "epochs of each short dense run that computes subset scores")
    score_runs: int = option(3, "short dense runs (seeds) averaged for subset scores")
    # robustness (sparsetrain.scenarios.corruptions / adversarial, engine.adversarial / wot)
    robust_eval: str = option("none", "after training, evaluate on the test split: corruptions (accuracy per "
                              "corruption x severity, low/high-pass frequency accuracy), adversarial (PGD "
                              "robust accuracy), or all", choices=("none", "corruptions", "adversarial", "all"))
    robust_corruptions: tuple[str, ...] = option((), "corruptions evaluated (see `sparsetrain list`); empty: all 19")
    robust_severities: tuple[int, ...] = option((1, 2, 3, 4, 5), "corruption severities evaluated, each in 1..5")
    robust_samples: int = option(0, "robustness is evaluated on the first N test samples (0: all)")
    frequency_cutoffs: tuple[float, ...] = option((0.1, 0.25, 0.5, 0.75), "low/high-pass cut-offs (fraction "
                                                  "of the largest spatial frequency); empty: no frequency analysis")
    attack_norms: tuple[str, ...] = option(("linf",), "PGD threat models evaluated: linf and/or l2")
    attack_eps: float = option(8 / 255, "L-inf PGD radius in pixel units ([0, 1] scale)")
    attack_eps_l2: float = option(0.5, "L2 PGD radius in pixel units")
    attack_steps: int = option(20, "PGD iterations of the evaluation (step size 2.5 eps / steps)")
    autoattack: bool = option(False, "also evaluate AutoAttack (standard, needs torchattacks) at each norm's eps")
    adversarial_training: bool = option(False, "PGD adversarial training (L-inf, Madry et al.); records "
                                        "test_robust_acc every epoch")
    at_eps: float = option(8 / 255, "adversarial training: L-inf radius in pixel units")
    at_step_size: float = option(2 / 255, "adversarial training: PGD step size")
    at_steps: int = option(10, "adversarial training: PGD iterations")
    wot: str = option("none", "weighted optimization trajectories during adversarial training: block (WOT-B) "
                      "or whole (WOT-W)", choices=("none", "block", "whole"))
    wot_gap: int = option(400, "WOT: optimizer steps per trajectory segment")
    wot_segments: int = option(4, "WOT: segments per refinement window (K)")
    wot_alpha_init: str = option("zero", "WOT: initial alphas (one suits short gaps)",
                                 choices=("zero", "one", "random"))

    def __post_init__(self) -> None:
        METHODS.get(self.method)
        MODELS.get(self.model)
        DATASETS.get(self.dataset)
        check_range("seed", self.seed, 0, 2**32, high_open=True)
        check_range("val_fraction", self.val_fraction, 0, 1, high_open=True)
        validate_choices(self)
        check_range("label_noise", self.label_noise, 0, 1, high_open=True)
        check_range("data_fraction", self.data_fraction, 0, 1, low_open=True)
        check_range("imbalance_ratio", self.imbalance_ratio, 1)
        check_range("subset_fraction", self.subset_fraction, 0, 1, low_open=True)
        check_range("score_epochs", self.score_epochs, 0)
        check_range("score_runs", self.score_runs, 1)
        check_robustness(self)


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines one run."""

    experiment: ExperimentConfig
    train: TrainConfig
    method: Any

    def resolved(self) -> dict[str, Any]:
        """The flat resolved config, as written to config.yaml and the store."""
        return {**to_dict(self.experiment), **to_dict(self.train), **to_dict(self.method)}

    @property
    def config_hash(self) -> str:
        values = identity_values(self.resolved())
        values.update(data_identity(self.experiment))
        return config_hash(values)


def config_fields(method: str) -> list[dataclasses.Field]:
    """The fields of every key a config for ``method`` may contain, in declaration order."""
    classes = (ExperimentConfig, TrainConfig, config_class(method))
    return [f for cls in classes for f in dataclasses.fields(cls)]


def allowed_keys(method: str) -> list[str]:
    """Every key a config for ``method`` may contain."""
    return sorted(f.name for f in config_fields(method))


def method_keys() -> set[str]:
    """Every key some method's config has (and their old spellings), e.g. density, ranking."""
    keys = {"sparsity"}
    for name in METHODS.names():
        cls = config_class(name)
        keys.update(f.name for f in dataclasses.fields(cls))
        keys.update(getattr(cls, "renamed", {}))
    return keys


def build_spec(values: dict[str, Any], where: str = "config") -> RunSpec:
    """Validate a flat mapping into a `RunSpec`; an unknown key or bad value is a ConfigError.

    Old key spellings are renamed (see `canonical_names`); a method without sparsity
    (dense) ignores the options of sparse methods, saying so once, so that one config can
    loop over methods.
    """
    method = values.get("method", ExperimentConfig.method)
    method_class = config_class(str(method))
    values = canonical_names(method_class, values, where)
    allowed = allowed_keys(str(method))
    if "density" not in allowed:
        ignored = sorted((set(values) - set(allowed)) & method_keys())
        if ignored:
            note_once(f"method {method!r} has no sparsity options; ignoring {', '.join(ignored)}")
            values = {k: v for k, v in values.items() if k not in ignored}
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise unknown_key(where, unknown[0], allowed, suffix=f" for method {method!r}")

    def part(cls: type) -> Any:
        names = {f.name for f in dataclasses.fields(cls)}
        return from_dict(cls, {k: v for k, v in values.items() if k in names}, where=where)

    return RunSpec(part(ExperimentConfig), part(TrainConfig), part(method_class))


def data_identity(experiment: ExperimentConfig) -> dict[str, Any]:
    """``{"data_dir": <absolute path>}`` when the dataset reads the user's own files from it.

    ``data_dir`` is left out of a run's identity when it only says where a known dataset
    lives (checksum-verified CIFAR) or is cached (MNIST-1D); for a user's own files (npz,
    image folders, UCR, unverified batches) two folders hold different data, so the
    folder's absolute path joins the identity and a run on other files is not "already finished".
    """
    if experiment.data_dir is None or not path_in_identity(experiment.dataset, experiment.dataset_options):
        return {}
    return {"data_dir": os.path.abspath(os.path.expanduser(experiment.data_dir))}


def check_robustness(exp: ExperimentConfig) -> None:
    """Validate the robustness keys of ``exp`` (ConfigError naming the key)."""
    from sparsetrain.scenarios.corruptions import CORRUPTIONS

    for name in exp.robust_corruptions:
        if name not in CORRUPTIONS:
            raise ConfigError(f"robust_corruptions names {name!r}, which is not a corruption; "
                              f"choose from: {', '.join(CORRUPTIONS.names())}")
    if not exp.robust_severities:
        raise ConfigError("robust_severities must name at least one severity in 1..5")
    for severity in exp.robust_severities:
        if severity not in (1, 2, 3, 4, 5):
            raise ConfigError(f"robust_severities must be in 1..5; got {severity!r}")
    for cutoff in exp.frequency_cutoffs:
        check_range("frequency_cutoffs", cutoff, 0, 1)
    for norm in exp.attack_norms:
        if norm not in ("linf", "l2"):
            raise ConfigError(f"attack_norms must be linf and/or l2; got {norm!r}")
    if exp.robust_eval in ("adversarial", "all") and not exp.attack_norms:
        raise ConfigError("attack_norms must name linf and/or l2 when robust_eval includes adversarial")
    check_range("robust_samples", exp.robust_samples, 0)
    check_range("attack_eps", exp.attack_eps, 0)
    check_range("attack_eps_l2", exp.attack_eps_l2, 0)
    check_range("attack_steps", exp.attack_steps, 1)
    check_range("at_eps", exp.at_eps, 0)
    check_range("at_step_size", exp.at_step_size, 0)
    check_range("at_steps", exp.at_steps, 1)
    check_range("wot_gap", exp.wot_gap, 1)
    check_range("wot_segments", exp.wot_segments, 1)
    if exp.wot != "none" and not exp.adversarial_training:
        raise ConfigError(f"wot={exp.wot!r} reweights an adversarial-training trajectory; "
                          "set adversarial_training: true as well")
