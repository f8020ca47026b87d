"""ImageNet-layout image trees, streamed from disk: ``train/<class>/*.JPEG`` and ``val/<class>/*``.

Only the file list is read up front; images are decoded batch by batch in DataLoader
workers (`sparsetrain.data.stream`), so the tree may be far larger than memory. Classes
are the subfolders of ``train/`` in sorted order (label 0 first, as torchvision's
``ImageFolder``; for ILSVRC-2012 the sorted WordNet ids give the usual 1000 labels).
``val/`` is the test split (ImageNet's test labels are not public); the validation split
is ``val_fraction`` of ``train/``, stratified and drawn from the run seed, shown with the
evaluation transform. Training images get the random resized crop and flip, evaluation
images the resize + centre crop (`sparsetrain.data.transforms`); all are standardized
with the ImageNet mean and std.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from sparsetrain.data.base import DatasetSplits, register_dataset, stratified_split
from sparsetrain.data.files import require_data_dir
from sparsetrain.data.imagefolder import EXTENSIONS
from sparsetrain.data.stream import ImageFiles
from sparsetrain.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from sparsetrain.errors import UserError

NAME = "imagenet_folder"


def _entries(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as it:
        return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)


def list_tree(root: Path, classes: list[str] | None) -> tuple[list[str], list[int], list[str]]:
    """Image paths under ``root/<class>/`` in (class, file name) order, their labels, and the classes.

    With ``classes`` None the subfolders define the classes, and each must hold images;
    otherwise (the ``val/`` tree) every subfolder must be one of ``classes``.
    """
    entries = _entries(root)
    found = [e.name for e in entries if e.is_dir()]
    if not found:
        flat = any(e.is_file() and Path(e.name).suffix.lower() in EXTENSIONS for e in entries)
        hint = (" it holds images directly; sort them into one subfolder per class" if flat
                else f" expected {root}/<class>/<image>")
        raise UserError(f"image folder {str(root)!r} has no class subfolders;{hint}")
    defines_classes = classes is None
    if classes is None:
        classes = found
    elif unknown := sorted(set(found) - set(classes)):
        raise UserError(f"image folder {str(root)!r} has class {unknown[0]!r}, which {root.parent / 'train'} "
                        "does not have")
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        folder = root / name
        files = [e.path for e in _entries(folder) if e.is_file() and Path(e.name).suffix.lower() in EXTENSIONS] \
            if folder.is_dir() else []
        if not files and defines_classes:
            raise UserError(f"class folder {str(folder)!r} holds no images ({', '.join(sorted(EXTENSIONS))})")
        paths.extend(files)
        labels.extend([label] * len(files))
    if not paths:
        raise UserError(f"image folder {str(root)!r} holds no images")
    return paths, labels, classes


def _path_array(paths: list[str]) -> np.ndarray:
    return np.array([p.encode("utf-8", "surrogateescape") for p in paths], dtype=np.bytes_)


def _check_size(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{NAME} option {name} must be a positive whole number of pixels; got {value!r}")


@register_dataset(NAME, help="ImageNet-layout tree in --data-dir (train/<class>/*.JPEG, val/<class>/...), "
                  "decoded on the fly with the ImageNet augmentation", path_in_identity=True)
def load_imagenet_folder(*, seed: int, val_fraction: float, data_dir: str | None,
                         size: int = 224, resize: int = 256) -> DatasetSplits:
    """Streamed splits of an ImageNet-layout tree; ``size`` is the side of the training
    crop and of the evaluation centre crop, ``resize`` the shorter side evaluation images
    are resized to first (224 and 256 for ImageNet; smaller for quick tests)."""
    _check_size("size", size)
    _check_size("resize", resize)
    if resize < size:
        raise UserError(f"{NAME} option resize ({resize}) must be at least size ({size}): evaluation "
                        "crops the centre size x size of the image resized to resize")
    root = require_data_dir(NAME, data_dir, "train/<class>/<image> and val/<class>/<image>")
    for part in ("train", "val"):
        if not (root / part).is_dir():
            raise UserError(f"data_dir {str(root)!r} has no {part}/ folder ({NAME} needs "
                            "train/<class>/<image> and val/<class>/<image>)")
    train_paths, train_labels, classes = list_tree(root / "train", None)
    test_paths, test_labels, _ = list_tree(root / "val", classes)
    y = np.asarray(train_labels, dtype=np.int64)
    keep, held = stratified_split(y, val_fraction, seed)
    everything = ImageFiles(_path_array(train_paths), torch.from_numpy(y), True, size, resize, seed)
    test = ImageFiles(_path_array(test_paths), torch.tensor(test_labels, dtype=torch.int64), False, size, resize, seed)
    return DatasetSplits(name=NAME, train=everything.subset(keep, train=True),
                         val=everything.subset(held, train=False), test=test,
                         num_classes=len(classes), input_shape=(3, size, size),
                         normalization=(IMAGENET_MEAN, IMAGENET_STD))
