"""MNIST / Fashion-MNIST IDX readers: raw and gzipped round trips, header checks, clear errors."""

import gzip

import numpy as np
import pytest
import torch

from file_formats import idx_bytes, write_idx
from sparsetrain.data import load, path_in_identity
from sparsetrain.errors import UserError

NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def make_mnist(folder, gz=False, n_train=6, n_test=3):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) * 7 + 3) % 10
        write_idx(folder / NAMES[split][0], images, gz)
        write_idx(folder / NAMES[split][1], labels, gz)
        arrays[split] = images, labels
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_round_trip_raw_and_gz(tmp_path, gz):
    arrays = make_mnist(tmp_path, gz)
    s = load("mnist", data_dir=str(tmp_path), val_fraction=0.0, normalize=False)
    assert s.input_shape == (1, 28, 28) and s.num_classes == 10 and s.train.x.dtype == torch.float32
    for part, split in ((s.train, "train"), (s.test, "test")):
        images, labels = arrays[split]
        np.testing.assert_allclose(part.x.numpy(), images[:, None] / 255.0, rtol=0, atol=1e-7)
        assert part.y.tolist() == labels.tolist()


def test_normalized_with_the_documented_statistics(tmp_path):
    arrays = make_mnist(tmp_path / "MNIST" / "raw")  # torchvision's layout is found too
    s = load("mnist", data_dir=str(tmp_path), val_fraction=0.0)
    np.testing.assert_allclose(s.train.x.numpy(), (arrays["train"][0][:, None] / 255.0 - 0.1307) / 0.3081,
                               rtol=0, atol=1e-5)
    make_mnist(tmp_path / "fashion", gz=True)
    f = load("fashion_mnist", data_dir=str(tmp_path / "fashion"), val_fraction=0.0)
    np.testing.assert_allclose(f.test.x.numpy(), (arrays["test"][0][:, None] / 255.0 - 0.2860) / 0.3530,
                               rtol=0, atol=1e-5)


def test_idx_header_bytes_by_hand():
    data = idx_bytes(np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8))
    assert data == b"\x00\x00\x08\x02" + b"\x00\x00\x00\x02" + b"\x00\x00\x00\x03" + bytes([1, 2, 3, 4, 5, 6])


def _corrupt(folder, name, transform):
    path = folder / name
    path.write_bytes(transform(path.read_bytes()))


@pytest.mark.parametrize("name, transform, message", [
    (NAMES["train"][0], lambda b: b[:-10],
     r"train-images-idx3-ubyte' is truncated: its header declares shape \(6, 28, 28\) \(4704 bytes of values\) "
     r"but only 4694 bytes follow"),
    (NAMES["train"][1], lambda b: b[:6], r"train-labels-idx1-ubyte' is truncated: its header needs 8 bytes but the file has 6"),
    (NAMES["test"][1], lambda b: b[:2], r"t10k-labels-idx1-ubyte' is truncated: it has 2 bytes"),
    (NAMES["test"][0], lambda b: b"\x00\x00\x08\x01" + b[4:],
     r"t10k-images-idx3-ubyte' has magic number 0x00000801, not 0x00000803 \(uint8 IDX with 3 dimensions\)"),
    (NAMES["train"][1], lambda b: b"\x1f\x8b\x08\x00" + b[4:], r"has magic number 0x1f8b0800, not 0x00000801"),
    (NAMES["test"][0], lambda b: b + b"\x00\x00", r"t10k-images-idx3-ubyte' has 2 bytes more than the shape \(3, 28, 28\)"),
])
def test_damaged_files_are_one_clear_error(tmp_path, name, transform, message):
    make_mnist(tmp_path)
    _corrupt(tmp_path, name, transform)
    with pytest.raises(UserError, match=message) as info:
        load("mnist", data_dir=str(tmp_path))
    assert "\n" not in str(info.value)


def test_truncated_gzip_is_a_clear_error(tmp_path):
    make_mnist(tmp_path, gz=True)
    _corrupt(tmp_path, NAMES["train"][0] + ".gz", lambda b: b[: len(b) // 2])
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte\.gz' is not a complete gzip file"):
        load("mnist", data_dir=str(tmp_path))


def test_counts_sizes_and_labels_are_checked(tmp_path):
    make_mnist(tmp_path)
    write_idx(tmp_path / NAMES["train"][1], np.zeros(5, np.uint8))
    with pytest.raises(UserError, match=r"train-labels-idx1-ubyte' has 5 labels but train-images-idx3-ubyte has 6 images"):
        load("mnist", data_dir=str(tmp_path))
    write_idx(tmp_path / NAMES["train"][1], np.array([0, 1, 2, 3, 4, 11], np.uint8))
    with pytest.raises(UserError, match=r"train-labels-idx1-ubyte' has label 11, outside 0\.\.9"):
        load("mnist", data_dir=str(tmp_path))
    write_idx(tmp_path / NAMES["train"][0], np.zeros((6, 8, 8), np.uint8))
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte' has images of 8x8 pixels, not 28x28"):
        load("mnist", data_dir=str(tmp_path))


def test_missing_files_and_folder(tmp_path):
    with pytest.raises(UserError, match=r"dataset 'mnist' reads files from disk: pass --data-dir"):
        load("mnist")
    with pytest.raises(UserError, match=r"no fashion_mnist files in data_dir .*train-images-idx3-ubyte or "
                                        r"train-images-idx3-ubyte\.gz there or in one of FashionMNIST/raw"):
        load("fashion_mnist", data_dir=str(tmp_path))
    make_mnist(tmp_path)
    (tmp_path / NAMES["test"][0]).unlink()
    with pytest.raises(UserError, match=r"t10k-images-idx3-ubyte' does not exist \(nor with \.gz\)"):
        load("mnist", data_dir=str(tmp_path))


def test_gz_of_the_same_bytes_reads_the_same(tmp_path):
    make_mnist(tmp_path / "raw")
    (tmp_path / "gz").mkdir()
    for path in (tmp_path / "raw").iterdir():
        (tmp_path / "gz" / (path.name + ".gz")).write_bytes(gzip.compress(path.read_bytes()))
    a = load("mnist", data_dir=str(tmp_path / "raw"), seed=3)
    b = load("mnist", data_dir=str(tmp_path / "gz"), seed=3)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y, b.val.y) and torch.equal(a.test.x, b.test.x)
    assert path_in_identity("mnist") and path_in_identity("fashion_mnist")
