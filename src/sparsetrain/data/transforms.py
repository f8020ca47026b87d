"""The standard ImageNet transforms on Pillow images, written as torchvision defines them.

Training (Szegedy et al., "Going deeper with convolutions", 2015; torchvision's
``RandomResizedCrop`` + ``RandomHorizontalFlip``): crop a box of random area, a fraction
in ``scale`` (0.08, 1) of the image, and random aspect ratio, log-uniform in ``ratio``
(3/4, 4/3); resize it to ``size`` x ``size`` (bilinear); flip it horizontally with
probability 1/2. Evaluation (torchvision's ImageNet reference, ``Resize(256)`` +
``CenterCrop(224)``): resize the shorter side to ``resize``, then crop the centre
``size`` x ``size``. Both end with pixels scaled to [0, 1] and standardized per channel
with the ImageNet mean and std.

The random draws mirror torchvision's own (same calls in the same order), but come from
the generator given, so the caller decides what they are seeded by.
"""

from __future__ import annotations

import math

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
ATTEMPTS = 10


def random_resized_box(width: int, height: int, gen: torch.Generator,
                       scale: tuple[float, float] = SCALE,
                       ratio: tuple[float, float] = RATIO) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a random crop box, as torchvision's ``RandomResizedCrop.get_params``.

    Up to 10 tries draw an area fraction uniform in ``scale`` and an aspect ratio (w/h)
    log-uniform in ``ratio``; the first box that fits is placed uniformly. When none fits,
    the centre crop of the whole image clamped to ``ratio``.
    """
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(ATTEMPTS):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=gen).item()
        aspect = torch.exp(torch.empty(1).uniform_(float(log_ratio[0]), float(log_ratio[1]), generator=gen)).item()
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=gen).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=gen).item())
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def train_transform(image, size: int, gen: torch.Generator):  # PIL.Image in and out
    """Random resized crop to ``size`` x ``size`` then a horizontal flip with probability 1/2."""
    from PIL import Image

    top, left, h, w = random_resized_box(image.width, image.height, gen)
    image = image.crop((left, top, left + w, top + h)).resize((size, size), Image.Resampling.BILINEAR)
    if torch.rand(1, generator=gen).item() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image


def resize_shorter(image, resize: int):  # PIL.Image in and out
    """The image with its shorter side ``resize`` pixels and the aspect ratio kept (the longer
    side rounded down), bilinear, as torchvision's ``Resize(int)``."""
    from PIL import Image

    short, long = sorted((image.width, image.height))
    new_long = int(resize * long / short)
    new_size = (resize, new_long) if image.width <= image.height else (new_long, resize)
    return image.resize(new_size, Image.Resampling.BILINEAR)


def center_crop(image, size: int):  # PIL.Image in and out
    """The centre ``size`` x ``size`` crop, offsets rounded as torchvision's ``CenterCrop``."""
    top = int(round((image.height - size) / 2.0))
    left = int(round((image.width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def eval_transform(image, resize: int, size: int):  # PIL.Image in and out
    """Shorter side to ``resize``, then the centre ``size`` x ``size`` crop."""
    return center_crop(resize_shorter(image, resize), size)


def to_normalized(image, mean: tuple[float, ...] = IMAGENET_MEAN,
                  std: tuple[float, ...] = IMAGENET_STD) -> torch.Tensor:
    """An RGB image as float32 ``(3, H, W)``: pixels / 255, minus ``mean``, over ``std`` (in
    float32, as torchvision's ToTensor + Normalize; numpy, so no thread pool per image)."""
    x = np.asarray(image, dtype=np.float32) / np.float32(255)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))
