"""Structures in every pruning method: GMP, GraNet, pruning at initialization, one-shot pruning
and IMP. Masks are checked against the structure by a checker written here from the definition
(not the library's), after every pruning step; counts are computed by hand."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsetrain.algorithms import create
from sparsetrain.algorithms.pruning import Grouping, allocation_counts, masks_from_scores
from sparsetrain.criteria import lamp_groups
from sparsetrain.sparse.structures import parse_structure


# --- an independent checker ------------------------------------------------------------------
def channels_last(mask):
    """(out, fan-in) with the fan-in ordered (kernel positions..., input channels)."""
    if mask.dim() == 2:
        return mask
    return mask.permute(0, *range(2, mask.dim()), 1).reshape(mask.shape[0], -1)


def nm_counts(mask, m):
    """Active weights in every run of m consecutive input channels (per output, kernel tap)."""
    return channels_last(mask).reshape(-1, m).sum(1)


def whole_channels(mask):
    rows = mask.reshape(mask.shape[0], -1)
    return bool((rows.all(1) | ~rows.any(1)).all())


def whole_blocks(mask, b):
    mat = channels_last(mask)
    grid = mat.reshape(mat.shape[0] // b, b, mat.shape[1] // b, b).sum((1, 3))
    return bool(((grid == 0) | (grid == b * b)).all())


def holds(structure, mask, n=None):
    """True when ``mask`` is whole groups of ``structure`` (N:M: exactly n of every M, n = N by default)."""
    s = parse_structure(structure)
    if s.kind == "n:m":
        return bool((nm_counts(mask, s.m) == (s.n if n is None else n)).all())
    if s.kind == "channel":
        return whole_channels(mask)
    return whole_blocks(mask, s.b)


def rounded(density, numel, size):
    """The layer's count round(density * numel), then to the nearest whole group (half up), at least one."""
    return max(1, math.floor(round(density * numel) / size + 0.5)) * size


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


# --- the shared selection: hand-computed masks ------------------------------------------------
GLOBAL = {"a": t([[3, 4], [1, 0]]),                          # channel norms 5, 1; per weight 3.54, 0.71
          "b": t([[2, 2, 2, 2], [1, 1, 1, 1], [0, 0, 0, 4]])}  # norms 4, 2, 4; per weight 2, 1, 2


def test_global_channel_ranking_compares_channels_per_weight_and_keeps_the_prefix_nearest_the_budget():
    channel = Grouping(parse_structure("channel"))
    # ranked a0 (3.54, 2 weights), b0 (2, 4), b2 (2, 4: tie to the lower channel), b1 (1, 4), a1 (0.71, 2)
    # cumulative sizes 0, 2, 6, 10, 14, 16: 8 weights is as near 6 as 10 -> the longer prefix
    assert allocation_counts(GLOBAL, 8 / 16, grouping=channel) == {"a": 2, "b": 8}
    assert allocation_counts(GLOBAL, 7 / 16, grouping=channel) == {"a": 2, "b": 4}
    masks = masks_from_scores(GLOBAL, 8 / 16, grouping=channel)
    assert masks["a"].int().tolist() == [[1, 1], [0, 0]]
    assert masks["b"].int().tolist() == [[1] * 4, [0] * 4, [1] * 4]
    # b2 is not allowed any more (one weight pruned): b1 takes its place
    allowed = {"b": torch.tensor([[True] * 4, [True] * 4, [True, True, True, False]])}
    masks = masks_from_scores(GLOBAL, 8 / 16, grouping=channel, allowed=allowed)
    assert masks["b"].int().tolist() == [[1] * 4, [1] * 4, [0] * 4]


