"""MNIST and Fashion-MNIST from their IDX files (raw or gzipped), with every header checked.

LeCun, Bottou, Bengio & Haffner, "Gradient-based learning applied to document
recognition", Proc. IEEE 1998 (format: http://yann.lecun.com/exdb/mnist/);
Xiao, Rasul & Vollgraf, "Fashion-MNIST", arXiv:1708.07747 (2017), same format and names.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the values. Image files have
magic 0x00000803 (uint8, 3 dims: count, rows, cols) and label files 0x00000801 (uint8,
1 dim). The reader checks the magic, the 28x28 size, that the data is exactly as long as
the header says, that images and labels match in count and that labels are 0..9.

Images come back as float32 ``(N, 1, 28, 28)``: pixel values divided by 255, then, with
``normalize`` (the default), standardized with the usual training-set mean and std
(MNIST 0.1307 / 0.3081, Fashion-MNIST 0.2860 / 0.3530).
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from sparsetrain.data.base import DatasetSplits, carve_validation, register_dataset
from sparsetrain.data.files import check_flag, check_labels, file_error, find_folder, read_bytes, require_data_dir
from sparsetrain.errors import UserError

IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801
SIZE = 28
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array in IDX file ``path`` (``.gz`` is decompressed); its magic must be ``magic``."""
    raw = read_bytes(path)
    ndim = magic & 0xFF
    if len(raw) < 4:
        raise file_error(path, f"is truncated: it has {len(raw)} bytes, fewer than the 4-byte magic number")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise file_error(path, f"has magic number 0x{found:08x}, not 0x{magic:08x} "
                               f"(uint8 IDX with {ndim} dimension{'s' if ndim > 1 else ''})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise file_error(path, f"is truncated: its header needs {header} bytes but the file has {len(raw)}")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected, got = math.prod(shape), len(raw) - header
    if got < expected:
        raise file_error(path, f"is truncated: its header declares shape {shape} ({expected} bytes of values) "
                               f"but only {got} bytes follow")
    if got > expected:
        raise file_error(path, f"has {got - expected} bytes more than the shape {shape} its header declares")
    return np.frombuffer(raw, dtype=np.uint8, count=expected, offset=header).reshape(shape)


def _file(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise file_error(folder / name, "does not exist (nor with .gz)")


def read_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 images (N, 28, 28), int64 labels (N,))`` of the ``train`` or ``test`` files."""
    images_name, labels_name = FILES[split]
    images_path, labels_path = _file(folder, images_name), _file(folder, labels_name)
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC).astype(np.int64)
    if images.shape[1:] != (SIZE, SIZE):
        raise file_error(images_path, f"has images of {images.shape[1]}x{images.shape[2]} pixels, not {SIZE}x{SIZE}")
    if len(images) != len(labels):
        raise file_error(labels_path, f"has {len(labels)} labels but {images_path.name} has {len(images)} images")
    check_labels(labels_path, labels, 10)
    return images, labels


def _load(dataset: str, subfolders: list[str], mean: float, std: float, *, seed: int,
          val_fraction: float, data_dir: str | None, normalize: bool) -> DatasetSplits:
    check_flag(dataset, "normalize", normalize)
    root = require_data_dir(dataset, data_dir, "the IDX files (train-images-idx3-ubyte[.gz], ...)")
    first = FILES["train"][0]
    folder = find_folder(root, subfolders, [first, f"{first}.gz"])
    if folder is None:
        raise UserError(f"no {dataset} files in data_dir {str(data_dir)!r}: expected {first} or {first}.gz "
                        f"there or in one of {', '.join(subfolders)}")
    (x_train, y_train), (x_test, y_test) = read_split(folder, "train"), read_split(folder, "test")

    def images(x: np.ndarray) -> np.ndarray:
        out = x[:, None].astype(np.float32) / np.float32(255)
        return (out - np.float32(mean)) / np.float32(std) if normalize else out

    return carve_validation(dataset, images(x_train), y_train, images(x_test), y_test,
                            seed=seed, val_fraction=val_fraction, num_classes=10,
                            normalization=((float(mean),), (float(std),)) if normalize else ((), ()))


@register_dataset("mnist", help="MNIST IDX files (raw or .gz) from --data-dir: 10 classes, 1x28x28, 60000 train / 10000 test",
                  path_in_identity=True)
def load_mnist(*, seed: int, val_fraction: float, data_dir: str | None, normalize: bool = True) -> DatasetSplits:
    """MNIST from ``data_dir`` or its ``MNIST/raw`` or ``mnist`` subfolder; see the module doc."""
    return _load("mnist", ["MNIST/raw", "MNIST", "mnist"], 0.1307, 0.3081,
                 seed=seed, val_fraction=val_fraction, data_dir=data_dir, normalize=normalize)


@register_dataset("fashion_mnist", help="Fashion-MNIST IDX files (raw or .gz) from --data-dir: 10 classes, 1x28x28",
                  path_in_identity=True)
def load_fashion_mnist(*, seed: int, val_fraction: float, data_dir: str | None, normalize: bool = True) -> DatasetSplits:
    """Fashion-MNIST from ``data_dir`` or its ``FashionMNIST/raw``, ``fashion_mnist`` or ``fashion-mnist`` subfolder."""
    return _load("fashion_mnist", ["FashionMNIST/raw", "FashionMNIST", "fashion_mnist", "fashion-mnist"],
                 0.2860, 0.3530, seed=seed, val_fraction=val_fraction, data_dir=data_dir, normalize=normalize)
