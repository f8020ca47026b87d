"""CIFAR-10/100 readers: round trip of tiny batches, checksums, the restricted unpickler, clear errors."""

import io
import os
import pickle

import numpy as np
import pytest
import torch

import sparsetrain.data.cifar as cifar
from file_formats import cifar_row, py2_cifar_pickle, write_cifar_batch
from sparsetrain.data import load, path_in_identity
from sparsetrain.data.files import md5
from sparsetrain.errors import UserError

MEAN = np.array([0.4914, 0.4822, 0.4465])  # CIFAR-10 training-set statistics, as documented
STD = np.array([0.2470, 0.2435, 0.2616])
PER_BATCH = 3


def make_cifar10(root, protocol=3):
    """cifar-10-batches-py with 5 train batches of 3 images and a test batch of 4; returns the arrays."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5 * PER_BATCH + 4, 3, 32, 32), dtype=np.uint8)
    labels = [(3 * i + 1) % 10 for i in range(len(images))]
    for b in range(5):
        part = slice(b * PER_BATCH, (b + 1) * PER_BATCH)
        write_cifar_batch(folder / f"data_batch_{b + 1}", images[part], labels[part], protocol=protocol)
    write_cifar_batch(folder / "test_batch", images[-4:], labels[-4:], protocol=protocol)
    return folder, images, np.array(labels)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])  # 2: bytes through _codecs.encode
def test_cifar10_round_trip(tmp_path, protocol):
    _, images, labels = make_cifar10(tmp_path, protocol)
    s = load("cifar10", data_dir=str(tmp_path), val_fraction=0.0, verify=False, normalize=False)
    n_train = 5 * PER_BATCH
    assert s.input_shape == (3, 32, 32) and s.num_classes == 10 and len(s.val) == 0
    assert s.train.x.dtype == torch.float32 and s.train.x.shape == (n_train, 3, 32, 32)
    np.testing.assert_allclose(s.train.x.numpy(), images[:n_train] / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_allclose(s.test.x.numpy(), images[n_train:] / 255.0, rtol=0, atol=1e-7)
    assert s.train.y.tolist() == labels[:n_train].tolist() and s.test.y.tolist() == labels[n_train:].tolist()


def test_cifar10_normalized_and_pixel_layout(tmp_path):
    folder, images, _ = make_cifar10(tmp_path)
    s = load("cifar10", data_dir=str(folder), val_fraction=0.0, verify=False)  # data_dir = the folder itself
    expected = (images[:5 * PER_BATCH] / 255.0 - MEAN[:, None, None]) / STD[:, None, None]
    np.testing.assert_allclose(s.train.x.numpy(), expected, rtol=0, atol=1e-5)
    # one pixel by hand: image 0, green channel, row 2, column 5
    assert s.train.x[0, 1, 2, 5].item() == pytest.approx((images[0, 1, 2, 5] / 255 - 0.4822) / 0.2435, abs=1e-5)


def test_cifar10_validation_split_comes_from_train(tmp_path):
    make_cifar10(tmp_path)
    a = load("cifar10", data_dir=str(tmp_path), val_fraction=0.2, verify=False, seed=1)
    assert len(a.train) + len(a.val) == 5 * PER_BATCH and len(a.val) == 3 and len(a.test) == 4


def test_official_file_names_with_other_content_fail_verification(tmp_path):
    make_cifar10(tmp_path)
    with pytest.raises(UserError, match=r"data_batch_1' has MD5 [0-9a-f]{32}, not the official CIFAR-10 "
                                        r"checksum c99cafc152244af753f735de768cd75f.*verify=false"):
        load("cifar10", data_dir=str(tmp_path))


def test_verification_passes_when_every_checksum_matches(tmp_path, monkeypatch):
    folder, _, _ = make_cifar10(tmp_path)
    monkeypatch.setattr(cifar, "CIFAR10_FILES", {name: md5(folder / name) for name in cifar.CIFAR10_FILES})
    assert len(load("cifar10", data_dir=str(tmp_path)).test) == 4
    with open(folder / "data_batch_4", "ab") as f:  # one byte appended: damaged
        f.write(b"\0")
    with pytest.raises(UserError, match="data_batch_4' has MD5"):
        load("cifar10", data_dir=str(tmp_path))


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_without_running(tmp_path):
    folder, _, _ = make_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    (folder / "data_batch_2").write_bytes(pickle.dumps({b"data": _Evil(marker), b"labels": [1]}, protocol=3))
    with pytest.raises(UserError, match=r"data_batch_2' is not a CIFAR batch: its pickle asks for "
                                        r"(posix|nt)\.system, and only numpy arrays"):
        load("cifar10", data_dir=str(tmp_path), verify=False)
    assert not marker.exists()


@pytest.mark.parametrize("payload, refused", [
    ({b"data": np.float64(1.5)}, r"numpy\._core\.multiarray\.scalar"),  # a numpy scalar, not an array
    ({b"data": {1, 2}}, r"builtins\.set"),
    ({b"data": eval}, r"builtins\.eval"),
])
def test_restricted_unpickler_refuses_every_other_global(tmp_path, payload, refused):
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps(payload, protocol=3))
    with pytest.raises(UserError, match=f"its pickle asks for {refused},"):
        cifar.read_batch(path, "labels", 10)


def _encode_call(text: bytes, encoding: bytes) -> bytes:
    """A protocol-2 pickle of ``_codecs.encode(text, encoding)``, written opcode by opcode."""
    unicode = lambda s: b"X" + len(s).to_bytes(4, "little") + s  # noqa: E731  (BINUNICODE)
    return b"\x80\x02c_codecs\nencode\n" + unicode(text) + unicode(encoding) + b"\x86R."


def test_protocol_2_bytes_are_read_through_latin1_only():
    """Python 3's protocol 2 writes bytes as _codecs.encode(str, 'latin1'): that one form is
    accepted; any other codec through the same global is refused."""
    assert pickle.loads(_encode_call(b"ab\xc3\xa9", b"latin1")) == "abé".encode("latin1")  # what pickle does
    assert cifar.RestrictedUnpickler(io.BytesIO(_encode_call(b"ab\xc3\xa9", b"latin1"))).load() == \
        "abé".encode("latin1")
    for codec in (b"utf-8", b"rot13", b"base64"):
        with pytest.raises(cifar.ForbiddenGlobal, match="_codecs.encode with str"):
            cifar.RestrictedUnpickler(io.BytesIO(_encode_call(b"abc", codec))).load()


def test_protocol_2_encode_of_a_non_string_is_refused(tmp_path):
    path = tmp_path / "batch"
    path.write_bytes(b"\x80\x02c_codecs\nencode\nK\x07X\x06\x00\x00\x00latin1\x86R.")  # encode(7, 'latin1')
    refused = "_codecs.encode with int and 'latin1'"
    with pytest.raises(UserError, match=f"its pickle asks for {refused},"):
        cifar.read_batch(path, "labels", 10)


def test_legacy_numpy_module_name_of_the_official_files_is_accepted(tmp_path):
    folder, images, _ = make_cifar10(tmp_path)
    path = folder / "test_batch"
    raw = path.read_bytes()
    assert b"numpy._core.multiarray\n_reconstruct" in raw  # protocol 3 names globals as text lines
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))  # as numpy 1 wrote them
    x, y = cifar.read_batch(path, "labels", 10)
    assert np.array_equal(x, images[-4:])


def test_a_batch_pickled_as_python_2_wrote_the_official_files(tmp_path):
    images = np.random.default_rng(4).integers(0, 256, size=(3, 3, 32, 32), dtype=np.uint8)
    raw = py2_cifar_pickle(np.stack([cifar_row(im) for im in images]), [7, 0, 9])
    (tmp_path / "batch").write_bytes(raw)
    x, y = cifar.read_batch(tmp_path / "batch", "labels", 10)
    assert np.array_equal(x, images) and y.tolist() == [7, 0, 9]


def test_truncated_batch_is_one_clear_error(tmp_path):
    folder, _, _ = make_cifar10(tmp_path)
    raw = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UserError, match=r"data_batch_3' is truncated or not a CIFAR python batch") as info:
        load("cifar10", data_dir=str(tmp_path), verify=False)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("change, message", [
    (lambda f: (f / "data_batch_5").unlink(), "data_batch_5' does not exist"),
    (lambda f: write_cifar_batch(f / "data_batch_1", np.zeros((2, 3, 32, 32), np.uint8), [1, 10]),
     r"data_batch_1' has label 10, outside 0\.\.9"),
    (lambda f: write_cifar_batch(f / "data_batch_1", np.zeros((2, 3, 32, 32), np.uint8), [1]),
     r"data_batch_1' has 'labels' that is not a list of 2 whole numbers"),
    (lambda f: (f / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})),
     r"test_batch' has 'data' as a uint8 array of shape \(2, 100\), not a uint8 array of shape \(N, 3072\)"),
    (lambda f: (f / "test_batch").write_bytes(pickle.dumps({b"labels": [0]})), r"test_batch' has no 'data' entry"),
    (lambda f: (f / "test_batch").write_bytes(pickle.dumps([1, 2])), r"test_batch' holds a list, not the dict"),
])
def test_bad_batches_name_the_file_and_the_problem(tmp_path, change, message):
    folder, _, _ = make_cifar10(tmp_path)
    change(folder)
    with pytest.raises(UserError, match=message):
        load("cifar10", data_dir=str(tmp_path), verify=False)


def test_data_dir_required_and_must_hold_the_files(tmp_path):
    with pytest.raises(UserError, match=r"dataset 'cifar10' reads files from disk: pass --data-dir"):
        load("cifar10")
    with pytest.raises(UserError, match=r"data_dir '.*nowhere' does not exist"):
        load("cifar10", data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match=r"no cifar10 files in data_dir .*cifar-10-batches-py/test_batch"):
        load("cifar10", data_dir=str(tmp_path))
    with pytest.raises(UserError, match="cifar10 option verify must be true or false"):
        load("cifar10", data_dir=str(tmp_path), verify="no")


def test_cifar100_fine_and_coarse_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(7, 3, 32, 32), dtype=np.uint8)
    fine, coarse = [0, 99, 42, 7, 13, 64, 5], [0, 19, 8, 1, 2, 12, 1]
    for name, part in (("train", slice(0, 5)), ("test", slice(5, 7))):
        write_cifar_batch(folder / name, images[part], fine[part], label_key="fine_labels",
                          extra={b"coarse_labels": coarse[part]})
    s = load("cifar100", data_dir=str(tmp_path), val_fraction=0.0, verify=False)
    assert s.num_classes == 100 and s.train.y.tolist() == fine[:5] and s.test.y.tolist() == fine[5:]
    expected = (images[:5] / 255.0 - np.array([0.5071, 0.4865, 0.4409])[:, None, None]) / \
        np.array([0.2673, 0.2564, 0.2762])[:, None, None]
    np.testing.assert_allclose(s.train.x.numpy(), expected, rtol=0, atol=1e-5)
    c = load("cifar100", data_dir=str(tmp_path), val_fraction=0.0, verify=False, labels="coarse")
    assert c.num_classes == 20 and c.train.y.tolist() == coarse[:5] and c.test.y.tolist() == coarse[5:]
    with pytest.raises(UserError, match="train' has MD5 .* not the official CIFAR-100 checksum"):
        load("cifar100", data_dir=str(tmp_path))
    with pytest.raises(UserError, match="labels must be fine or coarse"):
        load("cifar100", data_dir=str(tmp_path), labels="medium")


def test_data_dir_is_identity_only_for_unverified_batches():
    assert not path_in_identity("cifar10", {}) and not path_in_identity("cifar10", {"verify": True})
    assert path_in_identity("cifar10", {"verify": False}) and path_in_identity("cifar100", {"verify": False})
