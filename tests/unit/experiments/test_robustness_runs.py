"""Robustness keys of the experiment config: validation, the runner's stored metrics, presets."""

import dataclasses

import pytest
import torch
from torch import nn

from sparsetrain.data import load
from sparsetrain.data.base import DatasetSplits, TensorData
from sparsetrain.errors import ConfigError, UserError
from sparsetrain.experiments import ResultsStore, build_spec, run
from sparsetrain.experiments.bench import expand_grid, read_grid
from sparsetrain.experiments.robustness import evaluate_robustness, normalization_of, robustness_callbacks
from sparsetrain.scenarios.corruptions import list_corruptions


@pytest.mark.parametrize("values, message", [
    ({"robust_corruptions": ["fog", "nosuch"]}, "robust_corruptions names 'nosuch'"),
    ({"robust_severities": [0]}, "robust_severities must be in 1..5"),
    ({"robust_severities": []}, "robust_severities must name at least one"),
    ({"frequency_cutoffs": [0.5, 1.5]}, "frequency_cutoffs must be in"),
    ({"attack_norms": ["l1"]}, "attack_norms must be linf and/or l2"),
    ({"robust_eval": "all", "attack_norms": []}, "attack_norms must name"),
    ({"robust_eval": "some"}, "robust_eval"),
    ({"attack_steps": 0}, "attack_steps must be in"),
    ({"robust_samples": -1}, "robust_samples must be in"),
    ({"wot": "block"}, "set adversarial_training: true"),
    ({"adversarial_training": True, "wot": "block", "wot_gap": 0}, "wot_gap must be in"),
])
def test_bad_robustness_keys_are_config_errors_naming_the_key(values, message):
    with pytest.raises(ConfigError, match=message):
        build_spec({"method": "dense", **values})


def _series_splits():
    x = TensorData(torch.zeros(4, 1, 40), torch.zeros(4, dtype=torch.long))
    return DatasetSplits("mnist1d", x, x, x, 2, (1, 40))


def test_non_image_data_is_a_user_error_for_corruptions_and_adversarial_training():
    exp = build_spec({"method": "dense", "robust_eval": "corruptions", "adversarial_training": True}).experiment
    with pytest.raises(UserError, match="needs image inputs .* 'mnist1d'"):
        evaluate_robustness(nn.Flatten(), _series_splits(), exp)
    with pytest.raises(UserError, match="adversarial_training needs image inputs"):
        robustness_callbacks(exp, _series_splits())


def test_mnist1d_run_with_corruptions_fails_before_the_store_is_touched(tmp_path):
    spec = build_spec({"method": "dense", "dataset": "mnist1d", "epochs": 1, "robust_eval": "corruptions",
                       "dataset_options": {"num_samples": 200}})
    with ResultsStore(tmp_path / "results.db") as store:
        with pytest.raises(UserError, match="needs image inputs"):
            run(spec, root=tmp_path, store=store, progress=False, log=lambda m: None)
        assert store.runs(status=None) == []


def test_loaders_say_how_inputs_relate_to_pixels():
    assert load("digits", seed=0).normalization == ((), ())
    splits = dataclasses.replace(_series_splits(), input_shape=(3, 4, 4),
                                 normalization=((0.5, 0.4, 0.3), (0.2, 0.2, 0.25)))
    norm = normalization_of(splits, "test")
    assert norm.mean == (0.5, 0.4, 0.3) and norm.std == (0.2, 0.2, 0.25)


class Unnormalize(nn.Module):
    """A model for normalised inputs that computes exactly what ``model`` computes on pixels."""

    def __init__(self, model, mean, std):
        super().__init__()
        self.model, self.mean, self.std = model, mean, std

    def forward(self, x):
        return self.model(x * self.std + self.mean)


