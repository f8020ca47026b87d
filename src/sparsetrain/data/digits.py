"""The 8x8 handwritten digits that ship with scikit-learn (no download).

Alpaydin & Kaynak, "Optical Recognition of Handwritten Digits", UCI Machine Learning
Repository (1998); scikit-learn's ``load_digits`` holds the 1797 images of its test set.
"""

from __future__ import annotations

import numpy as np

from sparsetrain.data.base import DatasetSplits, carve_validation, register_dataset, stratified_split

TEST_FRACTION = 0.2
TEST_SEED = 0  # fixed, so every run seed is scored on the same test images


@register_dataset("digits", help="scikit-learn 8x8 digits (UCI optdigits): 10 classes, 1797 images, 20% test")
def load_digits(*, seed: int, val_fraction: float, data_dir: str | None) -> DatasetSplits:
    """Images as ``(N, 1, 8, 8)`` float32 in [0, 1] (pixel counts 0..16 divided by 16)."""
    from sklearn.datasets import load_digits as sklearn_digits  # imported here: sklearn is slow to import

    bunch = sklearn_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    train_idx, test_idx = stratified_split(y, TEST_FRACTION, TEST_SEED)
    return carve_validation(
        "digits", x[train_idx], y[train_idx], x[test_idx], y[test_idx],
        seed=seed, val_fraction=val_fraction, num_classes=10, normalization=((), ()),
    )
