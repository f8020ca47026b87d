"""What `density` counts: the sparsified weights only (the README's budget paragraph).

Layers kept dense (dense_first, dense_last, exclude) are outside the budget, as in the RigL
and GraNet code; `custom` spends whatever its per-layer densities give. Expected counts are
computed by hand for LeNet-300-100 (Linear weights 784x300, 300x100, 100x10: 266,200).
"""

import pytest
import torch

import sparsetrain as st
from sparsetrain.algorithms import create

FIRST, SECOND, LAST = "net.1.weight", "net.3.weight", "net.5.weight"
SIZES = {FIRST: 235_200, SECOND: 30_000, LAST: 1_000}


def _lenet(**options):
    torch.manual_seed(0)
    model = st.models.create("lenet300", input_shape=(1, 28, 28), num_classes=10)
    method = create("static", model, None, sparse_init="none", **options)
    return model, {w.name: w.active for w in method.weights}


def _overall(model, active):
    """Active fraction of all Linear weights, the dense ones counted in full."""
    total = sum(SIZES.values())
    return (sum(active.values()) + sum(n for name, n in SIZES.items() if name not in active)) / total


def test_dense_first_layer_is_outside_the_budget():
    model, active = _lenet(density=0.1, distribution="uniform", dense_first=True)
    assert active == {SECOND: 3_000, LAST: 100}  # 0.1 of the 31,000 sparsified weights
    assert bool((model.net[1].weight != 0).all())  # the first layer stays dense
    assert _overall(model, active) == pytest.approx(238_300 / 266_200)  # 0.895, not 0.1


def test_erk_with_dense_first_spends_density_times_the_sparsified_weights():
    # ERK raw densities (300+100)/30,000 and (100+10)/1,000: eps * (400 + 110) = 3,100, so
    # 3,100 * 400/510 = 2431.37 and 3,100 * 110/510 = 668.63; the spare weight goes to the
    # larger remainder
    _, active = _lenet(density=0.1, distribution="erk", dense_first=True)
    assert active == {SECOND: 2_431, LAST: 669}


def test_dense_last_layer_is_outside_the_budget():
    _, active = _lenet(density=0.1, distribution="uniform", dense_last=True)
    assert active == {FIRST: 23_520, SECOND: 3_000}  # 0.1 of 265,200


def test_custom_spends_its_own_densities_not_density_times_total():
    model, active = _lenet(density=0.2, distribution="custom", layer_densities={FIRST: 0.05})
    assert active == {FIRST: 11_760, SECOND: 6_000, LAST: 200}  # unnamed layers get density
    assert _overall(model, active) == pytest.approx(17_960 / 266_200)  # 0.0675, not 0.2
