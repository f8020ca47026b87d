"""MNIST-1D, generated locally.

Greydanus & Kobak, "Scaling Down Deep Learning with MNIST-1D", ICML 2024
(arXiv:2011.14439); reference generator: https://github.com/greydanus/mnist1d.

Ten hand-designed 1-D digit templates of length 12 are each padded with zeros,
stretched, scaled, shifted, buried in correlated and iid noise, sheared and
resampled to 40 points. Our generator follows the reference's procedure and
defaults, draws its random numbers in the same order from numpy's legacy
``RandomState`` and so reproduces the reference dataset (to float rounding). As in
the reference, the first 80% of the shuffled samples are train and the last 20%
test; the generator seed is fixed (42), so the test split never depends on the run seed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from sparsetrain.data.base import DatasetSplits, cache_dir, cached_arrays, carve_validation, register_dataset
from sparsetrain.errors import UserError

GENERATOR_VERSION = 1  # bump when the generated arrays change, to invalidate caches

# One row per digit 0..9: the reference's hand-drawn 12-point outlines (before normalization).
_RAW_TEMPLATES = np.array(
    [
        [5.0, 6.0, 6.5, 6.75, 7.0, 7.0, 7.0, 7.0, 6.75, 6.5, 6.0, 5.0],
        [5.0, 3.0, 3.0, 3.4, 3.8, 4.2, 4.6, 5.0, 5.4, 5.8, 5.0, 5.0],
        [5.0, 6.0, 6.5, 6.5, 6.0, 5.25, 4.75, 4.0, 3.5, 3.5, 4.0, 5.0],
        [5.0, 6.0, 6.5, 6.5, 6.0, 5.0, 5.0, 6.0, 6.5, 6.5, 6.0, 5.0],
        [5.0, 4.4, 3.8, 3.2, 2.6, 2.6, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0],
        [5.0, 3.0, 3.0, 3.0, 3.0, 5.0, 6.0, 6.5, 6.5, 6.0, 4.5, 5.0],
        [5.0, 4.0, 3.5, 3.25, 3.0, 3.0, 3.0, 3.0, 3.25, 3.5, 4.0, 5.0],
        [5.0, 7.0, 7.0, 6.6, 6.2, 5.8, 5.4, 5.0, 4.6, 4.2, 5.0, 5.0],
        [5.0, 4.0, 3.5, 3.5, 4.0, 5.0, 5.0, 4.0, 3.5, 3.5, 4.0, 5.0],
        [5.0, 4.0, 3.5, 3.5, 4.0, 5.0, 5.0, 5.0, 5.0, 4.7, 4.3, 5.0],
    ]
)


@dataclass(frozen=True)
class Mnist1dArgs:
    """The reference generator's arguments, with its defaults."""

    num_samples: int = 5000
    train_split: float = 0.8
    template_len: int = 12
    padding: tuple[int, int] = (36, 60)
    scale_coeff: float = 0.4
    max_translation: int = 48
    corr_noise_scale: float = 0.25
    iid_noise_scale: float = 2e-2
    shear_scale: float = 0.75
    final_seq_length: int = 40
    seed: int = 42


def templates() -> np.ndarray:
    """The (10, 12) digit templates: standardized per digit, shifted to start at 0, divided by 6."""
    x = _RAW_TEMPLATES - _RAW_TEMPLATES.mean(axis=1, keepdims=True)
    x = x / x.std(axis=1, keepdims=True)
    x = x - x[:, :1]
    return x / 6.0


def _resample(x: np.ndarray, n: int) -> np.ndarray:
    """Linear interpolation of ``x`` onto ``n`` evenly spaced points spanning the same interval."""
    return np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(x)), x)


def _distort(template: np.ndarray, rng: np.random.RandomState, args: Mnist1dArgs) -> np.ndarray:
    """One noisy sample of a digit. The draws from ``rng`` keep the reference's order."""
    width = args.template_len + args.padding[1]
    low, high = args.padding
    n_zeros = low + int(rng.rand() * (high - low + 1))
    # A tiny offset keeps the digit's own zeros apart from the padding, which gets noise later.
    x = np.concatenate([template + 1e-8, np.zeros(n_zeros)])
    x = _resample(x, width)
    x = x * (1 + args.scale_coeff * (rng.rand() - 0.5))
    x = np.roll(x, rng.randint(args.max_translation))

    corr_noise = gaussian_filter1d(args.corr_noise_scale * rng.randn(width), sigma=2)
    x = np.where(x != 0, x, corr_noise)
    x = x + args.iid_noise_scale * rng.randn(width)

    slope = args.shear_scale * (rng.rand() - 0.5)
    x = x - slope * np.linspace(-0.5, 0.5, width)
    return _resample(x, args.final_seq_length)


def generate(args: Mnist1dArgs = Mnist1dArgs()) -> dict[str, np.ndarray]:
    """All samples, shuffled, as ``{"x": (N, final_seq_length) float64, "y": (N,) int64}``.

    N is ``num_samples`` rounded down to a multiple of 10 (equal count per digit). As in
    the reference, the whole set is centred and scaled to unit standard deviation.
    """
    rng = np.random.RandomState(args.seed)
    digits = templates()
    per_class = args.num_samples // len(digits)
    xs = [_distort(digits[label], rng, args) for label in range(len(digits)) for _ in range(per_class)]
    ys = np.repeat(np.arange(len(digits), dtype=np.int64), per_class)
    order = rng.permutation(len(ys))
    x = np.stack(xs)[order]
    x = (x - x.mean()) / x.std()
    return {"x": x, "y": ys[order]}


@register_dataset("mnist1d", help="MNIST-1D (Greydanus 2020): 10 classes, 1x40 signals, 4000 train / 1000 test")
def load_mnist1d(
    *, seed: int, val_fraction: float, data_dir: str | None, num_samples: int = 5000
) -> DatasetSplits:
    """MNIST-1D as ``(N, 1, 40)`` float32 signals; the generated arrays are cached as .npz."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 10:
        raise UserError(f"num_samples must be an integer >= 10, got {num_samples!r}")
    args = Mnist1dArgs(num_samples=num_samples)
    key = {"version": GENERATOR_VERSION, **dataclasses.asdict(args)}
    arrays = cached_arrays("mnist1d", key, lambda: generate(args), cache_dir(data_dir))
    x, y = arrays["x"][:, None, :], arrays["y"]
    split = int(len(y) * args.train_split)
    return carve_validation(
        "mnist1d", x[:split], y[:split], x[split:], y[split:],
        seed=seed, val_fraction=val_fraction, num_classes=10,
    )
