"""Hard-subset scores (EL2N, GraNd, forgetting), selection and the score cache."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsetrain.data import DatasetSplits, TensorData
from sparsetrain.errors import UserError
from sparsetrain.scenarios import ScenarioContext, apply_scenarios
from sparsetrain.scenarios import hard
from sparsetrain.scenarios.hard import el2n, forgetting_counts, grand, select


def test_el2n_of_a_perfectly_fit_sample_is_zero_and_of_a_uniform_guess_is_hand_computed():
    y = torch.tensor([2, 0])
    perfect = F.one_hot(y, 4).float()
    assert el2n(perfect, y).tolist() == [0.0, 0.0]
    uniform = torch.full((1, 4), 0.25)
    # (0.75^2 + 3 * 0.25^2) ** 0.5
    assert el2n(uniform, torch.tensor([0])).item() == pytest.approx(math.sqrt(0.75))


def test_forgetting_counts_on_a_hand_made_accuracy_sequence():
    correct = np.array([[1, 0, 0, 1],
                        [0, 0, 1, 1],
                        [1, 0, 1, 0],
                        [0, 0, 1, 0],
                        [1, 0, 1, 1]], dtype=bool)  # 5 presentations x 4 samples
    # sample 0 forgotten twice, 1 never learned (inf), 2 learned and never forgotten, 3 once
    assert forgetting_counts(correct).tolist() == [2.0, math.inf, 0.0, 1.0]


def test_grand_of_a_linear_model_is_the_error_norm_times_the_input_norm():
    torch.manual_seed(0)
    model = nn.Linear(3, 4)
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 3, 0])
    # d CE / d W = (p - e) x^T, d CE / d b = p - e, so the norm is |p - e| * sqrt(|x|^2 + 1)
    expected = el2n(F.softmax(model(x), 1), y) * torch.sqrt(x.pow(2).sum(1) + 1)
    assert torch.allclose(grand(model, x, y), expected.detach(), atol=1e-6)


def test_select_takes_the_hardest_or_easiest_fraction_with_ties_to_the_lower_index():
    scores = np.array([3.0, 1.0, 2.0, 5.0, 4.0])
    assert select(scores, 0.4, "hardest").tolist() == [3, 4]
    assert select(scores, 0.4, "easiest").tolist() == [1, 2]
    assert select(np.array([1.0, 1.0, 1.0, 0.0]), 0.5, "hardest").tolist() == [0, 1]
    assert select(np.array([np.inf, 0.0, 2.0]), 0.34, "hardest").tolist() == [0]


def _toy(n=60):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] > 0).long()
    empty = TensorData(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    return DatasetSplits("toy", TensorData(x, y), empty, TensorData(x[:20].clone(), y[:20].clone()), 2, (4,))


def _config(**changes):
    values = dict(label_noise=0.0, noise_type="symmetric", data_fraction=1.0, imbalance_ratio=1.0,
                  subset="hardest", subset_score="el2n", subset_fraction=0.5, subset_split="train",
                  score_epochs=2, score_runs=2)
    values.update(changes)
    return SimpleNamespace(**values)


def _context(tmp_path):
    return ScenarioContext(seed=0, make_model=lambda: nn.Linear(4, 2), batch_size=16, lr=0.1,
                           cache_dir=tmp_path)


@pytest.mark.parametrize("kind", ["el2n", "grand", "forgetting"])
def test_hard_subset_keeps_the_highest_scores_and_caches_them(tmp_path, kind, monkeypatch):
    data = _toy()
    context = _context(tmp_path)
    hardest = apply_scenarios(data, _config(subset_score=kind), context)
    assert len(hardest.train) == 30 and hardest.test is data.test
    cached = list(tmp_path.glob(f"{kind}-*.npz"))
    assert len(cached) == 1
    scores = np.load(cached[0])["train"]
    assert len(scores) == 60
    expected = data.train.x[torch.as_tensor(select(scores, 0.5, "hardest"))]
    assert torch.equal(hardest.train.x, expected)
    easiest = apply_scenarios(data, _config(subset_score=kind, subset="easiest"), context)
    assert torch.equal(easiest.train.x, data.train.x[torch.as_tensor(select(scores, 0.5, "easiest"))])

    def no_training(*args, **kwargs):
        raise AssertionError("scores must come from the cache")

    monkeypatch.setattr(hard, "short_run_scores", no_training)
    again = apply_scenarios(data, _config(subset_score=kind), context)
    assert torch.equal(again.train.x, hardest.train.x)


def test_el2n_scores_separate_learned_from_mislabeled_samples(tmp_path):
    data = _toy(80)
    flipped = torch.arange(80) < 8  # the first 8 labels are wrong
    y = torch.where(flipped, 1 - data.train.y, data.train.y)
    data = DatasetSplits("toy", TensorData(data.train.x, y), data.val, data.test, 2, (4,))
    context = ScenarioContext(seed=0, make_model=lambda: nn.Linear(4, 2), batch_size=16, lr=0.5)
    scores = hard.short_run_scores(data, context, "el2n", epochs=10, runs=1)["train"]
    assert scores[:8].mean() > scores[8:].mean() + 0.3


def test_evaluation_subset_replaces_only_the_test_split(tmp_path):
    data = _toy()
    out = apply_scenarios(data, _config(subset_split="test", subset_fraction=0.25), _context(tmp_path))
    assert out.train is data.train and len(out.test) == 5


def test_forgetting_needs_two_epochs(tmp_path):
    with pytest.raises(UserError, match="score_epochs"):
        apply_scenarios(_toy(), _config(subset_score="forgetting", score_epochs=1), _context(tmp_path))
