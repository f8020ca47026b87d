"""The CIFAR-10-C corruptions: shape/dtype/range, severity order, determinism, reference formulas, files."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest

from sparsetrain.errors import UserError
from sparsetrain.scenarios.corruptions import (
    BENCHMARK, CORRUPTIONS, EXTRAS, SEVERITIES, corrupt, list_corruptions, motion_kernel,
    read_corrupted, to_nchw, to_nhwc, write_corrupted,
)

ALL = list_corruptions()


def natural(h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    """A natural-ish image in [0.05, 0.95]: smooth colour waves, a flat disk (edges), fine noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.zeros((h, w, c))
    for ch in range(c):
        a, b, phase = rng.uniform(0.5, 3, 3)
        img[..., ch] = 0.5 + 0.25 * np.sin(2 * np.pi * (a * xx + b * yy) + phase)
    cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.3)
    img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0.1, 0.9, c)
    img += rng.normal(0, 0.03, img.shape)
    return np.clip(img, 0.05, 0.95)


def batch(n: int, size: int, c: int = 3) -> np.ndarray:
    return np.stack([natural(size, size, c, seed) for seed in range(n)])


def test_registry_has_the_15_benchmark_and_4_extra_corruptions():
    assert len(BENCHMARK) == 15 and len(EXTRAS) == 4
    assert set(CORRUPTIONS.names()) == set(BENCHMARK) | set(EXTRAS)
    assert ALL[:15] == list(BENCHMARK)


@pytest.mark.parametrize("name", ALL)
def test_keeps_shape_dtype_range_and_changes_the_image(name):
    rgb = batch(2, 32).astype(np.float32)
    gray = batch(2, 16, 1)  # float64, grayscale
    u8 = np.uint8(batch(2, 16) * 255)
    odd = np.stack([natural(5, 7, 1, seed) for seed in range(2)]).astype(np.float32)  # tiny, not square
    for images in (rgb, gray, u8, odd):
        for severity in (1, 5):
            out = corrupt(images, name, severity, seed=3)
            assert out.shape == images.shape and out.dtype == images.dtype
            if images.dtype == np.uint8:
                assert out.min() >= 0 and out.max() <= 255
            else:
                assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
            change = np.abs(out.astype(float) - images.astype(float)).max()
            if images is odd:
                continue  # 5x7 is too small for some (zoom blur by 1.05 keeps 5 pixels as they are)
            if name == "saturate" and images.shape[-1] == 1 and severity <= 3:
                assert change < 1e-6  # a gray image has no saturation to scale (no offset before severity 4)
            else:
                assert change > 1e-6, (name, severity)


# Distortion must grow with severity. Measured as the mean squared error to the clean
# image, averaged over 8 natural-ish 32x32 images (snow is not monotone image by image:
# its severity 3 zooms the flakes, so the average is needed). Where the reference's own
# constants are not ordered in one distortion measure, we test what they do order:
#  - frost: the blend keeps less image and adds more texture (1, .2)..(.75, .45); the
#    texture's brightness can offset the darkening in MSE, so we use 1 - correlation;
#  - motion_blur: severities 3 and 4, (6, 2) and (8, 2), differ only by taps of weight
#    < 0.3% (Gaussian sigma 2 at 7-8 px), so 3 -> 4 is only required not to decrease;
#  - glass_blur: (sigma, iterations) = (.05,1), (.25,1), (.4,1), (.25,2), (.4,2); more blur
#    smooths the shuffled pixels back towards the image, so only two shuffle passes versus
#    one at the same sigma are ordered (4 > 2, 5 > 3);
#  - elastic_transform: the affine jitter shrinks (0.08..0.03 of the size) while the
#    elastic field grows, so MSE falls with severity; not tested for order;
#  - saturate: 1-2 desaturate (x0.3, x0.1), 3-5 oversaturate; ordered within each group;
#  - spatter: 1-3 water, 4-5 mud; ordered within each group.
ORDERS = {
    "glass_blur": [(2, 4), (3, 5)],
    "saturate": [(1, 2), (3, 4), (4, 5)],
    "spatter": [(1, 2), (2, 3), (4, 5)],
    "elastic_transform": [],
}
CHAIN = [(s, s + 1) for s in range(1, 5)]


def mse(a, b):
    return float(np.mean((a - b) ** 2))


def one_minus_corr(a, b):
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(1 - a @ b / np.sqrt((a @ a) * (b @ b)))


@pytest.mark.parametrize("name", ALL)
def test_distortion_grows_with_severity(name):
    images = batch(8, 32)
    measure = one_minus_corr if name == "frost" else mse
    dist = {s: np.mean([measure(o, i) for o, i in zip(corrupt(images, name, s, seed=0), images)])
            for s in SEVERITIES}
    for low, high in ORDERS.get(name, CHAIN):
        if name == "motion_blur" and (low, high) == (3, 4):
            assert dist[high] >= dist[low] - 1e-9
        else:
            assert dist[high] > dist[low], (name, low, high, dist)


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_image_and_batch_split_does_not_matter(name):
    images = batch(3, 16)
    a = corrupt(images, name, 3, seed=7)
    np.testing.assert_array_equal(a, corrupt(images, name, 3, seed=7))
    np.testing.assert_array_equal(a[1:], corrupt(images[1:], name, 3, seed=7, start_index=1))


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise", "glass_blur",
                                  "motion_blur", "snow", "frost", "fog", "spatter", "elastic_transform"])
