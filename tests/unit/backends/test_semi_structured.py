"""2:4 semi-structured inference: which Linear layers qualify, and a clear refusal without CUDA."""

import pytest
import torch
from torch import nn

import sparsetrain as st
from sparsetrain.backends.semi_structured import eligibility, is_2_4
from sparsetrain.errors import UserError


def two_of_four(rows: int, cols: int) -> torch.Tensor:
    """Keeps entries 0 and 2 of every group of 4 in even rows, 1 and 3 in odd rows."""
    col = torch.arange(cols) % 4
    row = torch.arange(rows)[:, None] % 2
    return (col[None, :] % 2) == row


def test_is_2_4_counts_each_group_of_four_along_the_fan_in():
    assert is_2_4(two_of_four(2, 8))
    assert is_2_4(torch.tensor([[1, 0, 0, 0, 0, 0, 0, 0]], dtype=torch.bool))  # fewer than 2 fits too
    assert not is_2_4(torch.tensor([[1, 1, 1, 0, 1, 1, 0, 0]], dtype=torch.bool))  # 3 in the first group
    # 2 per row-pair across groups is not enough: groups run along the fan-in (columns)
    assert not is_2_4(torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.bool))
    assert not is_2_4(torch.ones(4, 6, dtype=torch.bool))  # fan-in not a multiple of 4
    assert not is_2_4(torch.ones(4, 4, 4, dtype=torch.bool))  # a conv kernel: Linear only


def test_eligibility_reads_mask_buffers_and_weight_patterns():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32), nn.Linear(32, 64), nn.Linear(64, 96))
    sparsifier = st.create("static", model, torch.optim.SGD(model.parameters(), lr=0.1), density=0.5,
                           distribution="uniform")
    by_name = {w.name: w for w in sparsifier.weights}
    by_name["0.weight"].set_mask(two_of_four(64, 64))  # masked backend: the buffer decides
    by_name["4.weight"].set_mask(two_of_four(96, 64))
    model[3].weight_mask = None  # a plain layer: its zero pattern decides
    with torch.no_grad():
        model[3].weight.mul_(two_of_four(64, 32))
    found = eligibility(model)
    assert found["0"] is None and found["4"] is None
    assert "64x32" in found["3"] and "multiples of 32 and 64" in found["3"]  # in features 32 < 64
    assert "not 2:4" in found["2"]  # a random 50% mask
    assert set(found) == {"0", "2", "3", "4"}


def test_semi_structured_refuses_clearly_without_cuda_or_off_the_gpu(monkeypatch):
    model = nn.Sequential(nn.Linear(64, 64))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="needs a CUDA GPU .* this machine has none"):
        st.semi_structured(model)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(UserError, match=r"move the model there first \(model.cuda\(\)\)"):
        st.semi_structured(model)
