"""Structures (N:M, block, channel): parsing, the (out, fan-in) matrix, group scores, exact
selection with the tie rule, rounding, checking; masks computed by hand."""

import pytest
import torch
from torch import nn

from sparsetrain.errors import ConfigError
from sparsetrain.sparse import choose_weights
from sparsetrain.sparse.structures import (
    Block, Channel, NM, Unstructured, fit_selection, matrix, parse_structure, top_per_group, unmatrix,
)


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


@pytest.mark.parametrize("spec, cls, canonical", [
    ("unstructured", Unstructured, "unstructured"), ("2:4", NM, "2:4"), (" 1 : 8 ", NM, "1:8"),
    ("Block:4", Block, "block:4"), ("channel", Channel, "channel"),
])
def test_parse_gives_the_structure_and_its_canonical_spec(spec, cls, canonical):
    s = parse_structure(spec)
    assert isinstance(s, cls) and s.spec == canonical and parse_structure(s.spec) == s


@pytest.mark.parametrize("spec, words", [
    ("4:2", "0 < N < M"), ("0:4", "0 < N < M"), ("block:0", "B >= 1"), ("block:x", "block:B"),
    ("block", "block:B"), ("channel:2", "channel"), ("diagonal", "N:M"), ("124", "quote it"),
])
def test_bad_specs_get_one_clear_sentence(spec, words):
    with pytest.raises(ConfigError, match=words) as info:
        parse_structure(spec)
    assert "\n" not in str(info.value)


def test_conv_matrix_is_channels_last_and_unmatrix_inverts_it():
    w = torch.arange(4.).reshape(1, 2, 2)  # w[0, i, k] = 2i + k
    m = matrix(w)
    assert m.tolist() == [[0., 2., 1., 3.]]  # (k, i): input channels vary fastest
    assert torch.equal(unmatrix(m, (1, 2, 2)), w)
    stored_in_out = torch.arange(6.).reshape(3, 2)  # transformers' Conv1D: (in, out)
    assert torch.equal(matrix(stored_in_out, fan_in_dim=0), stored_in_out.T)
    x = torch.randn(3, 4, 2, 5)
    assert torch.equal(unmatrix(matrix(x), x.shape), x)


def test_two_of_four_keeps_the_two_largest_of_each_group_ties_to_the_lower_position():
    s = parse_structure("2:4")
    scores = t([[4, 1, 3, 2, 0, 5, 5, 1],
                [1, 1, 1, 1, 2, 2, 3, 2]])
    mask = s.select(scores, 8)
    assert mask.int().tolist() == [[1, 0, 1, 0, 0, 1, 1, 0],
                                   [1, 1, 0, 0, 1, 0, 1, 0]]
    assert s.satisfied(mask)


def test_two_of_four_on_a_conv_groups_input_channels_at_each_kernel_position():
    s = parse_structure("2:4")
    scores = torch.zeros(1, 4, 2)
    scores[0, :, 0] = t([1, 4, 2, 3])  # channels 1 and 3 win at tap 0
    scores[0, :, 1] = t([9, 8, 7, 6])  # channels 0 and 1 at tap 1
    mask = s.select(scores, 4)
    assert mask[0, :, 0].int().tolist() == [0, 1, 0, 1]
    assert mask[0, :, 1].int().tolist() == [1, 1, 0, 0]


def test_blocks_are_ranked_by_their_l2_norm():
    s = parse_structure("block:2")
    scores = t([[3, 0, 1.6, 1.6],   # block (0,0): L2 3, L1 3; block (0,1): L2 2.26, L1 3.2
                [0, 0, 0, 0],
                [1, 1, 0, 0],       # block (1,0): L2 sqrt(2); block (1,1): L2 2.5
                [0, 0, 2.5, 0]])
    assert torch.allclose(s.group_scores(scores), t([3, 3.2 / 2 ** 0.5, 2 ** 0.5, 2.5]))
    assert s.select(scores, 8).int().tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]
    ties = s.select(torch.zeros(4, 4), 4)
    assert ties.int().tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    with pytest.raises(ValueError, match="whole number"):
        s.select(scores, 6)