def test_normalised_dataset_gives_the_same_robustness_as_its_pixels():
    """Corruptions and filters act on pixels: a normalised copy of digits with a model that
    undoes the normalisation must give the same accuracies (the runner maps inputs back)."""
    data = load("digits", seed=0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    mean, std = 0.3, 0.4
    normed = lambda d: TensorData((d.x - mean) / std, d.y)  # noqa: E731
    scaled = dataclasses.replace(data, train=normed(data.train), val=normed(data.val), test=normed(data.test),
                                 normalization=((mean,), (std,)))
    exp = build_spec({"method": "dense", "robust_eval": "corruptions", "robust_samples": 40,
                      "robust_corruptions": ["gaussian_noise", "contrast"], "robust_severities": [2, 5],
                      "frequency_cutoffs": [0.5]}).experiment
    pixels = evaluate_robustness(model, data, exp)
    normalised = evaluate_robustness(Unnormalize(model, mean, std), scaled, exp)
    assert set(pixels["corruption_accuracy"]) == {"gaussian_noise", "contrast"}
    for name, accs in pixels["corruption_accuracy"].items():
        assert normalised["corruption_accuracy"][name] == pytest.approx(accs, abs=1 / 40 + 1e-9)
    assert normalised["frequency_accuracy"]["low"]["0.5"] == pytest.approx(
        pixels["frequency_accuracy"]["low"]["0.5"], abs=1 / 40 + 1e-9)
    assert pixels["robust_samples"] == 40


def test_runner_stores_corruption_and_adversarial_metrics_and_robust_accuracy_per_epoch(tmp_path):
    spec = build_spec({"method": "set", "density": 0.5, "dataset": "digits", "model": "lenet5", "epochs": 2,
                       "batch_size": 256, "lr": 0.05, "robust_eval": "all", "robust_samples": 32,
                       "robust_corruptions": ["gaussian_noise", "brightness"], "robust_severities": [1, 5],
                       "frequency_cutoffs": [0.25], "attack_norms": ["linf", "l2"], "attack_steps": 2,
                       "adversarial_training": True, "at_eps": 0.1, "at_step_size": 0.05, "at_steps": 1,
                       "wot": "whole", "wot_gap": 2, "wot_segments": 1})
    with ResultsStore(tmp_path / "results.db") as store:
        row = run(spec, root=tmp_path, store=store, progress=False, log=lambda m: None)
        epochs = store.epochs(row["run_id"])
    final = row["final"]
    matrix = final["corruption_accuracy"]
    assert set(matrix) == {"gaussian_noise", "brightness"} and all(len(v) == 2 for v in matrix.values())
    assert final["corruption_acc"] == pytest.approx(sum(sum(v) for v in matrix.values()) / 4)
    assert final["corruption_clean_acc"] * 32 == pytest.approx(round(final["corruption_clean_acc"] * 32))
    assert set(final["frequency_accuracy"]) == {"low", "high"}
    for key in ("robust_acc_linf", "robust_acc_l2"):
        assert 0 <= final[key] <= final["corruption_clean_acc"] + 1e-9  # an attack cannot help
    assert len(epochs) == 2 and all(0 <= e["test_robust_acc"] <= 1 for e in epochs)
    assert epochs[-1]["wot_refinements"] >= 1
    assert row["config"]["wot"] == "whole" and row["config"]["adversarial_training"] is True


def test_grid_parts_run_into_one_grid_with_their_own_axes_and_merged_base():
    grid = {"base": {"epochs": 3, "dataset": "digits"}, "methods": ["dense", "set"], "densities": [0.5, 0.9],
            "parts": [{}, {"methods": ["dense"], "base": {"epochs": 1}, "seeds": [4, 5]}]}
    runs = expand_grid(grid)
    assert len(runs) == 3 + 2
    assert [r.spec.train.epochs for r in runs] == [3, 3, 3, 1, 1]
    assert {r.spec.experiment.dataset for r in runs} == {"digits"}
    with pytest.raises(UserError, match="part 1 has key 'method'"):
        expand_grid({"parts": [{"method": "dense"}]})
    with pytest.raises(UserError, match="parts must be a non-empty list"):
        expand_grid({"parts": []})


def test_robust_quick_preset_pairs_clean_sweep_with_adversarial_training_with_and_without_wot():
    runs = expand_grid(read_grid(preset="robust-quick"))
    clean = [r for r in runs if not r.spec.experiment.adversarial_training]
    adv = [r for r in runs if r.spec.experiment.adversarial_training]
    assert {r.spec.experiment.method for r in clean} == {"dense", "set", "rigl", "mest"}
    assert {r.values.get("density") for r in clean} == {None, 0.5, 0.7, 0.9}
    assert all(r.spec.experiment.robust_eval == "all" and r.spec.experiment.dataset == "digits" for r in runs)
    assert {r.spec.experiment.wot for r in adv} == {"none", "block"}
    assert list_corruptions() and not clean[0].spec.experiment.robust_corruptions  # all 19