def test_summed_group_scores_keep_the_sign_of_a_saliency():
    scores = {"c": t([[-3, 3], [1, 1]])}  # sums 0 and 2; L2 norms 4.24 and 1.41
    by_sum = masks_from_scores(scores, 0.5, grouping=Grouping(parse_structure("channel"), group_scores="sum"))
    by_norm = masks_from_scores(scores, 0.5, grouping=Grouping(parse_structure("channel")))
    assert by_sum["c"].int().tolist() == [[0, 0], [1, 1]]
    assert by_norm["c"].int().tolist() == [[1, 1], [0, 0]]


def test_layer_wise_counts_are_rounded_to_whole_blocks_and_n_of_m_is_fixed():
    scores = {"x": torch.rand(4, 4, generator=torch.Generator().manual_seed(0)), "y": torch.rand(2, 8)}
    blocks = Grouping(parse_structure("block:2"))
    # uniform 0.4: round(6.4) = 6 of x -> 1.5 blocks of 4 -> 2 blocks; y has 2x8 -> 4 blocks, round(6.4)=6 -> 2 blocks
    assert allocation_counts(scores, 0.4, allocation="layer", grouping=blocks) == {"x": 8, "y": 8}
    masks = masks_from_scores(scores, 0.4, allocation="layer", grouping=blocks)
    assert all(holds("block:2", m) and int(m.sum()) == 8 for m in masks.values())
    nm = Grouping(parse_structure("2:4"))
    for allocation in ("layer", "global"):
        masks = masks_from_scores(scores, 0.5, allocation=allocation, grouping=nm)
        for name, m in masks.items():
            assert holds("2:4", m)
            groups, kept = scores[name].reshape(-1, 4), m.reshape(-1, 4)
            top2 = groups.topk(2, dim=1).values.min(1).values  # the second largest of each group
            assert bool((groups[kept].reshape(-1, 2).min(1).values >= top2).all())


def test_lamp_over_groups_is_squared_norms_normalised_by_the_larger_ones():
    w = t([[1, 0], [2, 0], [0, 2]])  # squared channel norms 1, 4, 4
    scores = lamp_groups(parse_structure("channel"), w.abs())
    # ascending 1, 4, 4 (ties in channel order): 1/9, 4/8, 4/4
    assert torch.allclose(scores, t([1 / 9, 4 / 8, 4 / 4]))


# --- methods on a small model ------------------------------------------------------------------
def mlp(activation=nn.ReLU):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 8), activation(), nn.Linear(8, 8), activation(), nn.Linear(8, 4))


def cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 4 * 4, 4))


def batch(model):
    g = torch.Generator().manual_seed(1)
    shape = (16, 8) if isinstance(model[0], nn.Linear) else (16, 4, 4, 4)
    return torch.randn(*shape, generator=g), torch.randint(0, 4, (16,), generator=g)


def train(method, model, steps, check):
    x, y = batch(model)
    for _ in range(steps):
        method.optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        method.step()
        check(method)


def structured(method, structure, n=None):
    assert method.weights
    return all(holds(structure, w.mask, n) for w in method.weights)


def cubic(t, d_i, d_f, t0, interval, rounds):
    progress = min(max((t - t0) / (rounds * interval), 0.0), 1.0)
    return d_f + (d_i - d_f) * (1 - progress) ** 3


