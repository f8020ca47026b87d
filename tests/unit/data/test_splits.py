"""stratified_split: per-class quotas by largest remainder, seeded, disjoint and covering."""

import numpy as np
import pytest

from sparsetrain.data import stratified_split
from sparsetrain.errors import UserError


def held_counts(y, held):
    return np.bincount(y[held], minlength=y.max() + 1).tolist()


def test_proportional_per_class():
    y = np.array([0] * 10 + [1] * 20)
    keep, held = stratified_split(y, 0.1, seed=0)
    assert held_counts(y, held) == [1, 2]  # 10 * 0.1 and 20 * 0.1
    assert len(keep) == 27


def test_largest_remainder_breaks_ties_by_label():
    # quotas 1.5, 1.5, 2.0 -> floors 1, 1, 2; ceil(10 * 0.5) = 5 leaves one more, for the tie 0 vs 1 -> 0
    y = np.array([0] * 3 + [1] * 3 + [2] * 4)
    _, held = stratified_split(y, 0.5, seed=0)
    assert held_counts(y, held) == [2, 1, 2]


def test_total_held_is_ceiling():
    y = np.array([0, 0, 0, 0])
    _, held = stratified_split(y, 0.1, seed=0)  # ceil(0.4) = 1
    assert len(held) == 1


def test_zero_fraction_holds_nothing():
    y = np.array([0, 1, 1, 2])
    keep, held = stratified_split(y, 0.0, seed=3)
    assert held.tolist() == [] and keep.tolist() == [0, 1, 2, 3]


def test_labels_need_not_start_at_zero():
    y = np.array([7] * 5 + [3] * 10)
    _, held = stratified_split(y, 0.2, seed=0)
    assert sorted(y[held].tolist()) == [3, 3, 7]


def test_disjoint_covering_sorted():
    y = np.random.default_rng(0).integers(0, 5, size=103)
    keep, held = stratified_split(y, 0.25, seed=1)
    assert keep.dtype == np.int64 and held.dtype == np.int64
    assert set(keep) & set(held) == set()
    assert sorted(np.concatenate([keep, held]).tolist()) == list(range(103))
    assert (np.diff(keep) > 0).all() and (np.diff(held) > 0).all()


def test_seeded():
    y = np.repeat(np.arange(3), 100)
    a = stratified_split(y, 0.1, seed=5)
    b = stratified_split(y, 0.1, seed=5)
    c = stratified_split(y, 0.1, seed=6)
    assert np.array_equal(a[1], b[1]) and np.array_equal(a[0], b[0])
    assert not np.array_equal(a[1], c[1])
    assert held_counts(y, c[1]) == held_counts(y, a[1]) == [10, 10, 10]


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_fraction_out_of_range(fraction):
    with pytest.raises(UserError, match="fraction"):
        stratified_split(np.array([0, 1]), fraction, seed=0)
