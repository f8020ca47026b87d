"""Writers of tiny files in the real dataset formats, for the reader tests (written from
each format's specification, independently of the readers under test)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def cifar_row(image: np.ndarray) -> np.ndarray:
    """A (3, 32, 32) uint8 image as a CIFAR row: the red plane, then green, then blue, each row by row."""
    return np.concatenate([image[0].ravel(), image[1].ravel(), image[2].ravel()])


def write_cifar_batch(path: Path, images: np.ndarray, labels: list[int], label_key: str = "labels",
                      protocol: int = 3, extra: dict | None = None) -> None:
    """A batch with the structure of the official files: a dict with bytes keys, a uint8
    (N, 3072) array, labels as a list of ints and file names as bytes."""
    batch = {
        b"batch_label": b"tiny batch",
        label_key.encode(): [int(v) for v in labels],
        b"data": np.stack([cifar_row(im) for im in images]).astype(np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))],
    }
    batch.update(extra or {})
    path.write_bytes(pickle.dumps(batch, protocol=protocol))


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file: magic (0, 0, 0x08 = uint8, number of dims), big-endian uint32 dims, values."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    data = idx_bytes(array)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def py2_cifar_pickle(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch pickled opcode by opcode as Python 2 and numpy 1 wrote the official files
    (protocol 2, byte strings as SHORT_BINSTRING/BINSTRING, ``numpy.core.multiarray``)."""
    def s(b: bytes) -> bytes:
        return (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<i", len(b))) + b

    def i(n: int) -> bytes:
        return b"K" + bytes([n]) if 0 <= n < 256 else b"J" + struct.pack("<i", n)

    dtype = b"cnumpy\ndtype\n" + s(b"u1") + i(0) + i(1) + b"\x87R" + \
        b"(" + i(3) + s(b"|") + b"NNN" + i(-1) + i(-1) + i(0) + b"tb"
    array = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + i(0) + b"\x85" + s(b"b") + b"\x87R" + \
        b"(" + i(1) + i(data.shape[0]) + i(data.shape[1]) + b"\x86" + dtype + b"\x89" + s(data.tobytes()) + b"tb"
    label_list = b"](" + b"".join(i(v) for v in labels) + b"e"
    return (b"\x80\x02}(" + s(b"batch_label") + s(b"training batch 1 of 5") + s(b"data") + array
            + s(b"labels") + label_list + b"u.")
