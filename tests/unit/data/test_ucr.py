"""UCR (.tsv) and UEA (.ts) readers: exact round trips, label mapping, clear errors."""

import numpy as np
import pytest

from sparsetrain.data import load, path_in_identity
from sparsetrain.errors import UserError


def write_tsv(path, labels, series):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join([str(lab)] + [repr(float(v)) for v in row]) + "\n"
                            for lab, row in zip(labels, series)))


def ts_text(name, classes, rows, *, univariate=True, header_extra=""):
    """A .ts file; rows are (label, [dimension values, ...])."""
    lines = [f"# a comment", "% an ARFF-style comment (aeon's UnitTest)", f"@problemName {name}", "@timeStamps false", "@missing false",
             f"@univariate {str(univariate).lower()}", "@equalLength true",
             f"@seriesLength {len(rows[0][1][0])}", f"@classLabel true {' '.join(classes)}", header_extra, "@data"]
    lines += [":".join(",".join(repr(float(v)) for v in dim) for dim in dims) + f":{label}" for label, dims in rows]
    return "\n".join(lines) + "\n"


def test_tsv_round_trip_with_numeric_label_order(tmp_path):
    rng = np.random.default_rng(0)
    x_train, x_test = rng.normal(size=(6, 9)), rng.normal(size=(3, 9))
    write_tsv(tmp_path / "Gun" / "Gun_TRAIN.tsv", [1, -1, 2, 2, -1, 1], x_train)
    write_tsv(tmp_path / "Gun" / "Gun_TEST.tsv", [2, -1, 1], x_test)
    s = load("ucr", data_dir=str(tmp_path), name="Gun", val_fraction=0.0)
    assert s.input_shape == (1, 9) and s.num_classes == 3
    assert s.train.y.tolist() == [1, 0, 2, 2, 0, 1] and s.test.y.tolist() == [2, 0, 1]  # -1 -> 0, 1 -> 1, 2 -> 2
    np.testing.assert_array_equal(s.train.x.numpy(), x_train[:, None].astype(np.float32))
    np.testing.assert_array_equal(s.test.x.numpy(), x_test[:, None].astype(np.float32))


def test_ts_multivariate_round_trip_in_declared_label_order(tmp_path):
    rng = np.random.default_rng(1)
    train = [(lab, rng.normal(size=(3, 5))) for lab in ("walk", "run", "walk", "sit", "run")]
    test = [(lab, rng.normal(size=(3, 5))) for lab in ("sit", "walk")]
    classes = ["walk", "run", "sit"]
    (tmp_path / "Motion_TRAIN.ts").write_text(ts_text("Motion", classes, train, univariate=False))
    (tmp_path / "Motion_TEST.ts").write_text(ts_text("Motion", classes, test, univariate=False))
    s = load("ucr", data_dir=str(tmp_path), name="Motion", val_fraction=0.0)
    assert s.input_shape == (3, 5) and s.num_classes == 3
    assert s.train.y.tolist() == [0, 1, 0, 2, 1] and s.test.y.tolist() == [2, 0]
    np.testing.assert_array_equal(s.train.x.numpy(), np.stack([d for _, d in train]).astype(np.float32))
    np.testing.assert_array_equal(s.test.x.numpy(), np.stack([d for _, d in test]).astype(np.float32))


def test_ts_univariate_by_hand(tmp_path):
    text = ("@problemName Tiny\n@univariate true\n@classLabel true 1 2\n@data\n"
            "1.0,2.0,3.0:2\n-1.5,0.0,4.25:1\n")
    (tmp_path / "Tiny").mkdir()
    (tmp_path / "Tiny" / "Tiny_TRAIN.ts").write_text(text)
    (tmp_path / "Tiny" / "Tiny_TEST.ts").write_text(text)
    s = load("ucr", data_dir=str(tmp_path), name="Tiny", val_fraction=0.0)
    assert s.train.x.tolist() == [[[1.0, 2.0, 3.0]], [[-1.5, 0.0, 4.25]]] and s.train.y.tolist() == [1, 0]


