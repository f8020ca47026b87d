"""Image-folder reader: a PNG tree read back exactly, both layouts, resize, grayscale, clear errors."""

import numpy as np
import pytest
from PIL import Image

from sparsetrain.data import load, path_in_identity
from sparsetrain.errors import UserError


def save(path, pixels):
    """Save (H, W, 3) or (H, W) uint8 pixels as a PNG (lossless)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def make_tree(root, counts, shape=(5, 6, 3), seed=0):
    """root/<class>/<i>.png with counts[class] random images; returns {class: [pixels in file order]}."""
    rng = np.random.default_rng(seed)
    written = {}
    for name, count in counts.items():
        written[name] = []
        for i in range(count):
            pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
            save(root / name / f"{i:02d}.png", pixels)
            written[name].append(pixels)
    return written


def test_train_test_layout_round_trip(tmp_path):
    train = make_tree(tmp_path / "train", {"cat": 2, "ant": 3, "bee": 1})
    test = make_tree(tmp_path / "test", {"bee": 2, "ant": 1}, seed=1)  # a class may be absent from test
    (tmp_path / "train" / "ant" / "notes.txt").write_text("not an image")  # other files are skipped
    s = load("imagefolder", data_dir=str(tmp_path), val_fraction=0.0, normalize=False)
    assert s.num_classes == 3 and s.input_shape == (3, 5, 6)
    # labels follow the sorted class names: ant 0, bee 1, cat 2; files in name order
    expected_x = np.stack(train["ant"] + train["bee"] + train["cat"]).transpose(0, 3, 1, 2) / 255.0
    assert s.train.y.tolist() == [0, 0, 0, 1, 2, 2]
    np.testing.assert_allclose(s.train.x.numpy(), expected_x, rtol=0, atol=1e-7)
    assert s.test.y.tolist() == [0, 1, 1]
    np.testing.assert_allclose(s.test.x.numpy(), np.stack(test["ant"] + test["bee"]).transpose(0, 3, 1, 2) / 255.0,
                               rtol=0, atol=1e-7)


def test_normalized_per_channel_by_the_training_images(tmp_path):
    train = make_tree(tmp_path / "train", {"a": 3, "b": 3})
    make_tree(tmp_path / "test", {"a": 1, "b": 1}, seed=2)
    s = load("imagefolder", data_dir=str(tmp_path), val_fraction=0.0)
    raw = np.stack(train["a"] + train["b"]).astype(np.float64) / 255.0  # (N, H, W, C)
    mean, std = raw.mean(axis=(0, 1, 2)), raw.std(axis=(0, 1, 2))
    np.testing.assert_allclose(s.train.x.numpy(), ((raw - mean) / std).transpose(0, 3, 1, 2), rtol=0, atol=1e-5)
    x = s.train.x.numpy()
    np.testing.assert_allclose(x.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(0, 2, 3)), 1, atol=1e-4)


def test_single_tree_holds_out_a_fixed_stratified_test_fraction(tmp_path):
    make_tree(tmp_path, {"x": 10, "y": 5}, shape=(4, 4, 3))
    a = load("imagefolder", data_dir=str(tmp_path), seed=0, val_fraction=0.0, test_fraction=0.2)
    b = load("imagefolder", data_dir=str(tmp_path), seed=7, val_fraction=0.0, test_fraction=0.2)
    assert a.test.y.tolist() == [0, 0, 1]  # 20% of each class: 2 of x, 1 of y
    assert len(a.train) == 12
    assert np.array_equal(a.test.x.numpy(), b.test.x.numpy())  # the test split does not depend on the run seed


def test_grayscale_and_resize(tmp_path):
    gray = np.arange(30, dtype=np.uint8).reshape(5, 6) * 8
    save(tmp_path / "train" / "g" / "0.png", gray)
    save(tmp_path / "train" / "h" / "0.png", np.full((9, 9, 3), 200, np.uint8))
    save(tmp_path / "test" / "g" / "0.png", np.full((3, 7), 17, np.uint8))
    s = load("imagefolder", data_dir=str(tmp_path), val_fraction=0.0, normalize=False, mode="grayscale", size=4)
    assert s.input_shape == (1, 4, 4)
    # a constant image stays constant when resized; RGB (200, 200, 200) has luma 200
    np.testing.assert_allclose(s.train.x[1].numpy(), 200 / 255.0, atol=1e-7)
    np.testing.assert_allclose(s.test.x[0].numpy(), 17 / 255.0, atol=1e-7)
    rgb = load("imagefolder", data_dir=str(tmp_path), val_fraction=0.0, normalize=False, size=4)
    assert rgb.input_shape == (3, 4, 4)
    for c in range(3):  # a gray PNG read as RGB repeats its one channel
        assert np.array_equal(rgb.train.x[0, c].numpy(), s.train.x[0, 0].numpy())


def test_rgb_read_as_grayscale_is_the_luma(tmp_path):
    pixels = np.random.default_rng(3).integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    save(tmp_path / "train" / "a" / "0.png", pixels)
    save(tmp_path / "test" / "a" / "0.png", pixels)
    s = load("imagefolder", data_dir=str(tmp_path), val_fraction=0.0, normalize=False, mode="grayscale")
    luma = pixels @ np.array([0.299, 0.587, 0.114])  # ITU-R 601-2
    assert np.abs(s.train.x[0, 0].numpy() * 255 - luma).max() <= 1.0


def test_errors_name_the_file_or_folder(tmp_path):
    with pytest.raises(UserError, match="dataset 'imagefolder' reads files from disk"):
        load("imagefolder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"image folder '.*empty' has no class subfolders"):
        load("imagefolder", data_dir=str(tmp_path / "empty"))

    make_tree(tmp_path / "t1", {"a": 2, "b": 2})
    save(tmp_path / "t1" / "b" / "big.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(UserError, match=r"b/big\.png' is 8x8 pixels but the images before it are 6x5; pass the option size"):
        load("imagefolder", data_dir=str(tmp_path / "t1"))

    make_tree(tmp_path / "t2", {"a": 2, "b": 2})
    good = (tmp_path / "t2" / "a" / "01.png").read_bytes()
    (tmp_path / "t2" / "a" / "01.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError, match=r"a/01\.png' is damaged or truncated"):
        load("imagefolder", data_dir=str(tmp_path / "t2"))
    (tmp_path / "t2" / "a" / "01.png").write_bytes(b"plain text, not a PNG")
    with pytest.raises(UserError, match=r"a/01\.png' is not an image Pillow can read"):
        load("imagefolder", data_dir=str(tmp_path / "t2"))

    make_tree(tmp_path / "t3", {"a": 1})
    (tmp_path / "t3" / "b").mkdir()
    with pytest.raises(UserError, match=r"class folder '.*t3/b' holds no images"):
        load("imagefolder", data_dir=str(tmp_path / "t3"))

    make_tree(tmp_path / "t4" / "train", {"a": 1})
    make_tree(tmp_path / "t4" / "test", {"a": 1, "z": 1})
    with pytest.raises(UserError, match=r"has class 'z', which the training folder does not have"):
        load("imagefolder", data_dir=str(tmp_path / "t4"))
    with pytest.raises(UserError, match="mode must be rgb or grayscale"):
        load("imagefolder", data_dir=str(tmp_path / "t4"), mode="cmyk")
    with pytest.raises(UserError, match="size must be a positive whole number"):
        load("imagefolder", data_dir=str(tmp_path / "t4"), size=0)
    make_tree(tmp_path / "t5" / "train", {"a": 1})
    with pytest.raises(UserError, match=r"has a train/ folder but no test/ folder"):
        load("imagefolder", data_dir=str(tmp_path / "t5"))
    assert path_in_identity("imagefolder")
