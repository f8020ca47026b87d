"""Label noise, limited data and imbalance, against counts computed by hand."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats

from sparsetrain.data import DatasetSplits, TensorData
from sparsetrain.errors import ConfigError
from sparsetrain.experiments import build_spec
from sparsetrain.scenarios import NoisyData, ScenarioContext, apply_scenarios, describe
from sparsetrain.scenarios.noise import CIFAR10_ASYMMETRIC, asymmetric_noise, cyclic_map, symmetric_noise
from sparsetrain.scenarios.sampling import limited_counts, long_tail_counts


def config(**changes):
    values = dict(label_noise=0.0, noise_type="symmetric", data_fraction=1.0, imbalance_ratio=1.0,
                  subset="none", subset_score="el2n", subset_fraction=0.5, subset_split="train",
                  score_epochs=1, score_runs=1)
    values.update(changes)
    return SimpleNamespace(**values)


def splits(y_train, num_classes, n_test=20):
    y_train = torch.as_tensor(y_train, dtype=torch.int64)
    x_train = torch.arange(len(y_train), dtype=torch.float32)[:, None]  # row i holds i: tracks samples
    test = TensorData(torch.zeros(n_test, 1), torch.arange(n_test) % num_classes)
    return DatasetSplits("toy", TensorData(x_train, y_train), TensorData(torch.zeros(0, 1), torch.zeros(0, dtype=torch.int64)),
                         test, num_classes, (1,))


def test_symmetric_noise_flips_exactly_round_rn_labels_never_to_their_own_class():
    y = np.arange(1000) % 10
    noisy = symmetric_noise(y, 0.37, 10, np.random.default_rng(0))
    assert (noisy != y).sum() == 370  # every one of the 370 chosen labels moved to another class
    assert set(np.unique(noisy)) <= set(range(10))
    # 0.5 * 5 = 2.5 rounds half up to 3
    assert (symmetric_noise(np.arange(5) % 2, 0.5, 2, np.random.default_rng(1)) != np.arange(5) % 2).sum() == 3


def test_symmetric_noise_is_uniform_over_the_other_classes():
    k = 10
    y = np.arange(200_000) % k
    noisy = symmetric_noise(y, 0.5, k, np.random.default_rng(3))
    flipped = noisy != y
    for source in (0, 7):
        targets = noisy[flipped & (y == source)]
        counts = np.bincount(targets, minlength=k)
        assert counts[source] == 0
        others = np.delete(counts, source)
        assert stats.chisquare(others).pvalue > 1e-3  # uniform over the K-1 other classes
    # which samples are flipped does not depend on the class either
    per_class = np.bincount(y[flipped], minlength=k)
    assert stats.chisquare(per_class).pvalue > 1e-3


def test_asymmetric_noise_follows_the_cifar10_map_exactly():
    y = np.repeat(np.arange(10), 10)
    noisy = asymmetric_noise(y, 0.3, CIFAR10_ASYMMETRIC, np.random.default_rng(0))
    expected_map = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}  # truck->automobile, bird->airplane, deer->horse, cat<->dog
    for c in range(10):
        members = noisy[y == c]
        if c in expected_map:
            assert (members == expected_map[c]).sum() == 3 and (members == c).sum() == 7
        else:
            assert (members == c).all()


def test_asymmetric_noise_is_cyclic_for_other_datasets_through_the_scenario():
    y = np.repeat(np.arange(4), 5)
    data = apply_scenarios(splits(y, 4), config(label_noise=0.4, noise_type="asymmetric"),
                           ScenarioContext(seed=2, dataset="digits"))
    noisy, clean = data.train.y.numpy(), data.train.y_clean.numpy()
    assert (clean == y).all()
    assert ((noisy == clean) | (noisy == (clean + 1) % 4)).all()
    assert [int((noisy[clean == c] != c).sum()) for c in range(4)] == [2, 2, 2, 2]
    assert cyclic_map(3) == {0: 1, 1: 2, 2: 0}


def test_label_noise_scenario_keeps_clean_labels_and_a_clean_test_split_and_is_seeded():
    y = np.arange(100) % 5
    base = splits(y, 5)
    a = apply_scenarios(base, config(label_noise=0.2), ScenarioContext(seed=1))
    b = apply_scenarios(base, config(label_noise=0.2), ScenarioContext(seed=1))
    c = apply_scenarios(base, config(label_noise=0.2), ScenarioContext(seed=2))
    assert isinstance(a.train, NoisyData)
    assert torch.equal(a.train.y_clean, base.train.y)
    assert int((a.train.y != a.train.y_clean).sum()) == 20
    assert torch.equal(a.train.y, b.train.y) and not torch.equal(a.train.y, c.train.y)
    assert a.test is base.test and a.val is base.val


def test_limited_data_keeps_round_fraction_of_every_class():
    y = np.array([0] * 10 + [1] * 7 + [2] * 5)
    assert limited_counts(y, 0.5) == {0: 5, 1: 4, 2: 3}  # 5, 3.5 -> 4, 2.5 -> 3
    data = apply_scenarios(splits(y, 3), config(data_fraction=0.5), ScenarioContext(seed=0))
    kept = data.train.y.numpy()
    assert np.bincount(kept).tolist() == [5, 4, 3]
    rows = data.train.x[:, 0].long().numpy()  # the original positions of the kept samples
    assert (y[rows] == kept).all() and len(set(rows)) == len(rows)


def test_imbalance_counts_follow_the_exponential_profile():
    y = np.repeat(np.arange(5), 100)
    # n_c = floor(100 * 10 ** (-c / 4)): 100, 56.2, 31.6, 17.8, 10
    assert long_tail_counts(y, 10.0, 5) == {0: 100, 1: 56, 2: 31, 3: 17, 4: 10}
    data = apply_scenarios(splits(y, 5), config(imbalance_ratio=10.0), ScenarioContext(seed=0))
    assert np.bincount(data.train.y.numpy()).tolist() == [100, 56, 31, 17, 10]


def test_noise_is_applied_after_limited_data_to_exactly_the_kept_samples():
    y = np.arange(200) % 4
    data = apply_scenarios(splits(y, 4), config(label_noise=0.25, data_fraction=0.5), ScenarioContext(seed=0))
    assert len(data.train) == 100 and int((data.train.y != data.train.y_clean).sum()) == 25
    assert describe(config(label_noise=0.25, data_fraction=0.5)) == "data_fraction=0.5, label_noise=0.25"
    assert describe(config()) == "clean"


@pytest.mark.parametrize("changes", [{"label_noise": 1.0}, {"noise_type": "pairs"}, {"data_fraction": 0},
                                     {"imbalance_ratio": 0.5}, {"subset": "middle"}, {"score_runs": 0}])
def test_scenario_fields_are_validated(changes):
    with pytest.raises(ConfigError):
        build_spec({"method": "dense", **changes})
