"""The .npz reader: both key layouts read back exactly, and clear errors for bad archives."""

import numpy as np
import pytest

from sparsetrain.data import load, path_in_identity
from sparsetrain.errors import UserError


def test_split_keys_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.normal(size=(6, 2, 5)), "y_train": np.array([0, 2, 1, 2, 0, 1]),
              "x_test": rng.normal(size=(3, 2, 5)), "y_test": np.array([4, 0, 1])}
    np.savez(tmp_path / "mine.npz", **arrays)
    for data_dir in (tmp_path / "mine.npz", tmp_path):  # the file itself, or the folder holding only it
        s = load("npz", data_dir=str(data_dir), val_fraction=0.0)
        assert s.input_shape == (2, 5) and s.num_classes == 5  # largest label + 1
        np.testing.assert_array_equal(s.train.x.numpy(), arrays["x_train"].astype(np.float32))
        np.testing.assert_array_equal(s.test.x.numpy(), arrays["x_test"].astype(np.float32))
        assert s.train.y.tolist() == [0, 2, 1, 2, 0, 1] and s.test.y.tolist() == [4, 0, 1]


def test_single_pair_with_a_fixed_test_fraction(tmp_path):
    x = np.arange(40, dtype=np.uint8).reshape(20, 2)
    y = np.array([0] * 10 + [1] * 10, dtype=np.int32)
    np.savez_compressed(tmp_path / "a.npz", x=x, y=y)
    np.savez(tmp_path / "b.npz", x=x, y=y)
    a = load("npz", data_dir=str(tmp_path), file="a.npz", seed=0, val_fraction=0.0, test_fraction=0.3)
    b = load("npz", data_dir=str(tmp_path), file="a.npz", seed=5, val_fraction=0.1, test_fraction=0.3)
    assert a.test.y.tolist() == [0, 0, 0, 1, 1, 1] and len(a.train) == 14
    assert np.array_equal(a.test.x.numpy(), b.test.x.numpy())  # fixed test split, whatever the run seed
    # every sample lands in exactly one split, unchanged
    rows = np.concatenate([a.train.x.numpy(), a.test.x.numpy()])
    assert sorted(map(tuple, rows.astype(int).tolist())) == sorted(map(tuple, x.astype(int).tolist()))
    with pytest.raises(UserError, match=r"holds 2 \.npz files; point data_dir at the archive or name it with the option file"):
        load("npz", data_dir=str(tmp_path))


@pytest.mark.parametrize("arrays, message", [
    ({"images": np.zeros((2, 3)), "labels": np.zeros(2)},
     r"has arrays images, labels; expected x_train, y_train, x_test, y_test or x, y"),
    ({"x": np.zeros((3, 2)), "y": np.array([0, 1])}, r"has 3 rows in x but 2 labels in y"),
    ({"x": np.zeros((2, 2)), "y": np.array([0.5, 1.0])}, r"has y of dtype float64 and shape \(2,\); it must be whole numbers"),
    ({"x": np.zeros((2, 2)), "y": np.array([0, -1])}, r"has negative label -1 in y"),
    ({"x": np.array([[0.0, np.nan], [1, 2]]), "y": np.array([0, 1])}, r"has NaN or infinite values in x"),
    ({"x": np.zeros(4), "y": np.zeros(4, int)}, r"has x of dtype float64 and shape \(4,\); it must be numbers of shape \(N, \.\.\.\)"),
    ({"x_train": np.zeros((2, 3)), "y_train": np.zeros(2, int), "x_test": np.zeros((2, 4)), "y_test": np.zeros(2, int)},
     r"has x_train samples of shape \(3,\) but x_test samples of shape \(4,\)"),
])
def test_bad_arrays_are_one_clear_error(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(UserError, match=message):
        load("npz", data_dir=str(tmp_path / "d.npz"))


def test_damaged_or_pickled_archives(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2)), y=np.zeros(4, int))
    raw = (tmp_path / "d.npz").read_bytes()
    (tmp_path / "d.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UserError, match=r"d\.npz' is damaged or not a \.npz archive"):
        load("npz", data_dir=str(tmp_path / "d.npz"))
    np.savez(tmp_path / "o.npz", x=np.array([{"a": 1}, None], dtype=object), y=np.zeros(2, int))
    with pytest.raises(UserError, match=r"o\.npz' holds Python objects"):
        load("npz", data_dir=str(tmp_path / "o.npz"))
    with pytest.raises(UserError, match=r"missing\.npz' does not exist"):
        load("npz", data_dir=str(tmp_path), file="missing.npz")
    with pytest.raises(UserError, match="dataset 'npz' reads files from disk"):
        load("npz")
    assert path_in_identity("npz")
