"""Shared helpers of the readers for dataset files: where the files are, checksums, clear errors.

Every problem with a user's files is a `UserError` whose message is one sentence naming
the file and what is wrong with it, so a run never starts on missing or damaged data.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from pathlib import Path
from typing import Iterable

import numpy as np

from sparsetrain.errors import UserError


MAX_CLASSES = 100_000
"""More classes than this is a label that is not a class index (e.g. 1e9 in a user's file)."""


def file_error(path: str | os.PathLike, problem: str) -> UserError:
    """The error for a bad dataset file: ``dataset file '<path>' <problem>``."""
    return UserError(f"dataset file {str(path)!r} {problem}")


def require_data_dir(dataset: str, data_dir: str | os.PathLike | None, holds: str) -> Path:
    """``data_dir`` as a Path; a UserError when it is not given or does not exist.

    ``holds`` says what the folder must contain, for the message.
    """
    if data_dir is None:
        raise UserError(f"dataset {dataset!r} reads files from disk: pass --data-dir "
                        f"(data_dir), the folder holding {holds}")
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise UserError(f"data_dir {str(data_dir)!r} does not exist (dataset {dataset!r} needs {holds})")
    return path


def find_folder(root: Path, subfolders: Iterable[str], marker: str | Iterable[str]) -> Path | None:
    """The first of ``root/<sub>`` (then ``root`` itself) that contains a file named ``marker``."""
    markers = [marker] if isinstance(marker, str) else list(marker)
    for folder in [*(root / sub for sub in subfolders), root]:
        if any((folder / m).is_file() for m in markers):
            return folder
    return None


def md5(path: Path, chunk: int = 1 << 20) -> str:
    """Hex MD5 digest of a file's bytes."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_bytes(path: Path) -> bytes:
    """A file's bytes, decompressed when its name ends in ``.gz``; damage is a clear error."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise file_error(path, f"is not a complete gzip file ({exc})") from None
    except OSError as exc:
        raise file_error(path, f"cannot be read ({exc.strerror or exc})") from None


def check_labels(path: Path, y: np.ndarray, num_classes: int) -> None:
    """Labels must be whole numbers in ``[0, num_classes)``."""
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise file_error(path, f"has label {bad}, outside 0..{num_classes - 1}")


def check_flag(dataset: str, name: str, value: object) -> None:
    """A true/false dataset option must be a bool (YAML ``true``/``false``)."""
    if not isinstance(value, bool):
        raise UserError(f"{dataset} option {name} must be true or false; got {value!r}")
