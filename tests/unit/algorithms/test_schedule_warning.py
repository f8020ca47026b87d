"""A schedule that gives a run at most one topology update (or pruning step) is warned about."""

import warnings

import pytest
import torch
from torch import nn

import sparsetrain  # noqa: F401  (registers backends and methods)
from sparsetrain.algorithms import create
from sparsetrain.cli import _show_warning
from sparsetrain.errors import SparsetrainWarning


def _make(method, **options):
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    return create(method, model, torch.optim.SGD(model.parameters(), lr=0.1), density=0.5, **options)


@pytest.mark.parametrize("method", ["set", "rigl"])
@pytest.mark.parametrize("total, count", [(110, 0), (200, 1)])
def test_dynamic_methods_warn_with_zero_or_one_update(method, total, count):
    # updates every 100 steps until int(0.75 * total): 82 -> none, 150 -> one (step 100)
    with pytest.warns(SparsetrainWarning, match=rf"{method}: {count} topology updates? .*every 100 optimizer "
                      rf"steps until step {int(0.75 * total)} of {total}\).*update_interval.*stop_fraction.*epochs"):
        _make(method, total_steps=total, update_interval=100, stop_fraction=0.75)


def test_mest_counts_its_mutation_at_the_start():
    mest = dict(update_interval=100, interval_unit="steps", stop_fraction=0.75, dense_first=False, dense_last=False)
    with pytest.warns(SparsetrainWarning, match=r"mest: 1 topology update in this run"):
        _make("mest", total_steps=110, **mest)  # the start, and none on the schedule
    with warnings.catch_warnings():
        warnings.simplefilter("error", SparsetrainWarning)
        _make("mest", total_steps=200, **mest)  # the start and step 100


@pytest.mark.parametrize("method", ["set", "rigl"])
def test_two_updates_are_not_warned_about(method):
    with warnings.catch_warnings():
        warnings.simplefilter("error", SparsetrainWarning)
        _make(method, total_steps=300, update_interval=100, stop_fraction=0.75)  # steps 100 and 200


def test_gradual_pruning_warns_when_it_prunes_only_once():
    # end = 75 of 100 steps, interval 50: one pruning step (at 50), i.e. one-shot pruning
    with pytest.warns(SparsetrainWarning, match=r"gmp: 1 pruning step in this run .*until step 50 of 100\).*stop_fraction"):
        _make("gmp", total_steps=100, update_interval=50)


def test_the_cli_prints_our_warnings_as_one_line(capsys):
    _show_warning(SparsetrainWarning("rigl: 0 topology updates"), SparsetrainWarning, "x.py", 1)
    assert capsys.readouterr().err == "sparsetrain: warning: rigl: 0 topology updates\n"
