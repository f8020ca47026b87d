"""Every registered method: trains, keeps its density, and resumes to the same masks and losses."""

import dataclasses

import pytest
import torch

from sparsetrain.algorithms import METHODS, Sparsifier, config_class
from sparsetrain.config import from_dict
from sparsetrain.engine import Callback, TrainConfig, Trainer
from toy_setup import FAST, toy_data, toy_model

def _method_config(name):
    cls = config_class(name)
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in {"density": 0.3, **FAST}.items() if k in names}
    return from_dict(cls, values)


def _trainer(name, epochs, tmp_path, callbacks=(), device="cpu"):
    config = TrainConfig(epochs=epochs, batch_size=16, lr=0.05, device=device)
    return Trainer(toy_model(), toy_data(), config, method=name, method_config=_method_config(name),
                   seed=3, callbacks=callbacks, checkpoint_path=tmp_path / "last.pt")


class _Interrupt(Callback):
    def __init__(self, after_epoch):
        self.after_epoch = after_epoch

    def on_epoch_end(self, trainer):
        if trainer.epoch == self.after_epoch:
            raise KeyboardInterrupt


def _masks(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items() if k.endswith("_mask")}


@pytest.mark.parametrize("name", METHODS.names())
def test_method_trains_keeps_density_and_resumes_identically(name, tmp_path, device):
    straight = _trainer(name, 4, tmp_path / "a", device=device)
    history = straight.fit()
    assert len(history) == 4 and all(torch.isfinite(torch.tensor(h["train_loss"])) for h in history)
    method = straight.method
    if isinstance(method, Sparsifier):
        active = {w.name: w.active for w in method.weights}
        assert active == method.current_targets()
        total = sum(w.numel for w in method.weights)
        if method.density_of_all_weights:
            assert sum(active.values()) == round(0.3 * total)
        for w in method.weights:
            assert w.parameter[~w.mask].eq(0).all()

    interrupted = _trainer(name, 4, tmp_path / "b", callbacks=[_Interrupt(after_epoch=2)], device=device)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    resumed = _trainer(name, 4, tmp_path / "b", device=device)
    resumed.fit(resume=True)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in history]
    assert [h["test_acc"] for h in resumed.history] == [h["test_acc"] for h in history]
    masks_a, masks_b = _masks(straight), _masks(resumed)
    assert masks_a.keys() == masks_b.keys()
    assert all(torch.equal(masks_a[k], masks_b[k]) for k in masks_a)
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
