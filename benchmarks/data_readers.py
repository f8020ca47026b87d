"""Time the file readers on full-size files and the crop_flip augmentation per batch.

Writes synthetic files of the real sizes (random pixels; CIFAR-10: 5 x 10,000 + 10,000
images in the official pickle structure; MNIST: 60,000 + 10,000 IDX images, raw and
gzipped) into a temporary folder, then times `sparsetrain.data.load` on them, the MD5
verification of CIFAR-10's six files, and `crop_flip` on batches of 128 CIFAR images.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/data_readers.py
"""

from __future__ import annotations

import gzip
import pickle
import resource
import struct
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sparsetrain.data import load
from sparsetrain.data.augment import crop_flip
from sparsetrain.data.cifar import CIFAR10_FILES
from sparsetrain.data.files import md5


def best_of(fn, repeat=3):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def write_cifar10(folder: Path) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in CIFAR10_FILES:
        batch = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, 10_000).tolist(),
                 b"data": rng.integers(0, 256, (10_000, 3072), dtype=np.uint8),
                 b"filenames": [b"x.png"] * 10_000}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4))


def write_mnist(folder: Path, gz: bool) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for prefix, n in (("train", 60_000), ("t10k", 10_000)):
        for kind, array in (("images-idx3", rng.integers(0, 256, (n, 28, 28))), ("labels-idx1", np.arange(n) % 10)):
            data = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
            data += array.astype(np.uint8).tobytes()
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=6))
            else:
                (folder / name).write_bytes(data)


def main() -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_cifar10(root / "cifar-10-batches-py")
        write_mnist(root / "mnist_raw", gz=False)
        write_mnist(root / "mnist_gz", gz=True)
        rows = [
            ("cifar10 load (verify=false, val 10%)", best_of(lambda: load("cifar10", data_dir=tmp, verify=False))),
            ("cifar10 MD5 of the 6 files (verify cost)",
             best_of(lambda: [md5(root / "cifar-10-batches-py" / n) for n in CIFAR10_FILES])),
            ("mnist load, raw IDX", best_of(lambda: load("mnist", data_dir=str(root / "mnist_raw")))),
            ("mnist load, gzipped IDX", best_of(lambda: load("mnist", data_dir=str(root / "mnist_gz")))),
        ]
    x = torch.randn(128, 3, 32, 32)
    gen = torch.Generator().manual_seed(0)
    per_batch = best_of(lambda: [crop_flip(x, gen) for _ in range(50)]) / 50
    rows.append(("crop_flip, one batch of 128 x 3x32x32", per_batch))
    rows.append(("crop_flip, one CIFAR-10 epoch (352 batches of 128)", per_batch * 352))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print("| what | seconds |\n|---|---|")
    for what, seconds in rows:
        print(f"| {what} | {seconds:.4f} |")
    print(f"peak resident memory: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
