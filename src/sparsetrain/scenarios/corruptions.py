"""Common corruptions at five severities, CIFAR-scale (CIFAR-10-C), for any image size.

Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", ICLR 2019. The constants are those of the reference CIFAR generator
(``ImageNet-C/create_c/make_cifar_c.py`` in hendrycks/robustness), not the ImageNet ones.
The 15 benchmark corruptions are `BENCHMARK`; the 4 extras are `EXTRAS`.

Conventions
-----------
- A batch is ``(N, H, W, C)`` (channels last, the CIFAR-10-C file layout) with C = 1
  (grayscale) or 3 (RGB); `to_nhwc` / `to_nchw` convert from and to the torch layout.
- ``uint8`` input (0..255) gives ``uint8`` output, truncated like the reference's
  ``np.uint8(...)``; float input in [0, 1] gives the same float dtype in [0, 1].
- Randomness comes from ``np.random.default_rng([seed, start_index + i])`` for image i, so
  the same seed gives the same images, independent of the batch split and of severity
  (a severity sweep sees the same noise pattern, scaled).
- Grayscale images go through colour operations (HSV, snow's grey level, spatter's
  colour, frost) as three equal channels and come back as their channel mean.

Where we differ from the reference (no ImageMagick, no shipped texture files):
- motion blur (and the streaks of snow) use our own kernel equivalent to ImageMagick's
  ``MotionBlurImage(radius, sigma, angle)``: a one-sided Gaussian-weighted line of
  ``2*ceil(radius)+1`` taps along ``angle``, applied with ``cv2.filter2D`` and edge
  replication;
- frost blends with a procedural ice texture drawn from the seed (`frost_texture`)
  instead of crops of the frost photographs the reference ships; the texture has the
  crops' mean, channel means and within-crop spread, not their spatial pattern;
- size-dependent constants written for 32x32 (glass-blur sweep, plasma size, elastic
  ``IMSIZE``) follow the actual image size.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Callable, Iterable

import cv2
import numpy as np
from PIL import Image
from scipy.ndimage import map_coordinates
from scipy.ndimage import zoom as scizoom
from skimage.color import hsv2rgb, rgb2hsv
from skimage.filters import gaussian

from sparsetrain.atomic import atomic_write_bytes
from sparsetrain.errors import UserError
from sparsetrain.registry import Registry

Corruption = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
"""``fn(image (H, W, 3) float64 in [0, 1], severity 1..5, rng) -> image (H, W, 3), float``."""

CORRUPTIONS: Registry[Corruption] = Registry("corruption")
SEVERITIES = (1, 2, 3, 4, 5)


def register_corruption(name: str, help: str) -> Callable[[Corruption], Corruption]:
    return CORRUPTIONS.register(name, help=help)


# --- helpers ---------------------------------------------------------------------------
def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """skimage Gaussian filter over the spatial axes of an (H, W[, C]) float image."""
    return gaussian(x, sigma=sigma, channel_axis=-1 if x.ndim == 3 else None)


def disk(radius: float, alias_blur: float) -> np.ndarray:
    """The reference's anti-aliased disk kernel for defocus blur."""
    half, ksize = (8, (3, 3)) if radius <= 8 else (int(radius), (5, 5))
    grid = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(grid, grid)
    kernel = (xx**2 + yy**2 <= radius**2).astype(np.float32)
    kernel /= kernel.sum()
    return cv2.GaussianBlur(kernel, ksize=ksize, sigmaX=alias_blur)


def motion_kernel(radius: float, sigma: float, angle: float) -> np.ndarray:
    """A correlation kernel equivalent to ImageMagick's MotionBlurImage(radius, sigma, angle).

    ImageMagick averages ``width = 2*ceil(radius)+1`` pixels on a ray from the output
    pixel at ``angle`` degrees (0 = along +x, image rows pointing down), weighted by
    ``exp(-i^2 / (2 sigma^2))`` for the i-th tap, normalised; we place those taps in a
    square correlation kernel centred on the output pixel.
    """
    width = int(2 * math.ceil(radius) + 1)
    taps = np.exp(-(np.arange(width) ** 2) / (2.0 * sigma**2))
    taps /= taps.sum()
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    kernel = np.zeros((2 * width + 1, 2 * width + 1), np.float32)
    for i, weight in enumerate(taps):  # tap i sits at (x + ceil(i cos - 1/2), y + ceil(i sin - 1/2))
        kernel[width + math.ceil(i * sin - 0.5), width + math.ceil(i * cos - 0.5)] += weight
    return kernel


