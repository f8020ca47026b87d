"""Every registered sparse method with every structure: it keeps the structure after every
step with exact counts, or refuses it with one sentence (`structures_supported`). A method that
reaches N:M in steps (gradual pruning: n:M masks, n from M down to N) holds the structure of
its step (`mask_structure`) and the structure itself once its schedule is done."""

import dataclasses

import pytest
import torch

from sparsetrain.algorithms import METHODS, Sparsifier, config_class
from sparsetrain.config import from_dict
from sparsetrain.engine import Callback, TrainConfig, Trainer
from sparsetrain.errors import UserError
from sparsetrain.sparse import parse_structure
from toy_setup import FAST, toy_data, toy_model

SPARSE_METHODS = [n for n in METHODS.names() if issubclass(METHODS.get(n), Sparsifier)]


class _Check(Callback):
    """After every batch: the structure holds and each layer holds its count."""

    def __init__(self):
        self.checked = 0

    def on_batch_end(self, trainer):
        method = trainer.method
        assert method.structure_violations() == {}
        assert {w.name: w.active for w in method.weights} == method.current_targets()
        self.checked += 1


PRUNING_METHODS = ("gmp", "granet", "snip", "grasp", "synflow", "pai", "prune-global", "prune-layer",
                   "prune-lamp", "imp")


def test_the_methods_of_this_issue_take_every_structure():
    for name in ("static", "set", "rigl", "mest") + PRUNING_METHODS:
        assert set(METHODS.get(name).structures_supported) == {"unstructured", "n:m", "block", "channel"}
    assert METHODS.get("prune-dp").structures_supported == ("unstructured",)  # its distortion table is per weight


@pytest.mark.parametrize("spec", ["2:4", "block:2", "channel"])
@pytest.mark.parametrize("name", SPARSE_METHODS)
def test_method_keeps_the_structure_or_refuses_it(name, spec, tmp_path):
    cls = config_class(name)
    names = {f.name for f in dataclasses.fields(cls)}
    density = parse_structure(spec).density if spec == "2:4" else 0.3
    values = {k: v for k, v in {"density": density, "structure": spec, **FAST}.items() if k in names}
    train = TrainConfig(epochs=1, batch_size=16, lr=0.05, device="cpu")
    if parse_structure(spec).kind not in METHODS.get(name).structures_supported:
        with pytest.raises(UserError) as info:  # from the config or from the method
            Trainer(toy_model(), toy_data(), train, method=name, method_config=from_dict(cls, values), seed=3,
                    checkpoint_path=tmp_path / "last.pt")
        message = str(info.value)
        assert "structure" in message and spec in message and "\n" not in message
        return
    check = _Check()
    trainer = Trainer(toy_model(), toy_data(), train, method=name, method_config=from_dict(cls, values), seed=3,
                      callbacks=[check], checkpoint_path=tmp_path / "last.pt")
    trainer.fit()
    method = trainer.method
    assert check.checked == 4 and method.structure.spec == spec
    assert method.mask_structure() == method.structure  # gradual pruning has reached the structure
    if spec != "channel":  # the toy conv's fan-in (1 channel x 3 taps) fits neither 2:4 nor 2x2 blocks
        assert "0.weight" in method.selection.dense and "0.weight" not in method.selection.names


class _Interrupt(Callback):
    def on_epoch_end(self, trainer):
        if trainer.epoch == 1:
            raise KeyboardInterrupt


@pytest.mark.parametrize("name, spec", [("rigl", "2:4"), ("set", "channel")])
def test_structured_runs_resume_to_identical_masks_weights_and_itop(name, spec, tmp_path):
    cls = config_class(name)
    values = {"density": 0.5 if spec == "2:4" else 0.3, "structure": spec, "update_interval": 3,
              "drop_fraction": 0.5}
    train = TrainConfig(epochs=3, batch_size=16, lr=0.05, device="cpu")

    def trainer(folder, callbacks=()):
        return Trainer(toy_model(), toy_data(), train, method=name, method_config=from_dict(cls, values), seed=3,
                       callbacks=callbacks, checkpoint_path=tmp_path / folder / "last.pt")

    straight = trainer("a")
    straight.fit()
    with pytest.raises(KeyboardInterrupt):
        trainer("b", [_Interrupt()]).fit()
    resumed = trainer("b")
    resumed.fit(resume=True)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.method.itop_rate() == straight.method.itop_rate() > resumed.method.density()
