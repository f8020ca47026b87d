"""Arrays from a NumPy ``.npz`` archive: a user's own data in the simplest format.

The archive holds either

- ``x_train``, ``y_train``, ``x_test``, ``y_test``: the splits as given, or
- ``x``, ``y``: a stratified ``test_fraction`` of each class (drawn with a fixed seed, so
  every run seed is scored on the same samples) becomes the test split.

``x`` arrays are ``(N, *input_shape)`` of numbers, used as they are (cast to float32; no
normalization), e.g. ``(N, 3, 32, 32)`` images or ``(N, 1, L)`` series. ``y`` arrays are
``(N,)`` class indices 0..K-1, where K is the largest label + 1. The archive is read
with ``allow_pickle=False``, so it cannot run code.

``data_dir`` is the ``.npz`` file itself, or a folder holding it: the one named by the
option ``file``, or else the only ``.npz`` file there.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from sparsetrain.data.base import DatasetSplits, carve_validation, register_dataset, stratified_split
from sparsetrain.data.files import MAX_CLASSES, file_error, require_data_dir
from sparsetrain.errors import UserError

SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")
SINGLE_KEYS = ("x", "y")
TEST_SEED = 0


def find_archive(root: Path, file: str | None) -> Path:
    if root.is_file():
        return root
    if file is not None:
        path = root / file
        if not path.is_file():
            raise file_error(path, "does not exist")
        return path
    archives = sorted(root.glob("*.npz"))
    if len(archives) != 1:
        found = "no .npz file" if not archives else f"{len(archives)} .npz files"
        raise UserError(f"data_dir {str(root)!r} holds {found}; point data_dir at the archive or name it with the option file")
    return archives[0]


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The split arrays of the archive, by name; a damaged archive or missing key is a clear error."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            wanted = SPLIT_KEYS if set(SPLIT_KEYS) <= keys else SINGLE_KEYS if set(SINGLE_KEYS) <= keys else None
            if wanted is None:
                raise file_error(path, f"has arrays {', '.join(sorted(keys)) or 'none'}; expected "
                                       f"{', '.join(SPLIT_KEYS)} or {', '.join(SINGLE_KEYS)}")
            return {key: archive[key] for key in wanted}
    except UserError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise file_error(path, "holds Python objects (pickled arrays); store plain numeric arrays") from None
        raise file_error(path, f"is damaged or not a .npz archive ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise file_error(path, f"is damaged or not a .npz archive ({exc})") from None


def check_pair(path: Path, x: np.ndarray, y: np.ndarray, x_key: str, y_key: str) -> np.ndarray:
    """Validate one ``(x, y)`` pair; returns ``y`` as int64."""
    if x.dtype.kind not in "biuf" or x.ndim < 2:
        raise file_error(path, f"has {x_key} of dtype {x.dtype} and shape {x.shape}; it must be numbers of shape (N, ...)")
    if not np.isfinite(x).all():
        raise file_error(path, f"has NaN or infinite values in {x_key}")
    whole = y.dtype.kind in "iu" or (y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all())
    if y.ndim != 1 or not whole:
        raise file_error(path, f"has {y_key} of dtype {y.dtype} and shape {y.shape}; it must be whole numbers of shape (N,)")
    if len(y) != len(x):
        raise file_error(path, f"has {len(x)} rows in {x_key} but {len(y)} labels in {y_key}")
    if y.size and y.min() < 0:
        raise file_error(path, f"has negative label {int(y.min())} in {y_key}; labels must be 0..K-1")
    if y.size and y.max() >= MAX_CLASSES:
        raise file_error(path, f"has label {y.max():.0f} in {y_key}; labels must be class indices 0..K-1 "
                               f"with K at most {MAX_CLASSES}")
    return y.astype(np.int64)


@register_dataset("npz", help="arrays from a .npz file in --data-dir (x_train, y_train, x_test, y_test, or x, y)",
                  path_in_identity=True)
def load_npz(*, seed: int, val_fraction: float, data_dir: str | None, file: str | None = None,
             test_fraction: float = 0.2) -> DatasetSplits:
    """A user's arrays from a ``.npz`` archive; see the module doc."""
    if not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise UserError(f"npz option test_fraction must be in (0, 1); got {test_fraction!r}")
    path = find_archive(require_data_dir("npz", data_dir, "a .npz file"), file)
    arrays = read_arrays(path)
    if "x" in arrays:
        x, y = arrays["x"], check_pair(path, arrays["x"], arrays["y"], "x", "y")
        train_idx, test_idx = stratified_split(y, test_fraction, TEST_SEED)
        x_train, y_train, x_test, y_test = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
    else:
        x_train, x_test = arrays["x_train"], arrays["x_test"]
        y_train = check_pair(path, x_train, arrays["y_train"], "x_train", "y_train")
        y_test = check_pair(path, x_test, arrays["y_test"], "x_test", "y_test")
        if x_train.shape[1:] != x_test.shape[1:]:
            raise file_error(path, f"has x_train samples of shape {x_train.shape[1:]} but x_test samples of "
                                   f"shape {x_test.shape[1:]}")
    if len(y_train) == 0:
        raise file_error(path, "has no training samples")
    num_classes = int(max(y_train.max(), y_test.max(initial=0))) + 1
    return carve_validation("npz", x_train, y_train, x_test, y_test,
                            seed=seed, val_fraction=val_fraction, num_classes=num_classes)