def _motion_blur(x: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    kernel = motion_kernel(radius, sigma, angle)
    return cv2.filter2D(x.astype(np.float32), -1, kernel, borderType=cv2.BORDER_REPLICATE)


def plasma_fractal(size: int, wibble_decay: float, rng: np.random.Generator) -> np.ndarray:
    """Diamond-square height map (size a power of two) in [0, 1], as in the reference."""
    grid = np.zeros((size, size))
    step, wibble = size, 100.0

    def wibbled_mean(array: np.ndarray) -> np.ndarray:
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while step >= 2:
        half = step // 2
        corners = grid[0:size:step, 0:size:step]
        square = corners + np.roll(corners, -1, axis=0)
        square = square + np.roll(square, -1, axis=1)
        grid[half:size:step, half:size:step] = wibbled_mean(square)
        centres = grid[half:size:step, half:size:step]
        corners = grid[0:size:step, 0:size:step]
        left = centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        grid[0:size:step, half:size:step] = wibbled_mean(left)
        top = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        grid[half:size:step, 0:size:step] = wibbled_mean(top)
        step //= 2
        wibble /= wibble_decay
    grid -= grid.min()
    return grid / grid.max()


def _plasma(h: int, w: int, wibble_decay: float, rng: np.random.Generator) -> np.ndarray:
    size = 1 << max(1, math.ceil(math.log2(max(h, w, 2))))
    return plasma_fractal(size, wibble_decay, rng)[:h, :w]


def clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """Zoom the centre of an (H, W, C) image by ``factor`` and crop back to (H, W)."""
    h, w = x.shape[:2]
    ch, cw = math.ceil(h / factor), math.ceil(w / factor)
    top, left = (h - ch) // 2, (w - cw) // 2
    zoomed = scizoom(x[top:top + ch, left:left + cw], (factor, factor, 1), order=1)
    trim_h, trim_w = (zoomed.shape[0] - h) // 2, (zoomed.shape[1] - w) // 2
    return zoomed[trim_h:trim_h + h, trim_w:trim_w + w]


def _gray(x: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, as ``cv2.cvtColor(RGB2GRAY)``; (H, W, 1)."""
    return (x @ np.array([0.299, 0.587, 0.114]))[..., None]


def _to_uint8_pil(x: np.ndarray) -> Image.Image:
    return Image.fromarray(np.uint8(np.clip(x, 0, 1) * 255))


FROST_CHANNEL_MEANS = np.array([0.561, 0.647, 0.695])
"""RGB means of the reference's frost crops (frost1-5, resized by 0.2, 32x32 crops)."""
FROST_CROP_STD = 0.115
"""Mean over crops of ``np.std(crop)`` (all pixels and channels) of the reference's crops."""


def frost_texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A procedural frost texture (H, W, 3) in [0, 1], drawn from ``rng``.

    Our stand-in for the frost photographs of the reference generator (hendrycks/robustness
    ``make_cifar_c.py``: a random 32x32 crop of one of frost1-5 resized by 0.2, blended as
    ``c0 * x + c1 * frost``). The structure is ours: a plasma-fractal haze under thin bright
    ice needles (random kinked line segments drawn at 4x and downsampled). Its statistics
    are the reference crops': the structure is standardised within the crop and mapped to
    the crops' RGB means 0.561/0.647/0.695 (overall mean 0.634) with the spread that makes
    the within-crop standard deviation over all values 0.115 (the channel offsets give the
    rest). What stays different: the spatial pattern (real ice photographs versus our
    needles and haze), the crop-to-crop variation of mean and contrast (ours is the same
    for every crop) and the shape of the value distribution (clipped at 0 and 1).
    """
    scale = 4  # draw at 4x resolution, then downsample (anti-aliased needles)
    big_h, big_w = h * scale, w * scale
    needles = np.zeros((big_h, big_w), np.float32)
    count = max(6, (big_h * big_w) // 300)
    for _ in range(count):
        x, y = rng.uniform(0, big_w), rng.uniform(0, big_h)
        angle = rng.uniform(0, 2 * math.pi)
        for _ in range(int(rng.integers(2, 5))):  # a needle with a few kinked branches
            length = rng.uniform(0.1, 0.35) * max(big_h, big_w)
            x2, y2 = x + length * math.cos(angle), y + length * math.sin(angle)
            cv2.line(needles, (int(x), int(y)), (int(x2), int(y2)), float(rng.uniform(0.5, 1.0)), 1)
            x, y = x + 0.5 * (x2 - x), y + 0.5 * (y2 - y)
            angle += rng.uniform(-1.0, 1.0)
    needles = cv2.resize(cv2.GaussianBlur(needles, (3, 3), 0.8), (w, h), interpolation=cv2.INTER_AREA)
    value = 0.35 * _plasma(h, w, 1.8, rng) + 1.2 * needles
    spread = value.std()
    z = (value - value.mean()) / spread if spread > 1e-12 else np.zeros_like(value)
    # total variance = spread^2 + variance of the channel means, so solve for the spread
    within = math.sqrt(FROST_CROP_STD ** 2 - FROST_CHANNEL_MEANS.var())
    return np.clip(FROST_CHANNEL_MEANS + within * z[..., None], 0, 1)


# --- noise -----------------------------------------------------------------------------
@register_corruption("gaussian_noise", help="additive Gaussian noise, sigma 0.04..0.10")
def gaussian_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = [0.04, 0.06, 0.08, 0.09, 0.10][severity - 1]
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1)


@register_corruption("shot_noise", help="Poisson noise with 500..50 photons at full scale")
def shot_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = [500, 250, 100, 75, 50][severity - 1]
    return np.clip(rng.poisson(x * c) / c, 0, 1)


@register_corruption("impulse_noise", help="salt-and-pepper noise on 1%..7% of the values")
def impulse_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = [0.01, 0.02, 0.03, 0.05, 0.07][severity - 1]
    # skimage random_noise(mode="s&p", amount=c): each value flipped with probability c,
    # to 1 or 0 with equal odds
    flipped = rng.random(x.shape) <= c
    salt = rng.random(x.shape) < 0.5
    out = x.copy()
    out[flipped & salt] = 1.0
    out[flipped & ~salt] = 0.0
    return out


@register_corruption("speckle_noise", help="extra: multiplicative Gaussian noise, sigma 0.06..0.2")
def speckle_noise(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = [0.06, 0.1, 0.12, 0.16, 0.2][severity - 1]
    return np.clip(x + x * rng.normal(size=x.shape, scale=c), 0, 1)


# --- blur ------------------------------------------------------------------------------
@register_corruption("gaussian_blur", help="extra: Gaussian blur, sigma 0.4..1")
def gaussian_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = [0.4, 0.6, 0.7, 0.8, 1.0][severity - 1]
    return np.clip(_blur(x, c), 0, 1)


@register_corruption("glass_blur", help="blur, local pixel shuffling, blur")
def glass_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    sigma, delta, iterations = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)][severity - 1]
    img = glass_shuffle(np.uint8(_blur(x, sigma) * 255), delta, iterations, rng)
    return np.clip(_blur(img / 255.0, sigma), 0, 1)


def glass_shuffle(img: np.ndarray, delta: int, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """Glass blur's local "shuffle", in place, exactly as the reference generator does it.

    The reference (``glass_blur`` in hendrycks/robustness ``make_cifar_c.py``) walks the
    pixels from the bottom-right corner and writes
    ``x[h, w], x[h', w'] = x[h', w'], x[h, w]``: the right side holds numpy *views*, so the
    first assignment copies the neighbour into ``(h, w)`` and the second writes that same
    value back. The published CIFAR-10-C therefore *copies* the neighbour's pixel rather
    than swapping the two; we do the same so that glass-blur errors (and mCE) compare with
    published numbers. Offsets ``dx, dy`` are drawn in that order from ``[-delta, delta)``
    (the reference's ``randint(-d, d)``, upper bound excluded).
    """
    h, w = img.shape[:2]
    for _ in range(iterations):
        for row in range(h - delta, delta, -1):
            for col in range(w - delta, delta, -1):
                dx, dy = rng.integers(-delta, delta, size=2)
                img[row, col] = img[row + dy, col + dx]
    return img


@register_corruption("defocus_blur", help="blur with an anti-aliased disk, radius 0.3..1.5")
def defocus_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    radius, alias = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)][severity - 1]
    kernel = disk(radius, alias)
    channels = [cv2.filter2D(x[:, :, d].astype(np.float32), -1, kernel) for d in range(x.shape[2])]
    return np.clip(np.stack(channels, axis=-1), 0, 1)


@register_corruption("motion_blur", help="motion blur along a random angle in [-45, 45] degrees")
def motion_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    radius, sigma = [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)][severity - 1]
    angle = rng.uniform(-45, 45)
    # the reference blurs the uint8 PNG and reads it back as uint8
    img = np.uint8(np.clip(x, 0, 1) * 255).astype(np.float32)
    out = np.floor(np.clip(_motion_blur(img, radius, sigma, angle), 0, 255) + 0.5)
    return out / 255.0


@register_corruption("zoom_blur", help="average of zooms up to 1.05..1.25")
def zoom_blur(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    top = [1.06, 1.11, 1.16, 1.21, 1.26][severity - 1]
    factors = np.arange(1, top, 0.01)
    x32 = x.astype(np.float32)
    out = np.zeros_like(x32)
    for factor in factors:
        out += clipped_zoom(x32, factor)
    return np.clip((x32 + out) / (len(factors) + 1), 0, 1)


# --- weather ---------------------------------------------------------------------------
@register_corruption("snow", help="snow flakes streaked by motion blur over a brightened image")
def snow(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    loc, scale, zoom, threshold, radius, sigma, blend = [
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)][severity - 1]
    x = x.astype(np.float32)
    layer = rng.normal(size=x.shape[:2], loc=loc, scale=scale)
    layer = clipped_zoom(layer[..., None], zoom)[..., 0]
    layer[layer < threshold] = 0
    layer8 = np.uint8(np.clip(layer, 0, 1) * 255).astype(np.float32)
    streaks = _motion_blur(layer8, radius, sigma, rng.uniform(-135, -45))
    streaks = (np.floor(np.clip(streaks, 0, 255) + 0.5) / 255.0)[..., None]
    x = blend * x + (1 - blend) * np.maximum(x, _gray(x) * 1.5 + 0.5)
    return np.clip(x + streaks + np.rot90(streaks, k=2), 0, 1)


@register_corruption("frost", help="blend with a procedural frost texture (ours, not the reference photos)")
def frost(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    keep, amount = [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)][severity - 1]
    texture = frost_texture(x.shape[0], x.shape[1], rng)
    return np.clip(keep * x + amount * texture, 0, 1)


@register_corruption("fog", help="add a plasma-fractal haze and rescale")
def fog(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    amount, decay = [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)][severity - 1]
    peak = x.max()
    x = x + amount * _plasma(x.shape[0], x.shape[1], decay, rng)[..., None]
    return np.clip(x * peak / (peak + amount), 0, 1)


@register_corruption("spatter", help="extra: water drops (severity 1-3) or mud (4-5)")
def spatter(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    loc, scale, sigma, threshold, intensity, mud = [
        (0.62, 0.1, 0.7, 0.7, 0.5, 0),
        (0.65, 0.1, 0.8, 0.7, 0.5, 0),
        (0.65, 0.3, 1, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1),
        (0.65, 0.1, 0.5, 0.68, 0.6, 1)][severity - 1]
    x = x.astype(np.float32)
    liquid = _blur(rng.normal(size=x.shape[:2], loc=loc, scale=scale), sigma)
    liquid[liquid < threshold] = 0
    if not mud:
        liquid8 = (liquid * 255).astype(np.uint8)
        dist = cv2.distanceTransform(255 - cv2.Canny(liquid8, 50, 150), cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
        relief = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
        dist = cv2.blur(cv2.filter2D(dist, cv2.CV_8U, relief), (3, 3)).astype(np.float32)
        m = liquid8 * dist
        peak = m.max()
        m = m / peak * intensity if peak > 0 else np.zeros_like(m)
        colour = np.array([175, 238, 238], np.float32) / 255.0  # pale turquoise water
        return np.clip(x + m[..., None] * colour, 0, 1)
    m = _blur((liquid > threshold).astype(np.float32), intensity)
    m[m < 0.8] = 0
    colour = np.array([63, 42, 20], np.float32) / 255.0  # mud brown
    return np.clip(x * (1 - m[..., None]) + colour * m[..., None], 0, 1)


# --- digital ---------------------------------------------------------------------------
@register_corruption("brightness", help="add 0.05..0.3 to the HSV value channel")
def brightness(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = [0.05, 0.1, 0.15, 0.2, 0.3][severity - 1]
    hsv = rgb2hsv(x)
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return np.clip(hsv2rgb(hsv), 0, 1)


@register_corruption("saturate", help="extra: scale HSV saturation (0.3, 0.1, 1.5, 2, 2.5) plus offset")
def saturate(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    factor, offset = [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)][severity - 1]
    hsv = rgb2hsv(x)
    hsv[..., 1] = np.clip(hsv[..., 1] * factor + offset, 0, 1)
    return np.clip(hsv2rgb(hsv), 0, 1)


@register_corruption("contrast", help="shrink towards the per-channel mean by 0.75..0.15")
def contrast(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = [0.75, 0.5, 0.4, 0.3, 0.15][severity - 1]
    means = x.mean(axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1)


@register_corruption("elastic_transform", help="random affine warp plus a smooth displacement field")
def elastic_transform(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    h, w = x.shape[:2]
    size = min(h, w)  # the reference's IMSIZE (32 for CIFAR)
    alpha, sigma, affine = [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06),
                            (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)][severity - 1]
    alpha, sigma, affine = alpha * size, sigma * size, affine * size
    img = x.astype(np.float32)
    centre = np.float32((h, w)) // 2
    square = size // 3
    pts1 = np.float32([centre + square, [centre[0] + square, centre[1] - square], centre - square])
    pts2 = pts1 + rng.uniform(-affine, affine, size=pts1.shape).astype(np.float32)
    matrix = cv2.getAffineTransform(pts1, pts2)
    img = cv2.warpAffine(img, matrix, (w, h), borderMode=cv2.BORDER_REFLECT_101)
    if img.ndim == 2:
        img = img[..., None]
    dx = (gaussian(rng.uniform(-1, 1, size=(h, w)), sigma, mode="reflect", truncate=3) * alpha)
    dy = (gaussian(rng.uniform(-1, 1, size=(h, w)), sigma, mode="reflect", truncate=3) * alpha)
    dx, dy = dx.astype(np.float32)[..., None], dy.astype(np.float32)[..., None]
    cols, rows, chans = np.meshgrid(np.arange(w), np.arange(h), np.arange(img.shape[2]))
    coords = (np.reshape(rows + dy, (-1, 1)), np.reshape(cols + dx, (-1, 1)), np.reshape(chans, (-1, 1)))
    return np.clip(map_coordinates(img, coords, order=1, mode="reflect").reshape(img.shape), 0, 1)


@register_corruption("pixelate", help="box-downsample to 95%..65% of the size and back")
def pixelate(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    c = [0.95, 0.9, 0.85, 0.75, 0.65][severity - 1]
    h, w = x.shape[:2]
    image = _to_uint8_pil(x)
    image = image.resize((max(1, int(w * c)), max(1, int(h * c))), Image.BOX).resize((w, h), Image.BOX)
    return np.asarray(image, dtype=np.float64) / 255.0


@register_corruption("jpeg_compression", help="JPEG at quality 80..40")
def jpeg_compression(x: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    quality = [80, 65, 58, 50, 40][severity - 1]
    buffer = io.BytesIO()
    _to_uint8_pil(x).save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float64) / 255.0


BENCHMARK = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
             "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
             "elastic_transform", "pixelate", "jpeg_compression")
"""The 15 corruptions of the CIFAR-10-C / ImageNet-C benchmark, in the paper's order."""
EXTRAS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
"""The 4 held-out corruptions of the reference generator."""


def list_corruptions() -> list[str]:
    """All registered corruption names: the benchmark's 15 first, then the rest."""
    rest = [n for n in CORRUPTIONS.names() if n not in BENCHMARK]
    return list(BENCHMARK) + rest


# --- the batched API -------------------------------------------------------------------
def to_nhwc(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, H, W, C)."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(images), 1, -1))


def to_nchw(images: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> (N, C, H, W)."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(images), -1, 1))


def _check(name: str, severity: int, images: np.ndarray) -> None:
    CORRUPTIONS.get(name)
    if severity not in SEVERITIES:
        raise UserError(f"severity must be one of 1, 2, 3, 4, 5; got {severity!r}")
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise UserError(f"images must be an (N, H, W, C) array with C = 1 or 3, got shape {images.shape}")
    if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
        raise UserError(f"images must be uint8 or float in [0, 1], got dtype {images.dtype}")


def corrupt_image(image: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Corrupt one (H, W, C) image (C = 1 or 3; uint8 or float in [0, 1]); same shape and dtype."""
    dtype = image.dtype
    x = image.astype(np.float64) / 255.0 if dtype == np.uint8 else np.clip(image.astype(np.float64), 0, 1)
    gray = x.shape[-1] == 1
    rgb = np.repeat(x, 3, axis=-1) if gray else x
    out = np.asarray(CORRUPTIONS.get(name)(rgb, severity, rng), dtype=np.float64)
    out = np.clip(out.mean(axis=-1, keepdims=True) if gray else out, 0, 1)
    if dtype == np.uint8:
        return np.uint8(out * 255)  # truncation, as the reference's np.uint8(...)
    return out.astype(dtype)


def corrupt(images: np.ndarray, name: str, severity: int, seed: int = 0, start_index: int = 0) -> np.ndarray:
    """Corrupt a batch ``(N, H, W, C)`` with corruption ``name`` at ``severity`` (1..5).

    Image i uses ``np.random.default_rng([seed, start_index + i])``: pass ``start_index``
    when corrupting a large set in chunks to get the same result as in one call.
    """
    images = np.asarray(images)
    _check(name, severity, images)
    out = np.empty_like(images)
    for i, image in enumerate(images):
        out[i] = corrupt_image(image, name, severity, np.random.default_rng([seed, start_index + i]))
    return out


# --- CIFAR-10-C files ------------------------------------------------------------------
def _save_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write_bytes(path, buffer.getvalue())


def write_corrupted(directory: str | Path, images: np.ndarray, labels: np.ndarray, *,
                    corruptions: Iterable[str] | None = None, seed: int = 0) -> list[Path]:
    """Write ``<corruption>.npy`` (5·N, H, W, C) uint8 per corruption and ``labels.npy``.

    The CIFAR-10-C layout: severities 1..5 stacked in order, N images each; labels (5·N,)
    uint8 (int64 when a label exceeds 255). ``images`` is (N, H, W, C), uint8 or float in
    [0, 1]. Files are written atomically; returns their paths.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        _check(BENCHMARK[0], 1, images)
        images = np.uint8(np.clip(images, 0, 1) * 255)
    labels = np.asarray(labels)
    if labels.shape != (len(images),):
        raise UserError(f"labels must have shape ({len(images)},), got {labels.shape}")
    directory = Path(directory)
    names = list(corruptions) if corruptions is not None else list(BENCHMARK)
    written = []
    for name in names:
        stack = np.concatenate([corrupt(images, name, s, seed) for s in SEVERITIES])
        _save_npy(directory / f"{name}.npy", stack)
        written.append(directory / f"{name}.npy")
    label_dtype = np.uint8 if labels.size == 0 or labels.max() < 256 else np.int64
    _save_npy(directory / "labels.npy", np.tile(labels, len(SEVERITIES)).astype(label_dtype))
    written.append(directory / "labels.npy")
    return written


def read_corrupted(directory: str | Path, name: str, severity: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Read ``<name>.npy`` and ``labels.npy`` of a CIFAR-10-C style folder.

    Returns ``(images (M, H, W, C) uint8, labels (M,) int64)``: all 5 severities stacked
    when ``severity`` is None, else the N images of that severity. Works on the published
    CIFAR-10-C / CIFAR-100-C files as well.
    """
    directory = Path(directory)
    paths = {"images": directory / f"{name}.npy", "labels": directory / "labels.npy"}
    arrays = {}
    for key, path in paths.items():
        if not path.is_file():
            raise UserError(f"corruption file {path} does not exist")
        try:
            arrays[key] = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as error:
            raise UserError(f"corruption file {path} is not a readable .npy array ({error})") from None
    images, labels = arrays["images"], arrays["labels"]
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or len(images) != len(labels) or len(images) % len(SEVERITIES):
        raise UserError(f"corruption file {paths['images']} has shape {images.shape}, expected "
                        f"(5*N, H, W, C) matching labels.npy of length {len(labels)}")
    if severity is not None:
        if severity not in SEVERITIES:
            raise UserError(f"severity must be one of 1, 2, 3, 4, 5; got {severity!r}")
        n = len(images) // len(SEVERITIES)
        images, labels = images[(severity - 1) * n: severity * n], labels[(severity - 1) * n: severity * n]
    return np.array(images, dtype=np.uint8), np.array(labels, dtype=np.int64)
