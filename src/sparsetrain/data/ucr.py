"""Time-series classification archives: UCR (``.tsv``) and UEA/sktime (``.ts``) files.

Dau et al., "The UCR Time Series Archive", IEEE/CAA J. Autom. Sinica 2019
(https://www.cs.ucr.edu/~eamonn/time_series_data_2018/); Bagnall et al., "The UEA
multivariate time series classification archive, 2018", arXiv:1811.00075; the ``.ts``
format is sktime's (https://www.timeseriesclassification.com).

For the option ``name`` (e.g. ``GunPoint``) the reader looks in ``data_dir/<name>/`` and
then ``data_dir/`` for

- ``<name>_TRAIN.tsv`` and ``<name>_TEST.tsv``: one series per line, tab-separated, the
  class label first (UCR 2018 archive); univariate;
- ``<name>_TRAIN.ts`` and ``<name>_TEST.ts``: ``@`` header lines (``@problemName``,
  ``@classLabel true <labels...>``, ``@equalLength``, ...), then after ``@data`` one series
  per line, its dimensions separated by ``:``, values by ``,``, the class label last;
  univariate or multivariate.

Only equal-length series without missing values are read (a varying-length or gappy
archive is refused with a clear error). Series come back as float32 ``(N, C, L)``, values
as in the files (the archives are mostly z-normalized already). Labels are mapped to
0..K-1: for ``.tsv`` in increasing numeric order, for ``.ts`` in the order ``@classLabel``
declares them.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from sparsetrain.data.base import DatasetSplits, carve_validation, register_dataset
from sparsetrain.data.files import file_error, require_data_dir
from sparsetrain.errors import UserError


def read_tsv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A UCR ``.tsv`` file as ``(series (N, 1, L) float64, labels (N,) float64)``."""
    try:
        with warnings.catch_warnings():  # an empty file is reported below, not warned about
            warnings.simplefilter("ignore", UserWarning)
            table = np.loadtxt(path, delimiter="\t", ndmin=2, dtype=np.float64)
    except ValueError as exc:  # a cell that is not a number, or a row of another length
        raise file_error(path, f"is not a tab-separated table of numbers ({exc})") from None
    except OSError as exc:
        raise file_error(path, f"cannot be read ({exc.strerror or exc})") from None
    if table.shape[0] == 0 or table.shape[1] < 2:
        raise file_error(path, "holds no series (expected one line per series: label, then the values)")
    labels, series = table[:, 0], table[:, 1:]
    if np.isnan(series).any():
        row = int(np.flatnonzero(np.isnan(series).any(axis=1))[0]) + 1
        raise file_error(path, f"has missing values (NaN) on line {row}; varying-length series are not supported")
    if not np.isfinite(labels).all() or (labels != np.round(labels)).any():
        raise file_error(path, "has class labels in its first column that are not whole numbers")
    return series[:, None, :], labels


