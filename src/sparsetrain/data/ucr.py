"""Time-series classification archives: UCR (``.tsv``) and UEA/sktime (``.ts``) files.

Dau et al., "The UCR Time Series Archive", IEEE/CAA J. Autom. Sinica 2019
(https://www.cs.ucr.edu/~eamonn/time_series_data_2018/); Bagnall et al., "The UEA
multivariate time series classification archive, 2018", arXiv:1811.00075; the ``.ts``
format is sktime's (https://www.timeseriesclassification.com).

For the option ``name`` (e.g. ``GunPoint``) the reader looks in ``data_dir/<name>/`` and
then ``data_dir/`` for each split's file in one of two formats (a format both splits have is
preferred, .tsv first; otherwise each split is read in the format it has, as in the archives
shipped inside the ``aeon`` package: ``GunPoint_TRAIN.tsv``, ``GunPoint_TRAIN.ts`` and
``GunPoint_TEST.ts`` in one folder, read as the two .ts files):

- ``<name>_TRAIN.tsv`` and ``<name>_TEST.tsv``: one series per line, tab-separated, the
  class label first (UCR 2018 archive); univariate;
- ``<name>_TRAIN.ts`` and ``<name>_TEST.ts``: ``@`` header lines (``@problemName``,
  ``@classLabel true <labels...>``, ``@equalLength``, ...), then after ``@data`` one series
  per line, its dimensions separated by ``:``, values by ``,``, the class label last;
  univariate or multivariate; lines starting with # or % before @data are comments;

Varying-length series (``@equalLength false``; in .tsv, rows ending in NaN) are refused
unless the option ``pad`` is ``zero``: then every series is padded at its end with zeros to
the longest length in both splits. Missing values inside a series are always refused.
Series come back as float32 ``(N, C, L)``, values as in the files (the archives are mostly
z-normalized already). Labels are mapped to 0..K-1: in the order ``@classLabel`` declares
them when a split is a ``.ts`` file, else in increasing numeric order (a .tsv label 2 and a
.ts label "2" are the same class).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from sparsetrain.data.base import DatasetSplits, carve_validation, register_dataset
from sparsetrain.data.files import file_error, require_data_dir
from sparsetrain.errors import UserError


def read_tsv(path: Path, ragged: bool = False) -> tuple[list[np.ndarray], np.ndarray]:
    """A UCR ``.tsv`` file as ``(series: one (1, L) float64 array per line, labels (N,) float64)``;
    with ``ragged``, trailing NaNs end a shorter series (the archive's varying-length layout)."""
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
    labels, values = table[:, 0], table[:, 1:]
    series = []
    for row, line in enumerate(values, start=1):
        missing = np.isnan(line)
        length = len(line) - int(np.argmax(~missing[::-1])) if missing.any() else len(line)
        if missing.any() and (not ragged or missing[:length].any()):
            why = " inside the series" if ragged else "; for varying-length series use the dataset option pad: zero"
            raise file_error(path, f"has missing values (NaN) on line {row}{why}")
        if not np.isfinite(line[:length]).all():
            raise file_error(path, f"has an infinite value on line {row}; every value must be a finite number")
        series.append(line[None, :length])
    if not np.isfinite(labels).all() or (labels != np.round(labels)).any():
        raise file_error(path, "has class labels in its first column that are not whole numbers")
    return series, labels


class TsFile:
    """The header and series of one ``.ts`` file."""

    def __init__(self, path: Path, ragged: bool = False) -> None:
        self.path = path
        self.ragged = ragged
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
            if not line or line.startswith(("#", "%")):  # aeon's files also comment with %
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
        if self.header.get("equallength", "true").lower() == "false" and not self.ragged:
            raise file_error(self.path, "has @equalLength false; for varying-length series use the dataset "
                                        "option pad: zero")
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
        if self.ragged and len(lengths) == first[0] and len(set(lengths)) == 1:
            first = (first[0], lengths[0])  # any length, the same in every dimension
        if lengths != [first[1]] * first[0]:
            raise file_error(self.path, f"has a series with dimension lengths {lengths} on line {number}, but "
                                        f"the first series has {first[0]} dimension(s) of length {first[1]}; "
                                        "all series must have the same dimensions and length")
        series = np.stack(values)
        if np.isnan(series).any():
            raise file_error(self.path, f"has missing values (NaN) on line {number}, which are not supported")
        if not np.isfinite(series).all():
            raise file_error(self.path, f"has an infinite value on line {number}; every value must be finite")
        self.series.append(series)
        self.labels.append(label.strip())


SPLITS = ("TRAIN", "TEST")
FORMATS = ("tsv", "ts")


def _find(root: Path, name: str) -> tuple[Path, Path]:
    """The train and test files: a format both splits have (.tsv first), else each split's own."""
    for folder in (root / name, root):
        present = {split: [ext for ext in FORMATS if (folder / f"{name}_{split}.{ext}").is_file()]
                   for split in SPLITS}
        if not any(present.values()):
            continue
        for split in SPLITS:
            if not present[split]:
                other = present["TEST" if split == "TRAIN" else "TRAIN"][0]
                raise file_error(folder / f"{name}_{split}.{other}", "does not exist (nor any other "
                                 f"{name}_{split}.tsv / .ts)")
        common = [ext for ext in FORMATS if ext in present["TRAIN"] and ext in present["TEST"]]
        ext = {split: (common or present[split])[0] for split in SPLITS}
        return folder / f"{name}_TRAIN.{ext['TRAIN']}", folder / f"{name}_TEST.{ext['TEST']}"
    raise UserError(f"no UCR/UEA files for {name!r} in data_dir {str(root)!r}: expected "
                    f"{name}_TRAIN.tsv and {name}_TEST.tsv (or .ts) there or in {str(root / name)!r}")


def _label_name(value: float) -> str:
    """A .tsv label as the string a .ts file would write (2.0 -> "2")."""
    return str(int(value))


def read_split(path: Path, ragged: bool) -> tuple[list[np.ndarray], list[str], list[str] | None]:
    """(series (C, L_i) each, label strings, declared classes or None) of one split's file."""
    if path.suffix == ".tsv":
        series, labels = read_tsv(path, ragged)
        return series, [_label_name(v) for v in labels], None
    ts = TsFile(path, ragged)
    return ts.series, ts.labels, ts.classes


def pad_series(series: list[np.ndarray], length: int) -> np.ndarray:
    """Stack (C, L_i) arrays into (N, C, length), zeros after each series' end."""
    out = np.zeros((len(series), series[0].shape[0], length), dtype=np.float64)
    for i, s in enumerate(series):
        out[i, :, :s.shape[1]] = s
    return out


@register_dataset("ucr", help="UCR/UEA time-series archive (.tsv or .ts) from --data-dir; option name, e.g. "
                  "GunPoint; option pad: zero for varying-length series", path_in_identity=True)
def load_ucr(*, seed: int, val_fraction: float, data_dir: str | None, name: str | None = None,
             pad: str = "none") -> DatasetSplits:
    """The archive dataset ``name``; see the module doc."""
    if not name or not isinstance(name, str):
        raise UserError("dataset ucr needs the option name, the archive's dataset name "
                        "(e.g. --dataset-options '{name: GunPoint}')")
    if pad not in ("none", "zero"):
        raise UserError(f"dataset ucr option pad must be one of none, zero; got {pad!r}")
    root = require_data_dir("ucr", data_dir, f"{name}_TRAIN.tsv / {name}_TEST.tsv (or .ts)")
    train_path, test_path = _find(root, name)
    ragged = pad != "none"
    x_train, raw_train, declared_train = read_split(train_path, ragged)
    x_test, raw_test, declared_test = read_split(test_path, ragged)
    declared = declared_train or declared_test
    if declared is None:
        classes = sorted(set(raw_train) | set(raw_test), key=float)
    else:
        classes = declared
        for path, labels, source in ((train_path, raw_train, declared_train), (test_path, raw_test, declared_test)):
            if source is None and (unknown := sorted(set(labels) - set(classes))):
                raise file_error(path, f"has class label {unknown[0]!r}, not among the @classLabel of "
                                       f"{(test_path if declared_train is None else train_path).name}")
        if declared_train is not None and (unknown := sorted(set(raw_test) - set(classes))):
            raise file_error(test_path, f"has class label {unknown[0]!r}, not among the @classLabel of {train_path.name}")
    index = {label: i for i, label in enumerate(classes)}
    y_train = np.array([index[label] for label in raw_train])
    y_test = np.array([index[label] for label in raw_test])
    shapes = {s.shape for s in x_train} | {s.shape for s in x_test}
    if len({c for c, _ in shapes}) > 1 or (not ragged and len(shapes) > 1):
        raise file_error(test_path, f"has series of shape {x_test[0].shape} (channels, length) but "
                                    f"{train_path.name} has {x_train[0].shape}")
    length = max(length for _, length in shapes)
    return carve_validation("ucr", pad_series(x_train, length), y_train.astype(np.int64),
                            pad_series(x_test, length), y_test.astype(np.int64),
                            seed=seed, val_fraction=val_fraction, num_classes=len(classes))
