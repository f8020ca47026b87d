"""The ITOP bookkeeping of one layer against a Python set, through the switch from a sorted
list to a bitmap."""

import numpy as np
import torch

from sparsetrain.sparse.retired import RetiredSet


def test_retired_set_follows_updates_as_a_list_then_as_a_bitmap():
    rng = np.random.default_rng(0)
    numel = 4096  # the int32 list becomes larger than the 512-byte bitmap above 128 positions
    active = set(rng.choice(numel, 200, replace=False).tolist())
    retired, expected = RetiredSet(numel), set()
    modes = []
    for _ in range(12):
        dropped = sorted(rng.choice(sorted(active), 30, replace=False).tolist())
        grown = sorted(rng.choice(sorted((set(range(numel)) - active) | set(dropped)), 30, replace=False).tolist())
        active = (active - set(dropped)) | set(grown)
        expected = (expected | set(dropped)) - set(grown)
        retired.update(torch.tensor(dropped, dtype=torch.int64), torch.tensor(grown, dtype=torch.int64))
        assert len(retired) == len(expected)
        assert retired.positions().tolist() == sorted(expected)
        modes.append(retired.nbytes() == numel // 8)
    assert modes[0] is False and modes[-1] is True  # started as a list, ended as a bitmap
    assert retired.nbytes() == numel // 8
    copy = RetiredSet(numel)
    copy.set(retired.positions())
    assert copy.positions().tolist() == sorted(expected) and len(copy) == len(expected)
