"""engine/distributed.py in one process (no process group): the answers torchrun-less code relies on."""

import pytest
import torch

from sparsetrain.engine import distributed


def test_one_process_is_rank_zero_of_one(monkeypatch):
    for name in distributed.TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert not distributed.launched_by_torchrun()
    assert distributed.init_from_env() is False  # nothing to join
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    assert distributed.all_reduce_sum([1.5, 2.0]).tolist() == [1.5, 2.0]
    assert distributed.all_gather_int64([3, -4]) == [[3, -4]]
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    t = torch.tensor([2.0, 4.0])
    assert distributed.average_(t) is t and t.tolist() == [2.0, 4.0]
    distributed.check_same_masks([("w", torch.ones(3, dtype=torch.bool))], "now")  # nothing to compare
    distributed.barrier()


@pytest.mark.parametrize("n, world, sizes", [(8, 2, [4, 4]), (7, 2, [3, 4]), (5, 3, [1, 2, 2]), (1, 2, [0, 1])])
def test_shards_tile_the_global_batch_in_order(n, world, sizes):
    parts = [distributed.shard(n, r, world) for r in range(world)]
    assert [p.stop - p.start for p in parts] == sizes
    assert parts[0].start == 0 and parts[-1].stop == n
    assert all(a.stop == b.start for a, b in zip(parts, parts[1:]))  # laid end to end: the batch in order


def test_fingerprint_tells_masks_apart():
    mask = torch.zeros(4, 5, dtype=torch.bool)
    mask[1, 2] = True
    same = mask.clone()
    other = mask.clone()
    other[3, 4] = True
    assert distributed.mask_fingerprint(mask) == distributed.mask_fingerprint(same)
    assert distributed.mask_fingerprint(mask) != distributed.mask_fingerprint(other)
    assert distributed.mask_fingerprint(mask) != distributed.mask_fingerprint(mask.reshape(5, 4))  # shape counts
    assert 0 <= distributed.mask_fingerprint(mask) < 2**63
