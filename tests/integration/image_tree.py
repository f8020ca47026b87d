"""A small ImageNet-layout tree of JPEGs for the streamed-dataset tests (imagenet_folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_image_tree(root: Path, train: int = 16, val: int = 4) -> Path:
    """``root/{train,val}/n0<c>/<i>.JPEG`` for 3 classes, each class its own colour, sizes varied."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("val", val)):
        for c in range(3):
            (root / split / f"n0{c}").mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 80, size=(int(rng.integers(16, 28)), 20, 3))
                pixels[..., c] += 160
                Image.fromarray(pixels.astype(np.uint8)).save(root / split / f"n0{c}" / f"{i}.JPEG")
    return root
