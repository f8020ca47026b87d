"""Images in a folder tree, one subfolder per class, read with Pillow.

Two layouts are accepted under ``data_dir``:

- ``train/<class>/<image>`` and ``test/<class>/<image>``: the test split is the ``test`` tree;
- ``<class>/<image>``: a stratified ``test_fraction`` of each class (drawn with a fixed
  seed, so every run seed is scored on the same images) is held out as the test split.

Classes are the subfolder names in sorted order (label 0 is the first). Images are
converted to RGB (3 channels) or grayscale (1 channel), optionally resized to
``size`` x ``size`` (bilinear); without ``size`` all images must have the same size. They
come back as float32 ``(N, C, H, W)`` in [0, 1], and with ``normalize`` (the default)
standardized per channel by the mean and std of the training images (train and
validation together, so the statistics do not depend on the run seed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sparsetrain.data.base import DatasetSplits, carve_validation, register_dataset, stratified_split
from sparsetrain.data.files import check_flag, file_error, require_data_dir
from sparsetrain.errors import UserError

EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
TEST_SEED = 0


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in EXTENSIONS and not p.name.startswith("."))


def read_pil(path: str | Path, mode: str = "rgb"):  # -> PIL.Image.Image, decoded
    """The image at ``path`` fully decoded and converted to RGB (or L for grayscale); an
    unreadable or damaged file is a UserError naming it."""
    from PIL import Image, UnidentifiedImageError  # imported here: only the image readers need Pillow

    try:
        with Image.open(path) as image:
            return image.convert("RGB" if mode == "rgb" else "L")
    except UnidentifiedImageError:
        raise file_error(path, "is not an image Pillow can read") from None
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise file_error(path, f"cannot be read ({exc.strerror or exc})") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # damaged or absurd data
        raise file_error(path, f"is damaged or truncated ({exc})") from None


def read_image(path: Path, mode: str, size: int | None) -> np.ndarray:
    """One image as uint8 ``(C, H, W)``; an unreadable or damaged file is a clear error."""
    from PIL import Image

    image = read_pil(path, mode)
    if size is not None:
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def read_tree(root: Path, classes: list[str] | None, mode: str, size: int | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images and labels of the class subfolders of ``root``, and the class names.

    With ``classes`` None the subfolders define the classes and each must hold images;
    otherwise (a test tree) they must be among ``classes``, which fixes the label order.
    """
    found = [p.name for p in _subfolders(root)]
    if not found:
        raise UserError(f"image folder {str(root)!r} has no class subfolders (expected {root}/<class>/<image>)")
    defines_classes = classes is None
    if classes is None:
        classes = found
    elif unknown := sorted(set(found) - set(classes)):
        raise UserError(f"image folder {str(root)!r} has class {unknown[0]!r}, which the training folder does not have")
    images, labels = [], []
    for label, name in enumerate(classes):
        files = _image_files(root / name) if (root / name).is_dir() else []
        if not files and defines_classes:
            raise UserError(f"class folder {str(root / name)!r} holds no images ({', '.join(sorted(EXTENSIONS))})")
        for path in files:
            pixels = read_image(path, mode, size)
            if images and pixels.shape != images[0].shape:
                raise file_error(path, f"is {pixels.shape[2]}x{pixels.shape[1]} pixels but the images before it are "
                                       f"{images[0].shape[2]}x{images[0].shape[1]}; pass the option size to resize all")
            images.append(pixels)
            labels.append(label)
    if not images:
        raise UserError(f"image folder {str(root)!r} holds no images")
    return np.stack(images), np.asarray(labels, dtype=np.int64), classes


@register_dataset("imagefolder", help="images from --data-dir, one subfolder per class (train/ and test/ or one tree)",
                  path_in_identity=True)
def load_imagefolder(*, seed: int, val_fraction: float, data_dir: str | None, size: int | None = None,
                     mode: str = "rgb", test_fraction: float = 0.2, normalize: bool = True) -> DatasetSplits:
    """Class-per-subfolder images; ``mode`` rgb or grayscale; see the module doc."""
    if mode not in ("rgb", "grayscale"):
        raise UserError(f"imagefolder option mode must be rgb or grayscale; got {mode!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise UserError(f"imagefolder option size must be a positive whole number of pixels; got {size!r}")
    if not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise UserError(f"imagefolder option test_fraction must be in (0, 1); got {test_fraction!r}")
    check_flag("imagefolder", "normalize", normalize)
    root = require_data_dir("imagefolder", data_dir, "one subfolder of images per class")
    if not root.is_dir():
        raise UserError(f"data_dir {str(data_dir)!r} is not a folder (imagefolder needs a folder of class subfolders)")

    has_train, has_test = (root / "train").is_dir(), (root / "test").is_dir()
    if has_train != has_test:
        present, missing = ("train", "test") if has_train else ("test", "train")
        raise UserError(f"image folder {str(root)!r} has a {present}/ folder but no {missing}/ folder; "
                        "give both, or put the class folders directly in data_dir")
    if has_train:
        x_train, y_train, classes = read_tree(root / "train", None, mode, size)
        x_test, y_test, _ = read_tree(root / "test", classes, mode, size)
        if x_test.shape[1:] != x_train.shape[1:]:
            raise UserError(f"test images in {str(root / 'test')!r} are {x_test.shape[1:]} but train images are "
                            f"{x_train.shape[1:]} (C, H, W); pass the option size to resize all")
    else:
        x, y, classes = read_tree(root, None, mode, size)
        train_idx, test_idx = stratified_split(y, test_fraction, TEST_SEED)
        x_train, y_train, x_test, y_test = x[train_idx], y[train_idx], x[test_idx], y[test_idx]

    train = x_train.astype(np.float32) / np.float32(255)
    test = x_test.astype(np.float32) / np.float32(255)
    normalization: tuple[tuple[float, ...], tuple[float, ...]] = ((), ())
    if normalize:
        mean = train.mean(axis=(0, 2, 3), keepdims=True)
        std = np.maximum(train.std(axis=(0, 2, 3), keepdims=True), np.float32(1e-6))
        train, test = (train - mean) / std, (test - mean) / std
        normalization = (tuple(float(m) for m in mean.ravel()), tuple(float(s) for s in std.ravel()))
    return carve_validation("imagefolder", train, y_train, test, y_test,
                            seed=seed, val_fraction=val_fraction, num_classes=len(classes),
                            normalization=normalization)
