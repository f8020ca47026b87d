"""`topk_mask` (linear time) chooses exactly what a stable descending sort would."""

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
