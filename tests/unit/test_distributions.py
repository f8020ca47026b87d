"""Layer-wise density allocation, checked against densities derived by hand."""

import math

import pytest
import torch

from sparsetrain import distributions as D
from sparsetrain.errors import UserError


def test_erk_two_linear_layers_by_hand():
    # raw(a) = (10+20)/(10*20) = 0.15, raw(b) = (5+10)/(5*10) = 0.3
    # budget 0.2 * 250 = 50 = eps * (0.15*200 + 0.3*50) = 45 eps  ->  eps = 10/9
    d = D.erk({"a": (10, 20), "b": (5, 10)}, 0.2)
    assert d["a"] == pytest.approx(1 / 6)
    assert d["b"] == pytest.approx(1 / 3)


def test_erk_conv_uses_kernel_dims_and_er_does_not():
    shapes = {"conv": (4, 2, 3, 3), "fc": (10, 72)}
    erk = D.erk(shapes, 0.25)
    er = D.er(shapes, 0.25)
    # ERK raw: conv (4+2+3+3)/72 = 1/6, fc 82/720; ER raw: conv (4+2)/8 = 3/4, fc 82/720
    budget = 0.25 * (72 + 720)
    eps_erk = budget / (72 / 6 + 82)
    assert erk["conv"] == pytest.approx(eps_erk / 6)
    assert erk["fc"] == pytest.approx(eps_erk * 82 / 720)
    # ER: eps = 198 / (0.75*72 + 82) = 1.456 makes conv 1.09 > 1, so conv is dense and
    # fc takes the remaining 198 - 72 = 126 of 720
    assert er == {"conv": 1.0, "fc": pytest.approx(126 / 720)}


def test_erk_saturated_layer_becomes_dense_and_budget_is_resolved():
    # raw(a) = 4/4 = 1, raw(b) = 110/1000. First eps = 502/114 > 1 makes a dense;
    # then b takes the remaining 498 of 1000 weights.
    d = D.erk({"a": (2, 2), "b": (10, 100)}, 0.5)
    assert d == {"a": 1.0, "b": pytest.approx(0.498)}


def test_erk_power_zero_point_five():
    d = D.erk({"a": (10, 20), "b": (5, 10)}, 0.2, power=0.5)
    ra, rb = math.sqrt(0.15), math.sqrt(0.3)
    eps = 50 / (ra * 200 + rb * 50)
    assert d["a"] == pytest.approx(eps * ra) and d["b"] == pytest.approx(eps * rb)


def test_uniform_with_dense_layer_spends_the_overall_budget():
    d = D.uniform({"first": (10, 10), "rest": (100, 9)}, 0.2, dense=("first",))
    # 0.2 * 1000 = 200 weights; the dense layer takes 100, leaving 100 / 900
    assert d == {"first": 1.0, "rest": pytest.approx(1 / 9)}


def test_by_scores_is_a_global_top_k():
    scores = {"a": torch.tensor([[5.0, 1.0], [0.5, 4.0]]), "b": torch.tensor([3.0, 0.1, 0.2, 2.0])}
    d = D.by_scores({"a": (2, 2), "b": (4,)}, 0.5, scores=scores)
    # top 4 of all 8 scores: 5, 4, 3, 2 -> two in a, two in b
    assert d == {"a": 0.5, "b": 0.5}


def test_custom_rejects_unknown_layer_and_bad_density():
    with pytest.raises(UserError, match="unknown layer 'zz'"):
        D.custom({"a": (2, 2)}, 0.5, densities={"zz": 0.1})
    with pytest.raises(UserError, match="must be in"):
        D.custom({"a": (2, 2)}, 0.5, densities={"a": 1.5})


@pytest.mark.parametrize("density", [0.0, -0.1, 1.01])
def test_density_outside_unit_interval_is_refused(density):
    with pytest.raises(UserError, match="density must be in"):
        D.erk({"a": (3, 3)}, density)


def test_dense_layers_that_exceed_the_budget_are_refused():
    with pytest.raises(UserError, match="exceed"):
        D.uniform({"a": (10, 10), "b": (2, 2)}, 0.1, dense=("a",))


@pytest.mark.parametrize("name", ["uniform", "er", "erk"])
@pytest.mark.parametrize("density", [0.01, 0.1, 0.37, 0.9, 1.0])
def test_allocate_total_is_exact_and_each_layer_within_one(name, density):
    shapes = {"c1": (6, 1, 5, 5), "c2": (16, 6, 5, 5), "f1": (120, 400), "f2": (84, 120), "f3": (10, 84)}
    densities = D.DISTRIBUTIONS.get(name)(shapes, density)
    counts = D.allocate(name, shapes, density)
    total = sum(math.prod(s) for s in shapes.values())
    assert sum(counts.values()) == round(density * total)
    for layer, shape in shapes.items():
        assert abs(counts[layer] - densities[layer] * math.prod(shape)) < 1
        assert 0 <= counts[layer] <= math.prod(shape)


def test_layer_counts_largest_remainder_by_hand():
    # wanted: a 2.6, b 1.3, c 1.1 (total 5): floors 2,1,1 = 4, the one left goes to a (0.6)
    counts = D.layer_counts({"a": (10,), "b": (10,), "c": (10,)}, {"a": 0.26, "b": 0.13, "c": 0.11})
    assert counts == {"a": 3, "b": 1, "c": 1}
