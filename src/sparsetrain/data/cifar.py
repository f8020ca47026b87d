"""CIFAR-10 and CIFAR-100 from the official "python version" batches, read safely.

Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", tech. report, 2009;
files: https://www.cs.toronto.edu/~kriz/cifar.html (``cifar-10-python.tar.gz``,
``cifar-100-python.tar.gz``, extracted). Nothing is downloaded.

The batches are Python pickles. Unpickling runs whatever a file asks for, so a
`RestrictedUnpickler` resolves only the globals these files name (numpy's array
reconstruction, ``numpy.ndarray``, ``numpy.dtype``, under their numpy 1 and 2 module
names, the protocol-5 form of an array, and ``_codecs.encode(str, 'latin1')``, the form
in which Python 3's protocol 2 writes bytes); dicts, lists, ints and strings need no
global, and anything else is refused. Before that, each file's MD5 is checked against
the official checksum (``verify=False`` skips this for batches you wrote yourself in the
same format).

Images come back as float32 ``(N, 3, 32, 32)``: pixel values divided by 255, then, with
``normalize`` (the default), standardized per channel with the usual training-set
statistics below (mean and population std of the 50,000 training images).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from sparsetrain.data.base import DatasetSplits, carve_validation, register_dataset
from sparsetrain.data.files import check_flag, check_labels, file_error, find_folder, md5, require_data_dir
from sparsetrain.errors import UserError

CIFAR10_FILES = {  # official MD5 checksums of the extracted files
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
CIFAR100_FILES = {"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc"}

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)

# numpy's array-rebuilding functions, taken from numpy itself wherever its version keeps them
_RECONSTRUCT = np.zeros(0).__reduce__()[0]
_FROMBUFFER = np.zeros(0).__reduce_ex__(5)[0]
class ForbiddenGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside the allowed ones."""


