"""The streamed ImageNet-layout reader: shapes, normalisation, the evaluation transform by hand,
augmentation that depends on (seed, epoch, sample) only, DDP shards, and clear errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from sparsetrain.data import ImageFiles, batches, load
from sparsetrain.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, center_crop, random_resized_box,
                                         resize_shorter)
from sparsetrain.errors import UserError

CLASSES = ("n01", "n02", "n03")
MEAN = np.array(IMAGENET_MEAN)[:, None, None]
STD = np.array(IMAGENET_STD)[:, None, None]


def write_tree(root, train=50, val=8, seed=0):
    """root/{train,val}/<class>/*.JPEG: small RGB JPEGs of varied sizes, each class its own hue."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                h, w = rng.integers(20, 40, size=2)
                pixels = rng.integers(0, 60, size=(h, w, 3))
                pixels[..., c] += 180
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{name}_{i:03d}.JPEG", quality=90)
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("imagenet"))  # 174 training images, 24 for test


def test_splits_shapes_labels_and_normalisation(tree):
    s = load("imagenet_folder", data_dir=str(tree), seed=0, val_fraction=0.1, size=16, resize=18)
    assert s.num_classes == 3 and s.input_shape == (3, 16, 16)
    assert s.normalization == (IMAGENET_MEAN, IMAGENET_STD)
    assert isinstance(s.train, ImageFiles) and s.train.train and not s.val.train and not s.test.train
    assert (len(s.train), len(s.val), len(s.test)) == (135, 15, 24)  # 10% of each class of 150 held out
    assert torch.bincount(s.val.y).tolist() == [5, 5, 5]
    assert s.test.y.tolist() == [0] * 8 + [1] * 8 + [2] * 8  # sorted class folders, files in name order
    # the validation images are training images, none of them also trained on
    assert not set(map(bytes, s.val.paths)) & set(map(bytes, s.train.paths))
    x, y = next(batches(s.test, 24, shuffle=False))
    assert x.shape == (24, 3, 16, 16) and x.dtype == torch.float32
    # each class is its own hue: its channel is the brightest after un-normalising
    pixels = x.numpy() * STD + MEAN
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    assert (pixels.mean(axis=(2, 3)).argmax(1) == y.numpy()).all()


def test_eval_transform_by_hand(tmp_path):
    # shorter side already `resize`: the resize keeps every pixel, so the result is the centre crop
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(31, 24, 3), dtype=np.uint8)  # H 31, W 24
    image = Image.fromarray(pixels)
    assert resize_shorter(image, 24).size == (24, 31)
    crop = np.asarray(center_crop(image, 16))
    np.testing.assert_array_equal(crop, pixels[8:24, 4:20])  # top round(7.5) = 8, left (24-16)/2 = 4
    # through the reader: a lossless PNG in val/
    write_tree(tmp_path, train=2, val=0)
    image.save(tmp_path / "val" / "n02" / "known.png")
    s = load("imagenet_folder", data_dir=str(tmp_path), val_fraction=0.0, size=16, resize=24)
    x, y = next(batches(s.test, 1, shuffle=False))
    expected = (pixels[8:24, 4:20].transpose(2, 0, 1) / 255.0 - MEAN) / STD
    np.testing.assert_allclose(x[0].numpy(), expected, rtol=0, atol=1e-5)
    assert y.tolist() == [1]
    # shorter side to 18, the longer one scaled and rounded down; a flat image stays flat
    flat = Image.new("RGB", (50, 30), (10, 20, 30))
    resized = resize_shorter(flat, 18)
    assert resized.size == (30, 18)  # int(18 * 50 / 30) = 30
    assert (np.asarray(resized) == (10, 20, 30)).all()
    assert resize_shorter(Image.new("RGB", (30, 50)), 18).size == (18, 30)


def test_random_resized_box_stays_inside_with_allowed_area_and_ratio():
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        top, left, h, w = random_resized_box(120, 90, gen)
        assert 0 <= top and top + h <= 90 and 0 <= left and left + w <= 120
        assert 0.08 * 120 * 90 * 0.9 <= h * w <= 120 * 90
        assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05  # the drawn ratio, up to rounding of w and h
    # no box fits a 100x2 strip: the centre of the whole height at the largest ratio, 4/3
    assert random_resized_box(100, 2, gen) == (0, 48, 2, 3)  # w round(2 * 4/3) = 3, left (100-3)//2
    assert random_resized_box(2, 100, gen) == (48, 0, 3, 2)  # h round(2 / (3/4)) = 3


def test_augmentation_depends_on_seed_epoch_and_sample_only(tree):
    s = load("imagenet_folder", data_dir=str(tree), seed=3, val_fraction=0.0, size=16, resize=18)

    def epoch(data, e, workers):
        order = torch.Generator().manual_seed(e)
        got = list(batches(data, 32, shuffle=True, generator=order, epoch=e, workers=workers))
        return torch.cat([x for x, _ in got]), torch.cat([y for _, y in got])

    x0, y0 = epoch(s.train, 0, workers=0)
    x2, y2 = epoch(s.train, 0, workers=2)
    assert torch.equal(x0, x2) and torch.equal(y0, y2)  # workers do not change the batches
    # the order is the one the in-memory path draws from the same generator
    assert torch.equal(y0, s.train.y[torch.randperm(len(s.train), generator=torch.Generator().manual_seed(0))])
    x_next, _ = epoch(s.train, 1, workers=0)
    order_1 = torch.randperm(len(s.train), generator=torch.Generator().manual_seed(1))
    order_0 = torch.randperm(len(s.train), generator=torch.Generator().manual_seed(0))
    same_sample = torch.empty_like(x0)
    same_sample[torch.argsort(order_0)] = x0  # by sample index
    other = torch.empty_like(x0)
    other[torch.argsort(order_1)] = x_next
    assert not torch.equal(same_sample, other)  # a new epoch crops afresh
    reseeded = load("imagenet_folder", data_dir=str(tree), seed=4, val_fraction=0.0, size=16, resize=18)
    assert not torch.equal(epoch(reseeded.train, 0, workers=0)[0], x0)  # another run seed too
    # the evaluation transform has no randomness
    a = torch.cat([x for x, _ in batches(s.test, 10, shuffle=False, epoch=0)])
    b = torch.cat([x for x, _ in batches(s.test, 7, shuffle=False, epoch=5, workers=2)])
    assert torch.equal(a, b)


def test_under_ddp_each_rank_decodes_only_its_part_of_every_batch(tree):
    s = load("imagenet_folder", data_dir=str(tree), seed=0, val_fraction=0.0, size=8, resize=8)
    order = torch.Generator().manual_seed(0)
    whole = list(batches(s.train, 64, shuffle=True, generator=order, epoch=1))
    # ranks r of 3 take rows [r n / 3, (r + 1) n / 3) of each batch of n, as distributed.shard
    parts = [list(batches(s.train, 64, shuffle=True, generator=torch.Generator().manual_seed(0), epoch=1,
                          part=lambda n, r=r: slice(r * n // 3, (r + 1) * n // 3), workers=2 * (r == 1)))
             for r in range(3)]
    assert [len(y) for _, y in whole] == [64, 64, 22]
    assert [len(y) for _, y in parts[0]] == [21, 21, 7]  # 64 // 3, 22 // 3
    for k, (x, y) in enumerate(whole):
        assert torch.equal(torch.cat([p[k][0] for p in parts]), x)  # same samples, same crops
        assert torch.equal(torch.cat([p[k][1] for p in parts]), y)
    # a part that is empty (a last batch smaller than the ranks) is the batch's first sample
    empty = list(batches(s.test, 5, shuffle=False, part=lambda n: slice(0, 0)))
    assert [len(y) for _, y in empty] == [1] * 5 and torch.equal(empty[1][0][0], whole_test(s)[5])


def whole_test(s):
    return torch.cat([x for x, _ in batches(s.test, 24, shuffle=False)])


def test_a_damaged_image_is_one_sentence_naming_it_also_from_a_worker(tmp_path):
    write_tree(tmp_path, train=4, val=1)
    bad = tmp_path / "train" / "n02" / "n02_001.JPEG"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    s = load("imagenet_folder", data_dir=str(tmp_path), val_fraction=0.0, size=8, resize=8)  # lists, never decodes
    for workers in (0, 2):
        with pytest.raises(UserError) as caught:
            list(batches(s.train, 4, shuffle=False, workers=workers))
        message = str(caught.value)
        assert message.startswith(f"dataset file {str(bad)!r} is damaged or truncated")
        assert "\n" not in message and "Traceback" not in message
    bad.write_bytes(b"not a JPEG")
    with pytest.raises(UserError, match=r"n02_001\.JPEG' is not an image Pillow can read"):
        list(batches(s.train, 4, shuffle=False, workers=2))


def test_layout_and_option_errors(tmp_path):
    with pytest.raises(UserError, match="reads files from disk: pass --data-dir"):
        load("imagenet_folder")
    write_tree(tmp_path / "a", train=1, val=1)
    for options, message in [({"size": 0}, "option size must be a positive whole number"),
                             ({"resize": 2.5}, "option resize must be a positive whole number"),
                             ({"size": 32, "resize": 16}, r"resize \(16\) must be at least size \(32\)")]:
        with pytest.raises(UserError, match=message):
            load("imagenet_folder", data_dir=str(tmp_path / "a"), **options)
    (tmp_path / "b" / "train" / "n01").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "b" / "train" / "n01" / "x.JPEG")
    with pytest.raises(UserError, match=r"has no val/ folder"):
        load("imagenet_folder", data_dir=str(tmp_path / "b"))
    (tmp_path / "b" / "val").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "b" / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(UserError, match=r"val' has no class subfolders; it holds images directly"):
        load("imagenet_folder", data_dir=str(tmp_path / "b"))
    (tmp_path / "b" / "val" / "n99").mkdir()
    with pytest.raises(UserError, match=r"has class 'n99', which .*train does not have"):
        load("imagenet_folder", data_dir=str(tmp_path / "b"))