def test_block_selection_honours_allowed_whole_blocks():
    s = parse_structure("block:2")
    scores = torch.arange(16.).reshape(4, 4)  # block (1,1) is largest, then (1,0)
    allowed = torch.ones(4, 4, dtype=torch.bool)
    allowed[3, 3] = False  # one weight of block (1,1) not allowed: the block is not
    mask = s.select(scores, 4, allowed=allowed)
    assert mask.int().tolist() == [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]]


def test_channels_are_whole_filters_ranked_by_l2_norm():
    s = parse_structure("channel")
    scores = torch.zeros(3, 2, 2)
    scores[0] = t([[1, 1], [1, 1]])   # L2 2
    scores[1] = t([[0, 0], [0, 2.5]])  # L2 2.5
    scores[2] = t([[1, 1], [1, 0]])   # L2 sqrt(3)
    mask = s.select(scores, 8)
    assert mask[0].all() and mask[1].all() and not mask[2].any()
    assert s.group_counts(mask).tolist() == [4, 4, 0]
    assert s.num_groups((3, 2, 2)) == 3 and s.group_size((3, 2, 2)) == 4


@pytest.mark.parametrize("spec, shape, count, expected", [
    ("block:2", (4, 4), 5, 4), ("block:2", (4, 4), 6, 8), ("block:2", (4, 4), 1, 4),
    ("block:2", (4, 4), 100, 16), ("block:2", (4, 4), 0, 0), ("2:4", (4, 4), 3, 8),
    ("1:4", (2, 4, 3), 17, 6), ("channel", (3, 5), 7, 5), ("unstructured", (3, 5), 7, 7),
])
def test_round_count_gives_whole_groups(spec, shape, count, expected):
    assert parse_structure(spec).round_count(count, shape) == expected


def test_violation_names_what_breaks_the_structure():
    nm = parse_structure("2:4")
    bad = torch.tensor([[1, 1, 1, 0, 1, 1, 0, 0]], dtype=torch.bool)
    assert nm.violation(bad) == "1 of 2 groups of 4 do not hold exactly 2 active weights"
    block = parse_structure("block:2")
    part = torch.zeros(4, 4, dtype=torch.bool)
    part[0, 0] = True
    assert "1 of 4 block:2 groups are partly active" == block.violation(part)
    assert block.satisfied(block.expand(torch.tensor([True, False, False, True]), (4, 4)))
    row = torch.ones(2, 3, dtype=torch.bool)
    row[1, 2] = False
    assert not parse_structure("channel").satisfied(row)


def test_problem_names_layers_that_do_not_fit():
    nm, block = parse_structure("2:4"), parse_structure("block:4")
    assert nm.problem((16, 3, 3, 3)) == "3 input channels are not a multiple of 4 for structure 2:4"
    assert nm.problem((16, 8, 3, 3)) is None and nm.problem((5, 8)) is None
    assert block.problem((6, 8)) is not None and block.problem((8, 2, 2)) is None  # fan-in 2*2 = 4
    assert parse_structure("channel").problem((3, 1, 5)) is None


def test_fit_selection_keeps_unfit_layers_dense_and_says_why():
    model = nn.Sequential(nn.Conv1d(3, 8, 3), nn.Flatten(), nn.Linear(8, 8), nn.MultiheadAttention(4, 1))
    selection = fit_selection(choose_weights(model), parse_structure("2:4"))
    assert selection.names == ["2.weight", "3.in_proj_weight", "3.out_proj.weight"]
    assert selection.dense["0.weight"] == "3 input channels are not a multiple of 4 for structure 2:4; kept dense"
    with pytest.raises(ConfigError, match="no sparsifiable weight fits"):
        fit_selection(choose_weights(nn.Linear(3, 4)), parse_structure("2:4"))


def test_top_per_group_takes_counts_allowed_and_first_tiers():
    scores = t([[5, 4, 3, 2], [1, 2, 3, 4], [7, 7, 7, 7]])
    allowed = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)
    first = torch.tensor([[0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 1, 0]], dtype=torch.bool)
    mask = top_per_group(scores, torch.tensor([2, 1, 2]), allowed, first)
    assert mask.int().tolist() == [[0, 1, 0, 1], [0, 0, 0, 1], [1, 0, 1, 0]]
    with pytest.raises(ValueError, match="cannot choose 4 positions out of 3 in group 0"):
        top_per_group(scores, torch.tensor([4, 0, 0]), allowed)
