"""Robustness evaluation of a trained model: corruptions (mCE), frequency filters.

- Corruption accuracy per corruption and severity, mean corruption accuracy, and the
  corruption errors of Hendrycks & Dietterich (ICLR 2019):
  ``CE_c = sum_s E_{s,c} / sum_s E^ref_{s,c}`` and the relative
  ``rCE_c = sum_s (E_{s,c} - E_clean) / sum_s (E^ref_{s,c} - E^ref_clean)``, averaged
  over corruptions into mCE and relative mCE (the paper's reference model is AlexNet;
  here it is any model the user picks, e.g. the dense baseline).
- Frequency analysis (Wang et al., "High-frequency component helps explain the
  generalization of convolutional neural networks", CVPR 2020): accuracy on images
  keeping only the spatial frequencies inside (low-pass) or outside (high-pass) a radial
  cut-off of the centred 2-D spectrum.

Test sets are `TensorData` of model inputs; ``normalization`` maps them back to pixels in
[0, 1], where corruptions and filters act, and the model sees them normalised again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from sparsetrain.data.base import TensorData
from sparsetrain.errors import UserError
from sparsetrain.scenarios.adversarial import evaluating
from sparsetrain.scenarios.corruptions import BENCHMARK, SEVERITIES, corrupt, to_nchw, to_nhwc
from sparsetrain.scenarios.normalization import Normalization


@dataclass(frozen=True)
class CorruptionResult:
    """Accuracies of one model: clean, and ``accuracy[corruption] = (sev1, ..., sev5)``."""

    clean: float
    accuracy: dict[str, tuple[float, ...]] = field(default_factory=dict)

    def per_corruption(self) -> dict[str, float]:
        """Mean accuracy over the severities, per corruption."""
        return {name: float(np.mean(accs)) for name, accs in self.accuracy.items()}

    @property
    def mean(self) -> float:
        """Mean corruption accuracy over corruptions and severities."""
        return float(np.mean([np.mean(a) for a in self.accuracy.values()])) if self.accuracy else float("nan")

    def errors(self) -> dict[str, tuple[float, ...]]:
        return {name: tuple(1.0 - a for a in accs) for name, accs in self.accuracy.items()}

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready form (for a results store): ``{"clean": ..., "accuracy": {name: [...]}}``."""
        return {"clean": self.clean, "accuracy": {k: list(v) for k, v in self.accuracy.items()}}

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> "CorruptionResult":
        accuracy = values["accuracy"]
        return cls(clean=float(values["clean"]),
                   accuracy={k: tuple(float(a) for a in v) for k, v in accuracy.items()})


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` (in eval mode, restored afterwards) on model inputs ``x``."""
    device = next(model.parameters()).device
    correct = 0
    with evaluating(model):
        for start in range(0, len(y), batch_size):
            logits = model(x[start:start + batch_size].to(device))
            correct += int((logits.argmax(1).cpu() == y[start:start + batch_size]).sum())
    return correct / max(len(y), 1)


def _pixels_nhwc(data: TensorData, normalization: Normalization) -> np.ndarray:
    if data.x.dim() != 4:
        raise UserError(f"corruptions need image inputs (N, C, H, W), got shape {tuple(data.x.shape)}")
    pixels = normalization.invert(data.x.float()).clamp(0, 1)
    return to_nhwc(pixels.numpy())


def _model_inputs(pixels_nhwc: np.ndarray, normalization: Normalization) -> torch.Tensor:
    pixels = pixels_nhwc.astype(np.float32) / 255.0 if pixels_nhwc.dtype == np.uint8 else pixels_nhwc
    return normalization.apply(torch.from_numpy(to_nchw(pixels.astype(np.float32))))


def corruption_accuracy(model: nn.Module, data: TensorData, *,
                        normalization: Normalization | None = None,
                        corruptions: Iterable[str] = BENCHMARK,
                        severities: Sequence[int] = SEVERITIES, seed: int = 0,
                        quantize: bool = False) -> CorruptionResult:
    """Accuracy of ``model`` on ``data`` corrupted by each corruption at each severity.

    With ``quantize`` the corrupted pixels are rounded to 8 bits as in CIFAR-10-C files;
    otherwise they stay float.
    """
    normalization = normalization or Normalization.identity()
    pixels = _pixels_nhwc(data, normalization)
    if quantize:
        pixels = np.uint8(pixels * 255)
    result: dict[str, tuple[float, ...]] = {}
    for name in corruptions:
        accs = []
        for severity in severities:
            corrupted = corrupt(pixels, name, severity, seed=seed)
            accs.append(accuracy(model, _model_inputs(corrupted, normalization), data.y))
        result[name] = tuple(accs)
    return CorruptionResult(clean=accuracy(model, data.x, data.y), accuracy=result)


def corruption_accuracy_from_files(model: nn.Module, directory: str, clean: TensorData, *,
                                   normalization: Normalization | None = None,
                                   corruptions: Iterable[str] = BENCHMARK) -> CorruptionResult:
    """`corruption_accuracy` on CIFAR-10-C style files (``<name>.npy``, ``labels.npy``) in ``directory``."""
    from sparsetrain.scenarios.corruptions import read_corrupted

    normalization = normalization or Normalization.identity()
    result: dict[str, tuple[float, ...]] = {}
    for name in corruptions:
        accs = []
        for severity in SEVERITIES:
            images, labels = read_corrupted(directory, name, severity)
            accs.append(accuracy(model, _model_inputs(images, normalization), torch.from_numpy(labels)))
        result[name] = tuple(accs)
    return CorruptionResult(clean=accuracy(model, clean.x, clean.y), accuracy=result)


# --- corruption errors (Hendrycks & Dietterich 2019) -----------------------------------
def _common(errors: Mapping[str, Sequence[float]], reference: Mapping[str, Sequence[float]]) -> list[str]:
    missing = sorted(set(errors) - set(reference))
    if missing:
        raise UserError(f"the reference model has no errors for corruption {missing[0]!r}")
    return list(errors)


def corruption_errors(errors: Mapping[str, Sequence[float]],
                      reference: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """``CE_c = sum_s E_{s,c} / sum_s E^ref_{s,c}`` per corruption (errors in [0, 1])."""
    return {c: float(np.sum(errors[c]) / np.sum(reference[c])) for c in _common(errors, reference)}


def relative_corruption_errors(errors: Mapping[str, Sequence[float]], clean_error: float,
                               reference: Mapping[str, Sequence[float]],
                               reference_clean_error: float) -> dict[str, float]:
    """``rCE_c = sum_s (E_{s,c} - E_clean) / sum_s (E^ref_{s,c} - E^ref_clean)`` per corruption."""
    return {c: float(np.sum(np.asarray(errors[c]) - clean_error)
                     / np.sum(np.asarray(reference[c]) - reference_clean_error))
            for c in _common(errors, reference)}


def mce(result: CorruptionResult, reference: CorruptionResult) -> float:
    """Mean corruption error of ``result`` relative to ``reference`` (1.0 = as robust as the reference)."""
    return float(np.mean(list(corruption_errors(result.errors(), reference.errors()).values())))


def relative_mce(result: CorruptionResult, reference: CorruptionResult) -> float:
    """Relative mCE: mean over corruptions of the degradation from clean, relative to ``reference``."""
    values = relative_corruption_errors(result.errors(), 1 - result.clean,
                                        reference.errors(), 1 - reference.clean)
    return float(np.mean(list(values.values())))


# --- frequency analysis (Wang et al. 2020) ---------------------------------------------
def radial_mask(height: int, width: int, cutoff: float) -> torch.Tensor:
    """Boolean (H, W) mask of the centred spectrum: True where the radius <= cutoff * max radius.

    The radius of frequency (u, v) is measured from the zero frequency in index units,
    ``sqrt(u^2 + v^2)``; the max radius is that of the farthest frequency, so cutoff 1
    keeps every frequency and cutoff 0 only the mean (DC).
    """
    if not 0 <= cutoff <= 1:
        raise UserError(f"cutoff must be in [0, 1], got {cutoff}")
    u = torch.arange(height) - height // 2
    v = torch.arange(width) - width // 2
    radius = (u[:, None].double() ** 2 + v[None, :].double() ** 2).sqrt()
    return radius <= cutoff * radius.max() + 1e-9


def low_pass(images: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Keep the spatial frequencies within ``cutoff`` (see `radial_mask`) of images (..., H, W)."""
    h, w = images.shape[-2:]
    spectrum = torch.fft.fftshift(torch.fft.fft2(images.double()), dim=(-2, -1))
    spectrum = spectrum * radial_mask(h, w, cutoff).to(images.device)
    out = torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1))).real
    return out.to(images.dtype)


def high_pass(images: torch.Tensor, cutoff: float) -> torch.Tensor:
    """The complement of `low_pass`: ``images - low_pass(images, cutoff)``."""
    return images - low_pass(images, cutoff)


def frequency_accuracy(model: nn.Module, data: TensorData, *,
                       normalization: Normalization | None = None,
                       cutoffs: Sequence[float] = (0.1, 0.25, 0.5, 0.75)) -> dict[str, dict[float, float]]:
    """Accuracy on low-pass and high-pass filtered test images at each cut-off.

    Filters act on pixels; high-pass images are not clipped to [0, 1] (they are centred
    near zero by construction). Returns ``{"low": {cutoff: acc}, "high": {cutoff: acc}}``.
    """
    normalization = normalization or Normalization.identity()
    if data.x.dim() != 4:
        raise UserError(f"frequency analysis needs image inputs (N, C, H, W), got shape {tuple(data.x.shape)}")
    pixels = normalization.invert(data.x.float())
    out: dict[str, dict[float, float]] = {"low": {}, "high": {}}
    for cutoff in cutoffs:
        for kind, filt in (("low", low_pass), ("high", high_pass)):
            out[kind][cutoff] = accuracy(model, normalization.apply(filt(pixels, cutoff)), data.y)
    return out
