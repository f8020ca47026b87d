"""Selections on sorted flat positions used by topology updates: the |x| top-k outside an
excluded list (RigL's grow), the uniform sample outside an excluded list (SET's grow), and
the ITOP bookkeeping merge; each checked against an independent brute force."""

import math

import numpy as np
import pytest
import torch

from sparsetrain.sparse import select
from sparsetrain.sparse.select import retire, sample_excluding, split, top_abs_excluding


def _brute_top_abs(values, k, excluded):
    """The k largest |values| outside ``excluded``, ties to the lower position, by a stable sort."""
    allowed = np.setdiff1d(np.arange(values.size), excluded)
    order = np.argsort(-np.abs(values[allowed]).astype(np.float32), kind="stable")
    return np.sort(allowed[order[:k]])


@pytest.mark.parametrize("n", [1, 63, 64, 65, 1000, 70_000, 200_003])
@pytest.mark.parametrize("threads", [1, 2])
def test_top_abs_excluding_matches_a_stable_sort(n, threads):
    rng = np.random.default_rng(n)
    for trial in range(3):
        # continuous values, then heavy ties (few distinct magnitudes, both signs, signed zeros)
        values = rng.standard_normal(n).astype(np.float32) if trial == 0 else \
            (rng.integers(-3, 4, n) * (0.5 if trial == 1 else 1.0)).astype(np.float32)
        if trial == 2:
            values[rng.random(n) < 0.3] = -0.0
        excluded = np.sort(rng.choice(n, size=n // 3, replace=False)).astype(np.int64)
        available = n - excluded.size
        for k in {1, available // 2, available} - {0}:
            positions, count = top_abs_excluding(values, k, excluded, threads)
            assert count == available
            assert np.array_equal(positions, _brute_top_abs(values, k, excluded))


def test_top_abs_excluding_is_exact_when_the_sample_misleads():
    # the sampled positions (every stride-th) hold the largest values, so the threshold taken
    # from the sample is above the k-th largest: the collecting pass must start again
    n = 8 * select.SAMPLE
    values = np.full(n, 0.5, np.float32)
    values[:: n // select.SAMPLE] = 1.0
    values[5] = 0.75
    k = n // 2
    positions, count = top_abs_excluding(values, k, np.zeros(0, np.int64))
    assert count == n and np.array_equal(positions, _brute_top_abs(values, k, np.zeros(0, np.int64)))


def test_top_abs_excluding_reports_nan_and_out_of_range():
    values = np.array([1.0, np.nan, 2.0, 3.0], np.float32)
    assert top_abs_excluding(values, 2, np.array([0], np.int64))[1] == -1
    assert top_abs_excluding(values, 2, np.array([1], np.int64))[0].tolist() == [2, 3]  # NaN excluded
    assert top_abs_excluding(values, 4, np.array([1], np.int64))[1] == 3  # k above the allowed count


def _z(count, trials, p):
    return abs(count - trials * p) / math.sqrt(trials * p * (1 - p))


@pytest.mark.parametrize("k, path", [(3, "rejection"), (40, "permutation")])
def test_sample_excluding_is_uniform_over_the_candidates(k, path, monkeypatch):
    def unused(*args):
        raise AssertionError("the other sampling path ran")
    monkeypatch.setattr(select, "_complement" if path == "rejection" else "_draw_distinct", unused)
    n, trials = 64, 4000
    excluded = np.arange(0, n, 4, dtype=np.int64)  # 16 excluded, 48 candidates
    candidates = np.setdiff1d(np.arange(n), excluded)
    counts = np.zeros(n, np.int64)
    for seed in range(trials):
        chosen = sample_excluding(n, k, excluded, torch.Generator().manual_seed(seed))
        assert chosen.size == k and np.array_equal(chosen, np.unique(chosen))  # distinct, ascending
        assert not np.isin(chosen, excluded).any()
        counts[chosen] += 1
    p = k / candidates.size  # each candidate is in a uniform k-subset with probability k / c
    # 4.5 binomial standard deviations: a uniform sampler fails one of 48 positions with
    # probability about 3e-4 (the seeds are fixed, so the test is deterministic)
    assert max(_z(counts[c], trials, p) for c in candidates) < 4.5


def test_sample_excluding_draws_every_subset_equally_often():
    # 2 of the 6 candidates: each of the 15 pairs has probability 1/15 (uniform over subsets,
    # not only over positions); chi-square with 14 degrees of freedom, 0.1% critical value 36.12
    n, trials = 8, 3000
    excluded = np.array([2, 5], np.int64)
    counts = {}
    for seed in range(trials):
        pair = tuple(sample_excluding(n, 2, excluded, torch.Generator().manual_seed(seed)).tolist())
        counts[pair] = counts.get(pair, 0) + 1
    assert len(counts) == 15
    expected = trials / 15
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 36.12


def _xoshiro_reference(seed, count):
    """xoshiro256** seeded by splitmix64, written from the published algorithm with Python ints."""
    m = (1 << 64) - 1
    rotl = lambda x, k: ((x << k) | (x >> (64 - k))) & m  # noqa: E731
    s, x = [], seed
    for _ in range(4):
        x = (x + 0x9E3779B97F4A7C15) & m
        z = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
        s.append(z ^ (z >> 31))
    out = []
    for _ in range(count):
        out.append(rotl((s[1] * 5) & m, 7) * 9 & m)
        t = (s[1] << 17) & m
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
    return out


def test_the_sampler_generator_is_xoshiro256starstar():
    # splitmix64(0) starts with 0xE220A8397B1DCDAF (Vigna's reference output)
    assert select._xoshiro_state(0)[0] == 0xE220A8397B1DCDAF
    state = select._xoshiro_state(12345)
    assert [int(select._xoshiro_next(state)) for _ in range(5)] == _xoshiro_reference(12345, 5)


def test_draws_are_the_generator_outputs_below_n_that_are_not_taken():
    n = 1000  # masked to 1023; outputs >= 1000 and repeats are rejected
    taken = np.zeros(16, np.uint64)
    taken[0] = np.uint64(0b1010)  # positions 1 and 3 excluded
    expected, seen = [], {1, 3}
    for v in _xoshiro_reference(7, 200):
        d = v & 1023
        if d < n and d not in seen:
            seen.add(d)
            expected.append(d)
    before = taken.copy()
    select._draw_distinct(n, 20, 7, taken)
    assert select._new_bits(taken, before, 20).tolist() == sorted(expected[:20])


def test_sample_excluding_takes_all_candidates_and_refuses_more():
    excluded = np.array([1, 3], np.int64)
    assert sample_excluding(5, 3, excluded, torch.Generator().manual_seed(0)).tolist() == [0, 2, 4]
    with pytest.raises(ValueError):
        sample_excluding(5, 4, excluded, torch.Generator().manual_seed(0))


def test_retire_and_split_against_sets():
    rng = np.random.default_rng(0)
    n = 500
    for dtype in (np.int32, np.int64):
        retired = np.sort(rng.choice(n, 60, replace=False)).astype(dtype)
        rest = np.setdiff1d(np.arange(n), retired)
        dropped = np.sort(rng.choice(rest, 40, replace=False))
        grown = np.sort(rng.choice(n, 50, replace=False))  # may bring retired or dropped back
        out = retire(retired, dropped, grown, n)
        expected = np.setdiff1d(np.union1d(retired, dropped), grown)
        assert out.dtype == dtype and np.array_equal(out, expected)
    values, keep = np.arange(10), np.array([1, 0, 0, 1, 1, 0, 1, 0, 0, 1], bool)
    kept, dropped = split(values, keep)
    assert kept.tolist() == [0, 3, 4, 6, 9] and dropped.tolist() == [1, 2, 5, 7, 8]


def test_bitmap_positions_with_words_of_many_and_of_no_new_bits():
    """The first four bits of a word are written without a branch, the rest by a loop."""
    rng = np.random.default_rng(4)
    after = rng.integers(0, 2**63, 40, dtype=np.int64).astype(np.uint64)  # ~32 bits per word
    after[3] = np.uint64(0xFFFFFFFFFFFFFFFF)
    after[5:9] = 0
    before = after & rng.integers(0, 2**63, 40, dtype=np.int64).astype(np.uint64)
    new = after & ~before
    expected = [w * 64 + b for w in range(40) for b in range(64) if (int(new[w]) >> b) & 1]
    assert select._new_bits(after, before, len(expected)).tolist() == expected
