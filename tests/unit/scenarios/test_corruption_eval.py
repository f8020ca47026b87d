"""Corruption accuracy, mCE / relative mCE (hand-computed), frequency filters."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from sparsetrain.data import TensorData
from sparsetrain.scenarios.corruptions import corrupt, to_nchw, to_nhwc, write_corrupted
from sparsetrain.scenarios.evaluation import (
    CorruptionResult, corruption_accuracy, corruption_accuracy_from_files, corruption_errors,
    frequency_accuracy, high_pass, low_pass, mce, radial_mask, relative_corruption_errors, relative_mce,
)
from sparsetrain.scenarios.normalization import Normalization

# a tiny error table: two corruptions, severities 1..3 (the formulas do not need five)
ERR = {"fog": (0.2, 0.3, 0.5), "snow": (0.1, 0.1, 0.4)}
REF = {"fog": (0.4, 0.5, 0.6), "snow": (0.2, 0.3, 0.5)}


def test_corruption_errors_by_hand():
    ce = corruption_errors(ERR, REF)
    assert ce["fog"] == pytest.approx(1.0 / 1.5)  # (0.2+0.3+0.5) / (0.4+0.5+0.6)
    assert ce["snow"] == pytest.approx(0.6 / 1.0)
    model = CorruptionResult(clean=0.9, accuracy={k: tuple(1 - e for e in v) for k, v in ERR.items()})
    ref = CorruptionResult(clean=0.8, accuracy={k: tuple(1 - e for e in v) for k, v in REF.items()})
    assert mce(model, ref) == pytest.approx((1 / 1.5 + 0.6) / 2)


def test_relative_corruption_errors_by_hand():
    # model clean error 0.1, reference clean error 0.2
    rce = relative_corruption_errors(ERR, 0.1, REF, 0.2)
    assert rce["fog"] == pytest.approx((0.1 + 0.2 + 0.4) / (0.2 + 0.3 + 0.4))
    assert rce["snow"] == pytest.approx((0.0 + 0.0 + 0.3) / (0.0 + 0.1 + 0.3))
    model = CorruptionResult(clean=0.9, accuracy={k: tuple(1 - e for e in v) for k, v in ERR.items()})
    ref = CorruptionResult(clean=0.8, accuracy={k: tuple(1 - e for e in v) for k, v in REF.items()})
    assert relative_mce(model, ref) == pytest.approx((0.7 / 0.9 + 0.3 / 0.4) / 2)


def test_result_means():
    result = CorruptionResult(clean=1.0, accuracy={"fog": (1.0, 0.5), "snow": (0.0, 0.5)})
    assert result.per_corruption() == {"fog": 0.75, "snow": 0.25}
    assert result.mean == pytest.approx(0.5)
    assert CorruptionResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_low_pass_at_full_cutoff_is_the_identity_and_high_pass_the_complement():
    x = torch.rand(2, 3, 7, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(low_pass(x, 1.0), x)
    torch.testing.assert_close(high_pass(x, 1.0), torch.zeros_like(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(low_pass(x, 0.3) + high_pass(x, 0.3), x)
    # cutoff 0 keeps only the DC term: the per-image, per-channel mean
    torch.testing.assert_close(low_pass(x, 0.0), x.mean(dim=(-2, -1), keepdim=True).expand_as(x))


def test_radial_mask_by_hand():
    mask = radial_mask(4, 4, 0.5)  # centre (2, 2); max radius sqrt(8); keep radius <= sqrt(2)
    expected = torch.zeros(4, 4, dtype=torch.bool)
    for u in range(4):
        for v in range(4):
            expected[u, v] = (u - 2) ** 2 + (v - 2) ** 2 <= 2
    assert torch.equal(mask, expected)


class MeanThreshold(nn.Module):
    """Class 1 when the mean input exceeds ``t``, else class 0 (a model we can predict by hand)."""

    def __init__(self, t: float) -> None:
        super().__init__()
        self.t = t
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        score = x.flatten(1).mean(1) - self.t + 0 * self.dummy
        return torch.stack([-score, score], dim=1)


def test_corruption_accuracy_matches_an_independent_computation(device):
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(10, 3, 8, 8, generator=g) * 0.6 + 0.2
    y = (pixels.flatten(1).mean(1) > 0.5).long()
    norm = Normalization(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    data = TensorData(norm.apply(pixels), y)
    model = MeanThreshold(0.0).to(device)  # on normalised inputs: mean > 0  <=>  pixel mean > 0.5
    result = corruption_accuracy(model, data, normalization=norm, corruptions=["brightness", "contrast"], seed=1)
    assert result.clean == 1.0
    for name in ("brightness", "contrast"):
        for severity in range(1, 6):
            corrupted = to_nchw(corrupt(to_nhwc(pixels.numpy()), name, severity, seed=1))
            pred = (corrupted.reshape(10, -1).mean(1) > 0.5)
            assert result.accuracy[name][severity - 1] == pytest.approx(np.mean(pred == y.numpy().astype(bool)))
    assert result.accuracy["brightness"][4] < 1.0  # brighter images cross the threshold


def test_accuracy_from_cifar10c_files(tmp_path):
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(6, 3, 8, 8, generator=g)
    y = (pixels.flatten(1).mean(1) > 0.5).long()
    images = np.uint8(to_nhwc(pixels.numpy()) * 255)
    write_corrupted(tmp_path, images, y.numpy(), corruptions=["brightness"])
    result = corruption_accuracy_from_files(MeanThreshold(0.5), str(tmp_path), TensorData(pixels, y),
                                            corruptions=["brightness"])
    for severity in range(1, 6):
        corrupted = corrupt(images, "brightness", severity) / 255.0
        pred = corrupted.reshape(6, -1).mean(1) > 0.5
        assert result.accuracy["brightness"][severity - 1] == pytest.approx(np.mean(pred == y.numpy().astype(bool)))


def test_frequency_accuracy_full_cutoff_is_clean_accuracy():
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(8, 1, 6, 6, generator=g)
    y = (pixels.flatten(1).mean(1) > 0.5).long()
    out = frequency_accuracy(MeanThreshold(0.5), TensorData(pixels, y), cutoffs=(0.0, 1.0))
    assert out["low"][1.0] == 1.0
    assert out["low"][0.0] == 1.0  # the DC term alone keeps the mean
    assert out["high"][0.0] == pytest.approx(float((y == 0).float().mean()))  # zero mean: always class 0