def test_random_corruptions_depend_on_the_seed(name):
    images = batch(1, 16)
    assert not np.array_equal(corrupt(images, name, 5, seed=0), corrupt(images, name, 5, seed=1))


def test_gaussian_noise_matches_the_reference_formula():
    images = batch(2, 16)
    sigmas = [0.04, 0.06, 0.08, 0.09, 0.10]  # make_cifar_c.py, CIFAR scale
    for severity, sigma in zip(SEVERITIES, sigmas):
        expected = np.stack([np.clip(img + np.random.default_rng([5, i]).normal(size=img.shape, scale=sigma), 0, 1)
                             for i, img in enumerate(images)])
        np.testing.assert_allclose(corrupt(images, "gaussian_noise", severity, seed=5), expected, atol=1e-12)


def test_brightness_adds_to_the_hsv_value_as_the_reference():
    image = batch(1, 8)[0]
    shifts = [0.05, 0.1, 0.15, 0.2, 0.3]  # make_cifar_c.py, CIFAR scale
    for severity, c in zip(SEVERITIES, shifts):
        expected = np.empty_like(image)
        for r in range(8):
            for col in range(8):
                h, s, v = colorsys.rgb_to_hsv(*image[r, col])
                expected[r, col] = colorsys.hsv_to_rgb(h, s, min(max(v + c, 0.0), 1.0))
        np.testing.assert_allclose(corrupt(image[None], "brightness", severity)[0], expected, atol=1e-9)


def test_brightness_of_a_gray_image_adds_to_its_level():
    gray = np.full((1, 4, 4, 1), 0.5)
    np.testing.assert_allclose(corrupt(gray, "brightness", 5), 0.8)


def test_uint8_output_truncates_like_the_reference():
    u8 = np.full((1, 4, 4, 3), 100, np.uint8)
    # contrast keeps a flat image; brightness adds c=0.05 to v: 100/255 + .05 -> 112.75 -> 112
    np.testing.assert_array_equal(corrupt(u8, "contrast", 1), u8)
    assert (corrupt(u8, "brightness", 1) == 112).all()


def test_motion_kernel_is_a_normalised_ray_along_the_angle():
    k = motion_kernel(6, 2, 0)
    assert k.shape == (27, 27) and abs(k.sum() - 1) < 1e-6
    centre = 13
    taps = np.exp(-np.arange(13) ** 2 / 8.0)
    np.testing.assert_allclose(k[centre, centre:centre + 13], taps / taps.sum(), rtol=1e-5)
    assert k[centre, :centre].sum() == 0 and np.count_nonzero(k) == 13
    down = motion_kernel(6, 2, 90)  # +90 degrees: along +y (rows)
    np.testing.assert_allclose(down[centre:centre + 13, centre], taps / taps.sum(), rtol=1e-5)


def test_layout_helpers_round_trip():
    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    assert to_nhwc(x).shape == (2, 4, 5, 3)
    np.testing.assert_array_equal(to_nchw(to_nhwc(x)), x)


def test_bad_severity_or_layout_is_a_user_error():
    with pytest.raises(UserError, match="severity"):
        corrupt(batch(1, 8), "fog", 6)
    with pytest.raises(UserError, match="N, H, W, C"):
        corrupt(batch(1, 8)[0], "fog", 1)
    with pytest.raises(UserError, match="unknown corruption"):
        corrupt(batch(1, 8), "rain", 1)


def test_npy_files_in_the_cifar10c_layout_round_trip(tmp_path):
    images = np.uint8(batch(3, 8) * 255)
    labels = np.array([4, 0, 9])
    paths = write_corrupted(tmp_path, images, labels, corruptions=["fog", "pixelate"], seed=2)
    assert sorted(p.name for p in paths) == ["fog.npy", "labels.npy", "pixelate.npy"]
    stacked = np.load(tmp_path / "fog.npy")
    assert stacked.shape == (15, 8, 8, 3) and stacked.dtype == np.uint8
    stored_labels = np.load(tmp_path / "labels.npy")
    assert stored_labels.dtype == np.uint8 and list(stored_labels) == [4, 0, 9] * 5
    for severity in SEVERITIES:
        x, y = read_corrupted(tmp_path, "fog", severity)
        np.testing.assert_array_equal(x, corrupt(images, "fog", severity, seed=2))
        assert list(y) == [4, 0, 9] and y.dtype == np.int64
    x_all, y_all = read_corrupted(tmp_path, "pixelate")
    assert x_all.shape == (15, 8, 8, 3) and len(y_all) == 15


