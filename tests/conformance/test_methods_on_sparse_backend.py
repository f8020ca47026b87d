"""Every registered sparse method runs unchanged on the sparse backend: it trains, keeps its
density with truly sparse storage, and resumes from a checkpoint to the same topology."""

import dataclasses

import pytest
import torch

from sparsetrain.algorithms import METHODS, Sparsifier, config_class
from sparsetrain.backends.sparse import SparseLayer
from sparsetrain.config import from_dict
from sparsetrain.engine import Callback, TrainConfig, Trainer
from toy_setup import FAST, toy_data, toy_model

SPARSE_METHODS = [n for n in METHODS.names() if issubclass(METHODS.get(n), Sparsifier)]


def _trainer(name, epochs, tmp_path, backend="sparse", callbacks=(), device="cpu"):
    cls = config_class(name)
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in {"density": 0.3, "backend": backend, **FAST}.items() if k in names}
    config = TrainConfig(epochs=epochs, batch_size=16, lr=0.05, device=device)
    return Trainer(toy_model(), toy_data(), config, method=name, method_config=from_dict(cls, values),
                   seed=3, callbacks=callbacks, checkpoint_path=tmp_path / "last.pt")


class _Interrupt(Callback):
    def on_epoch_end(self, trainer):
        if trainer.epoch == 2:
            raise KeyboardInterrupt


def _structure(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items() if k.endswith(("indices", "indptr"))}


def test_every_sparse_method_is_covered():
    assert {"static", "set", "rigl", "mest"} <= set(SPARSE_METHODS)


@pytest.mark.parametrize("name", SPARSE_METHODS)
def test_method_runs_on_the_sparse_backend(name, tmp_path, device):
    straight = _trainer(name, 4, tmp_path / "a", device=device)
    history = straight.fit()
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in history)
    method = straight.method
    assert method.weights and all(isinstance(w.module, SparseLayer) for w in method.weights)
    active = {w.name: w.active for w in method.weights}
    assert active == method.current_targets()
    if method.density_of_all_weights:
        assert sum(active.values()) == round(0.3 * sum(w.numel for w in method.weights))
    for w in method.weights:  # storage holds exactly the active weights, optimizer state too
        assert w.parameter.numel() == w.active == int(w.mask.sum())
        for value in straight.optimizer.state[w.parameter].values():
            if isinstance(value, torch.Tensor) and value.dim():
                assert value.shape == w.parameter.shape

    interrupted = _trainer(name, 4, tmp_path / "b", callbacks=[_Interrupt()], device=device)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    resumed = _trainer(name, 4, tmp_path / "b", device=device)
    resumed.fit(resume=True)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in history]
    a, b = _structure(straight), _structure(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for p, q in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)
