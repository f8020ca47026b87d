"""`topk_mask` (linear time; a numba radix select on the CPU) chooses exactly what a stable
descending sort would."""

import torch

from sparsetrain.sparse import topk_mask


def _by_sort(scores, k, allowed=None):
    flat = scores.reshape(-1).float()
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    pos = torch.arange(flat.numel()) if allowed is None else torch.nonzero(allowed.reshape(-1)).reshape(-1)
    mask[pos[torch.argsort(flat[pos], descending=True, stable=True)[:k]]] = True
    return mask.view_as(scores)


def test_matches_the_stable_sort_with_many_ties_and_nans():
    g = torch.Generator().manual_seed(0)
    for trial in range(200):
        n = int(torch.randint(1, 50, (1,), generator=g))
        scores = torch.randint(0, 4, (n,), generator=g).float()  # heavy ties
        if trial % 5 == 0:
            scores[torch.rand(n, generator=g) < 0.2] = float("nan")
        allowed = torch.rand(n, generator=g) < 0.7 if trial % 3 else None
        available = n if allowed is None else int(allowed.sum())
        k = int(torch.randint(0, available + 1, (1,), generator=g))
        assert torch.equal(topk_mask(scores, k, allowed), _by_sort(scores, k, allowed))


def test_signed_zeros_infinities_and_negatives_tie_by_position():
    scores = torch.tensor([-0.0, 0.0, -1.0, float("-inf"), float("inf"), -0.0, 2.5, -1.0])
    # order: inf(4), 2.5(6), zeros at 0, 1, 5 (equal: lower position first), -1 at 2, 7, -inf(3)
    assert topk_mask(scores, 4).tolist() == [True, True, False, False, True, False, True, False]
    assert topk_mask(scores, 6).tolist() == [True, True, True, False, True, True, True, False]
    allowed = torch.tensor([False, True, True, True, False, True, True, True])
    assert topk_mask(scores, 3, allowed).tolist() == [False, True, False, False, False, True, True, False]


def test_large_layers_with_ties_across_both_radix_passes():
    g = torch.Generator().manual_seed(1)
    for trial in range(6):
        n = 20000
        if trial % 2:  # values sharing their high 16 bits, differing in the low ones
            scores = 1.0 + torch.randint(0, 300, (n,), generator=g).float() * 2**-20
        else:
            scores = torch.randn(n, generator=g)
        allowed = torch.rand(n, generator=g) < 0.6 if trial < 4 else None
        available = n if allowed is None else int(allowed.sum())
        for k in (1, 7, available // 3, available - 1, available):
            assert torch.equal(topk_mask(scores, k, allowed), _by_sort(scores, k, allowed))
