"""crop_flip against a per-image reference written with numpy padding, slicing and flipping."""

import numpy as np
import pytest
import torch

from sparsetrain.data.augment import AUGMENTATIONS, crop_flip


def reference(x, seed, padding=4):
    """Pad each image with zeros, cut the crop at the drawn offsets, flip it when drawn.

    The draws are those crop_flip documents: row and column offsets (randint, shape (2, n)),
    then one uniform number per image (flip when < 1/2), from the same CPU generator.
    """
    g = torch.Generator().manual_seed(seed)
    n, _, h, w = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=g).numpy()
    flips = (torch.rand(n, generator=g) < 0.5).numpy()
    out = np.empty_like(x)
    for i in range(n):
        padded = np.pad(x[i], ((0, 0), (padding, padding), (padding, padding)))
        crop = padded[:, offsets[0, i]:offsets[0, i] + h, offsets[1, i]:offsets[1, i] + w]
        out[i] = crop[:, :, ::-1] if flips[i] else crop
    return out, offsets, flips


@pytest.mark.parametrize("shape", [(64, 3, 8, 8), (16, 1, 5, 7)])
def test_crop_flip_matches_the_per_image_reference(shape):
    x = torch.randn(*shape)
    got = crop_flip(x, torch.Generator().manual_seed(11))
    expected, offsets, flips = reference(x.numpy(), 11)
    assert got.shape == x.shape and got.dtype == x.dtype
    np.testing.assert_array_equal(got.numpy(), expected)
    if shape[0] == 64:  # the draws really vary: all 9 offsets and both flip states occur
        assert set(offsets.ravel().tolist()) == set(range(9)) and 0 < flips.sum() < 64


def test_centre_crop_without_flip_is_the_identity_and_shifts_bring_zeros():
    x = torch.arange(1, 1 + 2 * 6 * 6, dtype=torch.float32).reshape(1, 2, 6, 6)
    hits = {"centre": 0, "shifted": 0, "flipped": 0}
    for seed in range(2000):
        _, offsets, flips = reference(x.numpy(), seed)
        out = crop_flip(x, torch.Generator().manual_seed(seed))
        dy, dx = offsets[:, 0] - 4
        if dy == 0 and dx == 0 and not flips[0]:
            hits["centre"] += 1
            assert torch.equal(out, x)
        if dy == 0 and dx == 0 and flips[0]:
            hits["flipped"] += 1
            assert torch.equal(out, x.flip(3))
        if dy == 2 and dx == -1 and not flips[0]:  # image moved up 2 rows and right 1 column
            hits["shifted"] += 1
            assert torch.equal(out[0, :, :4, 1:], x[0, :, 2:, :5])
            assert out[0, :, 4:, :].eq(0).all() and out[0, :, :, 0].eq(0).all()
    assert min(hits.values()) > 0, hits


def test_same_generator_same_result_and_registry():
    x = torch.randn(8, 3, 8, 8)
    a = crop_flip(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, crop_flip(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, crop_flip(x, torch.Generator().manual_seed(2)))
    assert AUGMENTATIONS["crop_flip"] is crop_flip