def test_reading_grayscale_files_without_channel_axis(tmp_path):
    np.save(tmp_path / "snow.npy", np.zeros((10, 8, 8), np.uint8))
    np.save(tmp_path / "labels.npy", np.arange(10, dtype=np.uint8))
    x, y = read_corrupted(tmp_path, "snow", 2)
    assert x.shape == (2, 8, 8, 1) and list(y) == [2, 3]


def test_missing_or_malformed_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_corrupted(tmp_path, "fog")
    (tmp_path / "fog.npy").write_bytes(b"not an array")
    np.save(tmp_path / "labels.npy", np.zeros(5, np.uint8))
    with pytest.raises(UserError, match="not a readable"):
        read_corrupted(tmp_path, "fog")
    np.save(tmp_path / "fog.npy", np.zeros((4, 8, 8, 3), np.uint8))
    with pytest.raises(UserError, match="expected"):
        read_corrupted(tmp_path, "fog")


class ScriptedRng:
    """Stands in for a Generator: ``integers`` returns the scripted offsets in order."""

    def __init__(self, draws):
        self.draws = list(draws)

    def integers(self, low, high, size):
        return np.array(self.draws.pop(0))


def test_glass_shuffle_copies_the_neighbour_like_the_reference_views_by_hand():
    from sparsetrain.scenarios.corruptions import glass_shuffle
    img = (10 * np.arange(4)[:, None] + np.arange(4)[None, :]).astype(np.uint8)[..., None]
    # pixels visited (3,3), (3,2), (2,3), (2,2); each draw is (dx, dy)
    rng = ScriptedRng([(-1, -1), (0, -1), (-1, 0), (-1, -1)])
    out = glass_shuffle(img.copy(), 1, 1, rng)[..., 0]
    # x[h,w] <- x[h+dy, w+dx], read after the earlier copies: (3,3)<-22, (3,2)<-22,
    # (2,3)<-22, (2,2)<-11; a true swap would give [20, 21, 32, 33] / [30, 31, 22, 22]
    expected = np.array([[0, 1, 2, 3], [10, 11, 12, 13], [20, 21, 11, 22], [30, 31, 22, 22]])
    np.testing.assert_array_equal(out, expected)
    assert rng.draws == []


def reference_glass_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """make_cifar_c.py's glass_blur transcribed: 0..255 in, 0..255 out, tuple assignment of numpy views."""
    from skimage.filters import gaussian
    sigma, delta, iterations = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)][severity - 1]
    x = np.uint8(gaussian(np.array(x) / 255., sigma=sigma, channel_axis=-1) * 255)
    for _ in range(iterations):
        for h in range(32 - delta, delta, -1):
            for w in range(32 - delta, delta, -1):
                dx, dy = rng.integers(-delta, delta, size=(2,))
                h_prime, w_prime = h + dy, w + dx
                x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]
    return np.clip(gaussian(x / 255., sigma=sigma, channel_axis=-1), 0, 1) * 255


@pytest.mark.parametrize("severity", SEVERITIES)
def test_glass_blur_is_bit_for_bit_the_reference_on_cifar_sized_uint8(severity):
    from sparsetrain.scenarios.corruptions import glass_blur
    image = np.uint8(natural(32, 32, 3, seed=severity) * 255)
    expected = np.uint8(reference_glass_blur(image, severity, np.random.default_rng(7)))
    ours = np.uint8(glass_blur(image / 255.0, severity, np.random.default_rng(7)) * 255)
    np.testing.assert_array_equal(ours, expected)


def test_frost_texture_has_the_statistics_of_the_reference_crops():
    # frost1-5 of hendrycks/robustness, resized by 0.2, random 32x32 crops (as make_cifar_c.py):
    # mean 0.635, np.std of a crop 0.115 on average, RGB means 0.561 / 0.647 / 0.695
    from sparsetrain.scenarios.corruptions import frost_texture
    crops = np.stack([frost_texture(32, 32, np.random.default_rng(i)) for i in range(48)])
    assert crops.min() >= 0 and crops.max() <= 1
    assert abs(crops.mean() - 0.635) < 0.002
    assert abs(np.mean([c.std() for c in crops]) - 0.115) < 0.002
    np.testing.assert_allclose(crops.mean(axis=(0, 1, 2)), [0.561, 0.647, 0.695], atol=0.002)


@pytest.mark.parametrize("severity", SEVERITIES)
def test_frost_is_the_reference_blend_with_the_texture(severity):
    from sparsetrain.scenarios.corruptions import frost, frost_texture
    keep, amount = [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)][severity - 1]
    image = natural(32, 32, 3, seed=severity)
    expected = np.clip(keep * image + amount * frost_texture(32, 32, np.random.default_rng(5)), 0, 1)
    np.testing.assert_allclose(frost(image, severity, np.random.default_rng(5)), expected, atol=1e-12)