def _ucr_error(tmp_path, train_text, test_text=None, ext="ts"):
    (tmp_path / f"D_TRAIN.{ext}").write_text(train_text)
    (tmp_path / f"D_TEST.{ext}").write_text(test_text if test_text is not None else train_text)
    with pytest.raises(UserError) as info:
        load("ucr", data_dir=str(tmp_path), name="D")
    assert "\n" not in str(info.value) and "dataset file" in str(info.value)
    return str(info.value)


GOOD_TS = "@problemName D\n@classLabel true a b\n@data\n1,2,3:a\n4,5,6:b\n"


@pytest.mark.parametrize("text, message", [
    ("@problemName D\n@classLabel true a b\n", "has no @data line"),
    ("@timeStamps true\n@classLabel true a b\n@data\n(0,1),(1,2):a\n", "uses @timeStamps true"),
    ("@equalLength false\n@classLabel true a b\n@data\n1,2:a\n", "has @equalLength false"),
    ("@classLabel false\n@data\n1,2:0.5\n", "declares no class labels"),
    ("@classLabel true a b\n@data\n1,2,3:a\n4,5,6:c\n", "has class label 'c', not among @classLabel a b"),
    ("@classLabel true a b\n@data\n1,2,3:a\n4,5:b\n", "dimension lengths [2] on line 4, but the first series has 1 dimension(s) of length 3"),
    ("@classLabel true a b\n@data\n1,2:3,4:a\n4,5:b\n", "dimension lengths [2] on line 4, but the first series has 2 dimension(s) of length 2"),
    ("@classLabel true a b\n@data\n1,?,3:a\n", "has a value that is not a number on line 3"),
    ("@classLabel true a b\n@data\n1,2,3\n", "has no ':' before the class label on line 3"),
    ("@classLabel true a b\n@data\n1,2,3:a\n1,2:a\n", "dimension lengths [2] on line 4, but the first series has 1"),
    ("@classLabel true a b\n@data\n1,2,3:a\n4,5,6:1,2:b\n", "dimension lengths [3, 2] on line 4"),
    ("stray line\n@data\n1:a\n", "has 'stray line' on line 1 before its @data line"),
    ("@classLabel true a b\n@data\n", "holds no series after @data"),
])
def test_bad_ts_files(tmp_path, text, message):
    assert message in _ucr_error(tmp_path, text)


def test_ts_test_label_and_shape_must_match_train(tmp_path):
    other = "@classLabel true a b z\n@data\n1,2,3:z\n"
    assert "D_TEST.ts' has class label 'z', not among the @classLabel of D_TRAIN.ts" in _ucr_error(tmp_path, GOOD_TS, other)
    longer = "@classLabel true a b\n@data\n1,2,3,4:a\n"
    assert "D_TEST.ts' has series of shape (1, 4) (channels, length) but D_TRAIN.ts has (1, 3)" in \
        _ucr_error(tmp_path, GOOD_TS, longer)


@pytest.mark.parametrize("text, message", [
    ("1\t0.5\t0.25\n2\t0.5\tNaN\n", "has missing values (NaN) on line 2; for varying-length series use the dataset option pad: zero"),
    ("1\t0.5\t0.25\n2\t0.5\n", "is not a tab-separated table of numbers"),  # a truncated last line
    ("1\t0.5\tabc\n", "is not a tab-separated table of numbers"),
    ("1.5\t0.5\t0.25\n", "has class labels in its first column that are not whole numbers"),
    ("", "holds no series"),
])
def test_bad_tsv_files(tmp_path, text, message):
    good = "1\t0.5\t0.25\n"
    assert message in _ucr_error(tmp_path, text, good, ext="tsv")


def test_name_option_and_missing_files(tmp_path):
    with pytest.raises(UserError, match=r"dataset ucr needs the option name"):
        load("ucr", data_dir=str(tmp_path))
    with pytest.raises(UserError, match=r"no UCR/UEA files for 'Gun' in data_dir .*Gun_TRAIN\.tsv and Gun_TEST\.tsv \(or \.ts\)"):
        load("ucr", data_dir=str(tmp_path), name="Gun")
    write_tsv(tmp_path / "Gun_TRAIN.tsv", [1], [[0.5]])
    with pytest.raises(UserError, match=r"Gun_TEST\.tsv' does not exist"):
        load("ucr", data_dir=str(tmp_path), name="Gun")
    with pytest.raises(UserError, match="dataset 'ucr' reads files from disk"):
        load("ucr", name="Gun")
    assert path_in_identity("ucr")