@pytest.mark.parametrize("ranking", ["layer"])
def test_gmp_two_of_four_passes_through_n_of_four_masks_down_to_exactly_two(ranking):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    gmp = create("gmp", model, opt, density=0.5, structure="2:4", ranking=ranking, total_steps=24,
                 update_interval=3, stop_fraction=0.75)
    seen = []

    def check(m):
        last = max((s for s in range(3, 19, 3) if s <= m.step_count), default=None)  # 6 steps, every 3
        n = 4 if last is None else min(4, max(2, round(cubic(last, 1.0, 0.5, 0, 3, 6) * 4)))
        assert structured(m, "2:4", n), (m.step_count, n)
        seen.append(n)
    train(gmp, model, 24, check)
    assert seen[-1] == 2 and {3, 2} <= set(seen) and seen == sorted(seen, reverse=True)
    assert {w.name: w.active for w in gmp.weights} == {w.name: w.numel // 2 for w in gmp.weights}


@pytest.mark.parametrize("structure, ranking", [("channel", "global"), ("block:2", "layer")])
def test_gmp_keeps_whole_groups_at_every_pruning_step_and_ends_at_the_rounded_target(structure, ranking):
    model = cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    gmp = create("gmp", model, opt, density=0.25, structure=structure, ranking=ranking, total_steps=16,
                 update_interval=4, stop_fraction=0.75)
    totals = []

    def check(m):
        assert structured(m, structure)
        totals.append(sum(w.active for w in m.weights))
    train(gmp, model, 16, check)
    assert totals == sorted(totals, reverse=True) and totals[-1] < totals[0] == sum(w.numel for w in gmp.weights)
    if ranking == "layer":  # uniform 0.25 per layer, rounded to whole groups
        assert {w.name: w.active for w in gmp.weights} == gmp.targets
        s = parse_structure(structure)
        for w in gmp.weights:
            size = s.group_size(tuple(w.shape))
            assert w.active == rounded(0.25, w.numel, size)
    else:
        total = sum(w.numel for w in gmp.weights)
        assert abs(totals[-1] - round(0.25 * total)) <= max(w.numel // w.shape[0] for w in gmp.weights) / 2


@pytest.mark.parametrize("structure", ["2:4", "channel"])
def test_granet_pruning_and_regrowth_keep_the_structure_after_every_update(structure):
    # a dead unit's bias is held at 0 (DeadChannels), so it outputs exactly 0: under ReLU (slope 0
    # at 0) its weights get no gradient and gradient regrowth cannot see it; tanh'(0) = 1
    model = mlp(nn.Tanh if structure == "channel" else nn.ReLU)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    granet = create("granet", model, opt, density=0.5, structure=structure,
                    initial_density=1.0, total_steps=18, update_interval=3, prune_stop_fraction=0.5)
    changed = []

    def check(m):
        masks = [w.mask.clone() for w in m.weights]
        if structure == "2:4":
            n = int(nm_counts(m.weights[0].mask, 4)[0])
            assert structured(m, structure, n)
        else:
            assert structured(m, structure)
        if check.last is not None:
            changed.append(any(not torch.equal(a, b) for a, b in zip(masks, check.last)))
        check.last = masks
    check.last = None
    train(granet, model, 18, check)
    assert structured(granet, structure)  # the end of pruning: exactly the structure
    assert sum(changed) >= 4 and any(changed[9:])  # pruning and regrowth (after step 9) both changed masks


@pytest.mark.parametrize("method, rounds, structure", [("snip", 1, "2:4"), ("grasp", 1, "channel"),
                                                       ("synflow", 5, "block:2"), ("synflow", 5, "2:4"),
                                                       ("pai", 1, "block:2"), ("pai", 1, "channel")])
def test_pruning_at_init_keeps_the_structure_and_exact_counts(method, rounds, structure):
    model = mlp() if structure == "2:4" else cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    density = 0.5 if structure == "2:4" else 0.3
    options = {"rounds": rounds} if method == "synflow" else {}
    if method == "pai":
        options = {"criterion": "magnitude", "ranking": "layer", "distribution": "uniform"}
    pruner = create(method, model, opt, density=density, structure=structure, **options)
    pruner.prepare(iter([batch(model)]))
    assert structured(pruner, structure)
    if structure == "2:4":
        assert all(w.active == w.numel // 2 for w in pruner.weights)
    total = sum(w.numel for w in pruner.weights)
    assert pruner.targets == {w.name: w.active for w in pruner.weights}
    if method == "pai":  # layer-wise: each layer at round(0.3 n) rounded to whole groups
        s = parse_structure(structure)
        for w in pruner.weights:
            size = s.group_size(tuple(w.shape))
            assert w.active == (w.numel // 2 if s.kind == "n:m" else rounded(density, w.numel, size))
    else:
        assert abs(sum(pruner.targets.values()) - round(density * total)) <= 8 * 9 / 2 or structure == "2:4"
    train(pruner, model, 2, lambda m: structured(m, structure))


def test_snip_channels_are_ranked_by_their_summed_saliency():
    model = cnn()
    x, y = batch(model)
    names = ["0.weight", "2.weight", "5.weight"]
    params = [model.get_parameter(n) for n in names]
    model.eval()
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), params)
    model.train()
    # mean |g w| per output channel, computed here; layer-wise: each layer keeps its top 3 of 8 (or 1 of 4)
    saliency = {n: (g * p).abs().detach().reshape(p.shape[0], -1).sum(1) for n, p, g in zip(names, params, grads)}
    pruner = create("snip", model, torch.optim.SGD(model.parameters(), lr=0.1), density=0.375,
                    structure="channel", ranking="layer", distribution="uniform", sparse_init="none")
    pruner.prepare(iter([(x, y)]))
    for w in pruner.weights:
        kept = w.mask.reshape(w.shape[0], -1).all(1)
        top = saliency[w.name].topk(int(kept.sum())).indices
        assert sorted(top.tolist()) == torch.nonzero(kept).reshape(-1).tolist()


@pytest.mark.parametrize("method, structure", [("prune-global", "2:4"), ("prune-layer", "block:2"),
                                               ("prune-lamp", "channel"), ("imp", "block:2")])
def test_one_shot_pruning_keeps_the_structure(method, structure):
    model = mlp() if structure == "2:4" else cnn()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    density = 0.5 if structure == "2:4" else 0.3
    pruner = create(method, model, opt, density=density, structure=structure, total_steps=6)
    assert structured(pruner, structure)
    if structure == "2:4":
        assert all(w.active == w.numel // 2 for w in pruner.weights)
    train(pruner, model, 2, lambda m: structured(m, structure))


def test_one_shot_rounds_pass_through_n_of_m_masks():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    pruner = create("prune-global", model, opt, density=0.5, structure="2:4", rounds=2, total_steps=4)
    assert structured(pruner, "2:4", n=3)  # round 1 of 2: 0.5 ** 0.5 = 0.71 -> 3 of 4
    seen = []
    train(pruner, model, 4, lambda m: seen.append(int(nm_counts(m.weights[0].mask, 4)[0])))
    assert seen == [3, 2, 2, 2] and structured(pruner, "2:4")


def test_grouped_lamp_keeps_the_channels_of_the_highest_group_lamp_scores():
    model = cnn()
    values = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("weight")}
    pruner = create("prune-lamp", model, torch.optim.SGD(model.parameters(), lr=0.1), density=0.3,
                    structure="channel")
    # every channel's group LAMP score, computed here; the kept ones are the global top
    lamp = {}
    for n, v in values.items():
        sq = v.reshape(v.shape[0], -1).pow(2).sum(1)
        order = torch.sort(sq, stable=True).indices
        tail = sq[order].flip(0).cumsum(0).flip(0)
        score = torch.empty_like(sq)
        score[order] = sq[order] / tail
        lamp[n] = score
    kept = {w.name: w.mask.reshape(w.shape[0], -1).all(1) for w in pruner.weights}
    lowest_kept = min(float(lamp[n][k].min()) for n, k in kept.items() if k.any())
    highest_pruned = max(float(lamp[n][~k].max()) for n, k in kept.items() if (~k).any())
    assert lowest_kept >= highest_pruned


def test_group_sums_add_the_values_of_each_group():
    w = t([[1, -2, 3, 4], [5, 6, -7, 8]])
    assert parse_structure("channel").group_sums(w).tolist() == [6, 12]
    assert parse_structure("2:4").group_sums(w).tolist() == [6, 12]
    assert parse_structure("block:2").group_sums(w).tolist() == [10, 8]
    assert parse_structure("unstructured").group_sums(w).tolist() == w.reshape(-1).tolist()
