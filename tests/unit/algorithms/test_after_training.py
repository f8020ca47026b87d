"""Pruning after training: masks by hand, checkpoint loading, rewinding, rounds, IMP counts."""

import pytest
import torch
from torch import nn

from sparsetrain.algorithms import create
from sparsetrain.criteria import lamp_scores
from sparsetrain.errors import UserError


def _model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3, bias=False), nn.ReLU(), nn.Linear(3, 2, bias=False))
    with torch.no_grad():  # |w| all distinct: layer 0 holds 1..12, layer 1 holds 0.5..3.0 (x0.5)
        model[0].weight.copy_(torch.arange(1.0, 13.0).view(3, 4) * torch.tensor([1.0, -1.0] * 6).view(3, 4))
        model[2].weight.copy_(torch.arange(1.0, 7.0).view(2, 3) * 0.5)
    return model


def _masks(method):
    return {w.name: w.mask.clone() for w in method.weights}


def test_global_magnitude_keeps_the_largest_weights_over_all_layers():
    method = create("prune-global", _model(), density=0.5)  # 9 of 18 weights
    masks = _masks(method)
    # the 9 largest |w| are 4..12 in layer 0 (layer 1 holds at most 3.0)
    assert masks["0.weight"].flatten().tolist() == [False] * 3 + [True] * 9
    assert not masks["2.weight"].any()


def test_layer_magnitude_keeps_the_largest_weights_within_each_layer():
    method = create("prune-layer", _model(), density=0.5, distribution="uniform")
    masks = _masks(method)
    assert masks["0.weight"].flatten().tolist() == [False] * 6 + [True] * 6
    assert masks["2.weight"].flatten().tolist() == [False] * 3 + [True] * 3


def test_lamp_ranks_globally_by_the_lamp_formula():
    model = _model()
    w0, w1 = model[0].weight.detach().clone(), model[2].weight.detach().clone()
    method = create("prune-lamp", model, density=1 / 3)  # 6 of 18
    # LAMP by hand: sorted ascending, score = w^2 / sum of this and all larger w^2
    def by_hand(w):
        sq = sorted(float(v) ** 2 for v in w.flatten())
        return {round(s ** 0.5, 4): s / sum(sq[i:]) for i, s in enumerate(sq)}
    scores = {**{("0", k): v for k, v in by_hand(w0).items()}, **{("2", k): v for k, v in by_hand(w1).items()}}
    top = sorted(scores, key=lambda k: -scores[k])[:6]
    kept = {("0", round(abs(float(v)), 4)) for v in w0[method.weights[0].mask]} | \
           {("2", round(abs(float(v)), 4)) for v in w1[method.weights[1].mask]}
    assert kept == set(top)
    assert torch.allclose(lamp_scores(torch.tensor([3.0, 1.0, 2.0])), torch.tensor([9 / 9, 1 / 14, 4 / 13]))


def test_checkpoint_is_loaded_pruned_and_rewound(tmp_path):
    trained = _model()
    with torch.no_grad():
        trained[0].weight.mul_(-1).flip(1)
    torch.save({"model": trained.state_dict()}, tmp_path / "last.pt")
    fresh = _model()
    start = {k: v.clone() for k, v in fresh.state_dict().items()}
    method = create("prune-global", fresh, density=0.5, checkpoint=str(tmp_path / "last.pt"))
    mask = method.weights[0].mask
    assert torch.equal(fresh[0].weight, trained[0].weight * mask)  # fine-tuning starts from trained values
    expected = create("prune-global", trained, density=0.5).weights[0].mask
    assert torch.equal(mask, expected)

    rewound = _model()
    method = create("imp", rewound, density=0.5, checkpoint=str(tmp_path / "last.pt"), rewind_to="init")
    assert torch.equal(method.weights[0].mask, expected)  # mask from the trained weights
    assert torch.equal(rewound[0].weight, start["0.weight"] * expected)  # values from the init


def test_bad_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        create("prune-global", _model(), density=0.5, checkpoint=str(tmp_path / "nope.pt"))
    torch.save({"other.weight": torch.zeros(2)}, tmp_path / "bad.pt")
    with pytest.raises(UserError, match="missing"):
        create("prune-global", _model(), density=0.5, checkpoint=str(tmp_path / "bad.pt"))


def test_rounds_prune_geometrically_during_training():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    method = create("prune-global", model, opt, density=0.25, rounds=2, total_steps=4)
    assert sum(w.active for w in method.weights) == round(0.5 * 18)  # 0.25 ** (1/2)
    x = torch.randn(5, 4)
    for step in range(4):
        opt.zero_grad()
        model(x).sum().backward()
        method.step()
        expected = 9 if step < 1 else round(0.25 * 18)  # round 2 is due after step 2 of 4
        assert sum(w.active for w in method.weights) == expected


@pytest.mark.parametrize("levels", [3])
def test_imp_level_k_keeps_round_0_8_pow_k_of_the_weights(tmp_path, levels):
    model = _model()
    total = 18
    torch.save(model.state_dict(), tmp_path / "level0.pt")
    for level in range(1, levels + 1):
        model = _model()
        method = create("imp", model, density=0.8 ** level, checkpoint=str(tmp_path / f"level{level - 1}.pt"),
                        rewind_to="init")
        assert sum(w.active for w in method.weights) == round(0.8 ** level * total)
        if level > 1:  # nested: a level only removes weights of the previous one
            previous = torch.load(tmp_path / f"level{level - 1}.pt", weights_only=True)
            for w in method.weights:
                assert not (w.mask & ~previous[w.name + "_mask"]).any()
        torch.save(model.state_dict(), tmp_path / f"level{level}.pt")


def test_prune_dp_calibrates_on_prepared_batches_and_spends_the_budget():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    method = create("prune-dp", model, opt, density=0.5, total_steps=2, dp_levels=6, dp_calibration=20)
    with pytest.raises(UserError, match="calibration"):
        method.step()
    x = torch.randn(16, 4)
    method.prepare(iter([(x, None), (x + 1, None), (x + 2, None)]))
    assert method.inputs.shape == (20, 4)  # 16 + 4 of the second batch; the third is not read
    assert sum(w.active for w in method.weights) == 9
    masks = {w.name: w.mask.clone() for w in method.weights}
    method.prepare(iter([(x * 5, None)]))  # once only
    assert all(torch.equal(masks[w.name], w.mask) for w in method.weights)
    model(x).sum().backward()
    method.step()
    for w in method.weights:
        assert w.parameter[~w.mask].eq(0).all()


def test_rounds_without_total_steps_is_a_user_error():
    with pytest.raises(UserError, match="total_steps"):
        create("prune-global", _model(), density=0.25, rounds=2)
