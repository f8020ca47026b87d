"""Time to corrupt 32x32 RGB uint8 images, per corruption (severity 3), one CPU thread.

Run: OMP_NUM_THREADS=1 python benchmarks/corruptions.py [--images 200]
Prints milliseconds per image and the projected time to write a full CIFAR-10-C style
copy of a 10,000-image test set (5 severities).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from sparsetrain.scenarios.corruptions import corrupt, list_corruptions


def main(images: int = 200) -> dict[str, float]:
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, size=(images, 32, 32, 3), dtype=np.uint8)
    per_image: dict[str, float] = {}
    for name in list_corruptions():
        started = time.perf_counter()
        corrupt(batch, name, 3, seed=0)
        per_image[name] = (time.perf_counter() - started) / images
    total = 0.0
    print(f"{'corruption':20s} {'ms / image':>10s} {'CIFAR-10-C (50k)':>18s}")
    for name, seconds in per_image.items():
        total += seconds * 50_000
        print(f"{name:20s} {seconds * 1e3:10.3f} {seconds * 50_000 / 60:15.1f} min")
    print(f"{'all 19':20s} {'':10s} {total / 60:15.1f} min")
    return per_image


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=200)
    main(parser.parse_args().images)