def _latin1_bytes(text: Any, encoding: Any = "latin1") -> bytes:
    """What ``_codecs.encode`` is allowed to do in a batch: Python 3's pickle protocol 2
    writes every ``bytes`` object as ``_codecs.encode(<str>, 'latin1')``. Only that form is
    accepted (a str and the latin1 codec), so no other codec or argument is reachable."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ForbiddenGlobal(f"_codecs.encode with {type(text).__name__} and {encoding!r}")
    return text.encode("latin1")


_ALLOWED_GLOBALS = {
    ("_codecs", "encode"): _latin1_bytes,  # bytes in protocol 2 pickles written by Python 3
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,  # written by numpy < 2 (the official files)
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # written by numpy >= 2
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,  # pickle protocol 5 (Python >= 3.14's default)
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only dicts, lists, numbers, strings and numpy arrays; any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ForbiddenGlobal(f"{module}.{name}") from None


def read_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as ``(uint8 images (N, 3, 32, 32), int64 labels (N,) in [0, num_classes))``."""
    if not path.is_file():
        raise file_error(path, "does not exist")
    try:
        with open(path, "rb") as f:
            batch = RestrictedUnpickler(f, encoding="bytes").load()
    except ForbiddenGlobal as exc:
        raise file_error(path, f"is not a CIFAR batch: its pickle asks for {exc}, and only numpy "
                               "arrays, lists, numbers and strings are read") from None
    except Exception as exc:  # pickle raises many kinds of errors on damaged input
        raise file_error(path, f"is truncated or not a CIFAR python batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(batch, dict):
        raise file_error(path, f"holds a {type(batch).__name__}, not the dict of a CIFAR batch")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    for key in ("data", label_key):
        if key not in batch:
            raise file_error(path, f"has no {key!r} entry (it has: {', '.join(map(str, batch))})")
    data = batch["data"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        what = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise file_error(path, f"has 'data' as a {what}, not a uint8 array of shape (N, 3072)")
    labels = np.asarray(batch[label_key])
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(data):
        raise file_error(path, f"has {label_key!r} that is not a list of {len(data)} whole numbers")
    check_labels(path, labels, num_classes)
    # each row holds the red, then green, then blue 32x32 plane, row by row
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _verify(folder: Path, files: dict[str, str], title: str) -> None:
    for name, official in files.items():
        path = folder / name
        if not path.is_file():
            raise file_error(path, "does not exist")
        if (found := md5(path)) != official:
            raise file_error(path, f"has MD5 {found}, not the official {title} checksum {official}, so it "
                                   "is damaged or not the original (pass verify=false for files you made yourself)")


def _images(x: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...], normalize: bool) -> np.ndarray:
    out = x.astype(np.float32)
    out /= np.float32(255)  # in place: the full training set is 614 MB as float32
    if normalize:
        out -= np.asarray(mean, np.float32)[:, None, None]
        out /= np.asarray(std, np.float32)[:, None, None]
    return out


def _folder(dataset: str, data_dir: str | None, subfolder: str, marker: str) -> Path:
    root = require_data_dir(dataset, data_dir, f"{subfolder}/ (the extracted python version)")
    folder = find_folder(root, [subfolder], marker)
    if folder is None:
        raise UserError(f"no {dataset} files in data_dir {str(data_dir)!r}: expected "
                        f"{str(root / subfolder / marker)!r} (extract the python version there)")
    return folder


@register_dataset("cifar10", help="CIFAR-10 python batches from --data-dir: 10 classes, 3x32x32, 50000 train / 10000 test",
                  path_in_identity=lambda options: not options.get("verify", True))
def load_cifar10(*, seed: int, val_fraction: float, data_dir: str | None,
                 verify: bool = True, normalize: bool = True) -> DatasetSplits:
    """CIFAR-10 from ``data_dir/cifar-10-batches-py`` (or ``data_dir`` itself); see the module doc."""
    check_flag("cifar10", "verify", verify)
    check_flag("cifar10", "normalize", normalize)
    folder = _folder("cifar10", data_dir, "cifar-10-batches-py", "test_batch")
    if verify:
        _verify(folder, CIFAR10_FILES, "CIFAR-10")
    parts = [read_batch(folder / f"data_batch_{i}", "labels", 10) for i in range(1, 6)]
    x_test, y_test = read_batch(folder / "test_batch", "labels", 10)
    x_train = np.concatenate([x for x, _ in parts])
    y_train = np.concatenate([y for _, y in parts])
    return carve_validation(
        "cifar10", _images(x_train, CIFAR10_MEAN, CIFAR10_STD, normalize), y_train,
        _images(x_test, CIFAR10_MEAN, CIFAR10_STD, normalize), y_test,
        seed=seed, val_fraction=val_fraction, num_classes=10,
        normalization=(CIFAR10_MEAN, CIFAR10_STD) if normalize else ((), ()),
    )


@register_dataset("cifar100", help="CIFAR-100 python files from --data-dir: 100 classes (20 with labels=coarse), 3x32x32",
                  path_in_identity=lambda options: not options.get("verify", True))
def load_cifar100(*, seed: int, val_fraction: float, data_dir: str | None,
                  verify: bool = True, normalize: bool = True, labels: str = "fine") -> DatasetSplits:
    """CIFAR-100 from ``data_dir/cifar-100-python`` (or ``data_dir``); ``labels``: fine (100) or coarse (20)."""
    if labels not in ("fine", "coarse"):
        raise UserError(f"cifar100 option labels must be fine or coarse; got {labels!r}")
    check_flag("cifar100", "verify", verify)
    check_flag("cifar100", "normalize", normalize)
    num_classes = 100 if labels == "fine" else 20
    folder = _folder("cifar100", data_dir, "cifar-100-python", "test")
    if verify:
        _verify(folder, CIFAR100_FILES, "CIFAR-100")
    x_train, y_train = read_batch(folder / "train", f"{labels}_labels", num_classes)
    x_test, y_test = read_batch(folder / "test", f"{labels}_labels", num_classes)
    return carve_validation(
        "cifar100", _images(x_train, CIFAR100_MEAN, CIFAR100_STD, normalize), y_train,
        _images(x_test, CIFAR100_MEAN, CIFAR100_STD, normalize), y_test,
        seed=seed, val_fraction=val_fraction, num_classes=num_classes,
        normalization=(CIFAR100_MEAN, CIFAR100_STD) if normalize else ((), ()),
    )