def test_aeon_layout_reads_each_split_in_the_format_it_has(tmp_path):
    """aeon ships <name>/<name>_TRAIN.tsv, <name>_TRAIN.ts and <name>_TEST.ts (no _TEST.tsv)."""
    rng = np.random.default_rng(2)
    train = [(lab, rng.normal(size=(1, 6))) for lab in ("2", "1", "2")]
    test = [(lab, rng.normal(size=(1, 6))) for lab in ("1", "2")]
    folder = tmp_path / "GunPoint"
    folder.mkdir()
    (folder / "GunPoint_TRAIN.ts").write_text(ts_text("GunPoint", ["1", "2"], train))
    (folder / "GunPoint_TEST.ts").write_text(ts_text("GunPoint", ["1", "2"], test))
    write_tsv(folder / "GunPoint_TRAIN.tsv", [9, 9, 9], rng.normal(size=(3, 6)))  # not read: both splits have .ts
    s = load("ucr", data_dir=str(tmp_path), name="GunPoint", val_fraction=0.0)
    assert s.train.y.tolist() == [1, 0, 1] and s.test.y.tolist() == [0, 1]
    np.testing.assert_array_equal(s.train.x.numpy(), np.stack([d for _, d in train]).astype(np.float32))
    (folder / "GunPoint_TRAIN.ts").unlink()  # now the train split exists only as .tsv: read it, .ts for test
    x_train = rng.normal(size=(3, 6))
    write_tsv(folder / "GunPoint_TRAIN.tsv", [2, 1, 1], x_train)
    s = load("ucr", data_dir=str(tmp_path), name="GunPoint", val_fraction=0.0)
    assert s.train.y.tolist() == [1, 0, 0] and s.test.y.tolist() == [0, 1]  # tsv 2 is the .ts class "2"
    np.testing.assert_array_equal(s.train.x.numpy(), x_train[:, None].astype(np.float32))


def test_unequal_lengths_are_padded_with_zeros_on_request(tmp_path):
    text = ("@problemName V\n@univariate false\n@dimensions 2\n@equalLength false\n@classLabel true a b\n@data\n"
            "1,2,3:4,5,6:a\n7,8:9,10:b\n")
    (tmp_path / "V_TRAIN.ts").write_text(text)
    (tmp_path / "V_TEST.ts").write_text("@classLabel true a b\n@equalLength false\n@data\n1,2,3,4:5,6,7,8:b\n")
    with pytest.raises(UserError, match="has @equalLength false; for varying-length series use the dataset option pad: zero"):
        load("ucr", data_dir=str(tmp_path), name="V")
    s = load("ucr", data_dir=str(tmp_path), name="V", val_fraction=0.0, pad="zero")
    assert s.input_shape == (2, 4)
    assert s.train.x.tolist() == [[[1, 2, 3, 0], [4, 5, 6, 0]], [[7, 8, 0, 0], [9, 10, 0, 0]]]
    assert s.test.x.tolist() == [[[1, 2, 3, 4], [5, 6, 7, 8]]] and s.test.y.tolist() == [1]
    (tmp_path / "V_TRAIN.ts").unlink()
    (tmp_path / "V_TEST.ts").unlink()
    (tmp_path / "V_TRAIN.tsv").write_text("1\t0.5\t0.25\tNaN\n2\t1\t2\t3\n")  # UCR 2018: NaN after a short series
    (tmp_path / "V_TEST.tsv").write_text("1\t4\tNaN\tNaN\n")
    s = load("ucr", data_dir=str(tmp_path), name="V", val_fraction=0.0, pad="zero")
    assert s.train.x.tolist() == [[[0.5, 0.25, 0]], [[1, 2, 3]]] and s.test.x.tolist() == [[[4, 0, 0]]]
    (tmp_path / "V_TEST.tsv").write_text("1\t4\tNaN\t5\n")
    with pytest.raises(UserError, match="has missing values \\(NaN\\) on line 1 inside the series"):
        load("ucr", data_dir=str(tmp_path), name="V", pad="zero")
    with pytest.raises(UserError, match="option pad must be one of none, zero"):
        load("ucr", data_dir=str(tmp_path), name="V", pad="edge")