class TsFile:
    """The header and series of one ``.ts`` file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.header: dict[str, str] = {}
        self.series: list[np.ndarray] = []
        self.labels: list[str] = []
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise file_error(path, f"cannot be read as text ({exc})") from None
        in_data = False
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if in_data:
                self._add_series(line, number)
            elif line.startswith("@"):
                key, _, value = line[1:].partition(" ")
                self.header[key.lower()] = value.strip()
                in_data = key.lower() == "data"
                if in_data:
                    self._check_header()
            else:
                raise file_error(path, f"has {line[:30]!r} on line {number} before its @data line")
        if not in_data:
            raise file_error(path, "has no @data line (is it truncated, or not a .ts file?)")
        if not self.series:
            raise file_error(path, "holds no series after @data")
        if unknown := sorted(set(self.labels) - set(self.classes)):
            raise file_error(path, f"has class label {unknown[0]!r}, not among @classLabel {' '.join(self.classes)}")

    @property
    def classes(self) -> list[str]:
        return self.header["classlabel"].split()[1:]

    def _check_header(self) -> None:
        if self.header.get("timestamps", "false").lower() == "true":
            raise file_error(self.path, "uses @timeStamps true, which is not supported")
        if self.header.get("equallength", "true").lower() == "false":
            raise file_error(self.path, "has @equalLength false; varying-length series are not supported")
        label_line = self.header.get("classlabel", "false").split()
        if not label_line or label_line[0].lower() != "true" or len(label_line) < 2:
            raise file_error(self.path, "declares no class labels (expected a line '@classLabel true <labels...>')")

    def _add_series(self, line: str, number: int) -> None:
        *dims, label = line.split(":")
        if not dims:
            raise file_error(self.path, f"has no ':' before the class label on line {number} (is the file truncated?)")
        try:
            values = [np.array(d.split(","), dtype=np.float64) for d in dims]
        except ValueError:
            raise file_error(self.path, f"has a value that is not a number on line {number}"
                                        " ('?' marks a missing value, which is not supported)") from None
        lengths = [len(v) for v in values]
        first = self.series[0].shape if self.series else (len(values), lengths[0])
        if lengths != [first[1]] * first[0]:
            raise file_error(self.path, f"has a series with dimension lengths {lengths} on line {number}, but "
                                        f"the first series has {first[0]} dimension(s) of length {first[1]}; "
                                        "all series must have the same dimensions and length")
        series = np.stack(values)
        if np.isnan(series).any():
            raise file_error(self.path, f"has missing values (NaN) on line {number}, which are not supported")
        self.series.append(series)
        self.labels.append(label.strip())


def _find(root: Path, name: str) -> tuple[Path, Path, str]:
    for folder in (root / name, root):
        for ext in ("tsv", "ts"):
            train, test = folder / f"{name}_TRAIN.{ext}", folder / f"{name}_TEST.{ext}"
            if train.is_file() or test.is_file():
                for path in (train, test):
                    if not path.is_file():
                        raise file_error(path, "does not exist")
                return train, test, ext
    raise UserError(f"no UCR/UEA files for {name!r} in data_dir {str(root)!r}: expected "
                    f"{name}_TRAIN.tsv and {name}_TEST.tsv (or .ts) there or in {str(root / name)!r}")


@register_dataset("ucr", help="UCR/UEA time-series archive (.tsv or .ts) from --data-dir; option name, e.g. GunPoint",
                  path_in_identity=True)
def load_ucr(*, seed: int, val_fraction: float, data_dir: str | None, name: str | None = None) -> DatasetSplits:
    """The archive dataset ``name``; see the module doc."""
    if not name or not isinstance(name, str):
        raise UserError("dataset ucr needs the option name, the archive's dataset name "
                        "(e.g. --dataset-options '{name: GunPoint}')")
    root = require_data_dir("ucr", data_dir, f"{name}_TRAIN.tsv / {name}_TEST.tsv (or .ts)")
    train_path, test_path, ext = _find(root, name)
    if ext == "tsv":
        (x_train, raw_train), (x_test, raw_test) = read_tsv(train_path), read_tsv(test_path)
        classes = np.unique(np.concatenate([raw_train, raw_test]))
        y_train, y_test = np.searchsorted(classes, raw_train), np.searchsorted(classes, raw_test)
    else:
        train, test = TsFile(train_path), TsFile(test_path)
        if unknown := sorted(set(test.labels) - set(train.classes)):
            raise file_error(test_path, f"has class label {unknown[0]!r}, not among the @classLabel of {train_path.name}")
        index = {label: i for i, label in enumerate(train.classes)}
        classes = train.classes
        x_train, x_test = np.stack(train.series), np.stack(test.series)
        y_train = np.array([index[label] for label in train.labels])
        y_test = np.array([index[label] for label in test.labels])
    if x_train.shape[1:] != x_test.shape[1:]:
        raise file_error(test_path, f"has series of shape {x_test.shape[1:]} (channels, length) but "
                                    f"{train_path.name} has {x_train.shape[1:]}")
    return carve_validation("ucr", x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64),
                            seed=seed, val_fraction=val_fraction, num_classes=len(classes))
