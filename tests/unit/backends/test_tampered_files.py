"""Tamper sweep: every damaged checkpoint or export folder is refused with one sentence naming
the file, before any numba kernel reads it; the process never crashes (a segfault would end
this test run). Each case changes one thing in a file a sparse-backend SET run wrote."""

import dataclasses
import io
import json
import pickle
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from sparsetrain.algorithms import config_class
from sparsetrain.backends.export import export_model, load_exported
from sparsetrain.backends.sparse import SparseLayer, check_csr
from sparsetrain.config import from_dict
from sparsetrain.engine import TrainConfig, Trainer
from sparsetrain.errors import UserError

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "conformance"))
from toy_setup import FAST, toy_data, toy_model  # noqa: E402

LAYER = "3"  # the Linear(60, 16) of the toy model: 16 rows, 60 columns


def _trainer(path):
    cls = config_class("set")
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in {"density": 0.3, "backend": "sparse", **FAST}.items() if k in names}
    return Trainer(toy_model(), toy_data(), TrainConfig(epochs=2, batch_size=16, lr=0.05, device="cpu"),
                   method="set", method_config=from_dict(cls, values), seed=3, checkpoint_path=path)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A checkpoint after epoch 1 of 2 and an export folder of the same model."""
    root = tmp_path_factory.mktemp("written")
    trainer = _trainer(root / "last.pt")
    trainer.config = dataclasses.replace(trainer.config, epochs=1)
    trainer.fit()
    export_model(trainer.model, root / "export")
    return root


def _set(state, key, change):
    state[key] = change(state[key])


def _shift_row(t):  # swap two columns inside the first row with two entries
    t = t.clone()
    t[0], t[1] = t[1].clone(), t[0].clone()
    return t


def _nonmonotone(t):
    t = t.clone()
    t[5], t[6] = t[6].clone() + 1, t[5].clone()
    return t


# (name, change of a tensor dict (model state) keyed by "<layer>.values" etc.)
CSR_CHANGES = [
    ("indices +1e8", lambda s: _set(s, f"{LAYER}.indices", lambda t: t + 100_000_000)),
    ("indices negative", lambda s: _set(s, f"{LAYER}.indices", lambda t: t - 1000)),
    ("indices one past the last column", lambda s: _set(s, f"{LAYER}.indices", lambda t: t.clone().fill_(60))),
    ("indices int64", lambda s: _set(s, f"{LAYER}.indices", lambda t: t.long())),
    ("indices float", lambda s: _set(s, f"{LAYER}.indices", lambda t: t.float())),
    ("indices unsorted in a row", lambda s: _set(s, f"{LAYER}.indices", _shift_row)),
    ("indices repeated in a row", lambda s: _set(s, f"{LAYER}.indices", lambda t: torch.cat([t[:1], t[:-1]]))),
    ("values cut to 10", lambda s: _set(s, f"{LAYER}.values", lambda t: t[:10].clone())),
    ("values 2-d", lambda s: _set(s, f"{LAYER}.values", lambda t: t.reshape(1, -1).clone())),
    ("values int", lambda s: _set(s, f"{LAYER}.values", lambda t: t.int())),
    ("indices cut to 10", lambda s: _set(s, f"{LAYER}.indices", lambda t: t[:10].clone())),
    ("indptr not monotone", lambda s: _set(s, f"{LAYER}.indptr", _nonmonotone)),
    ("indptr end beyond nnz", lambda s: _set(s, f"{LAYER}.indptr", lambda t: torch.cat([t[:-1], t[-1:] + 50]))),
    ("indptr starts at 1", lambda s: _set(s, f"{LAYER}.indptr", lambda t: torch.cat([t[:1] + 1, t[1:]]))),
    ("indptr one entry short", lambda s: _set(s, f"{LAYER}.indptr", lambda t: t[:-1].clone())),
    ("indptr int64", lambda s: _set(s, f"{LAYER}.indptr", lambda t: t.long())),
    ("indptr huge", lambda s: _set(s, f"{LAYER}.indptr", lambda t: t.clone().fill_(2**31 - 1))),
    ("indices missing", lambda s: s.pop(f"{LAYER}.indices")),
    ("bias missing", lambda s: s.pop(f"{LAYER}.bias")),
    ("bias wrong shape", lambda s: _set(s, f"{LAYER}.bias", lambda t: t[:3].clone())),
    ("an unknown tensor", lambda s: s.update(extra=torch.zeros(3))),
]


def _checkpoint_change(change):
    return lambda c: change(c["model"])


def _retired(c, change):
    retired = c["method"]["retired"]
    name = next(iter(retired))
    retired[name] = change(retired[name])


CHECKPOINT_CHANGES = [(f"model {name}", _checkpoint_change(change)) for name, change in CSR_CHANGES] + [
    ("no model", lambda c: c.pop("model")),
    ("no optimizer", lambda c: c.pop("optimizer")),
    ("no method", lambda c: c.pop("method")),
    ("model is a list", lambda c: c.update(model=[1, 2])),
    ("momentum cut short", lambda c: [v.update(momentum_buffer=v["momentum_buffer"][:5].clone())
                                      for v in c["optimizer"]["state"].values() if "momentum_buffer" in v]),
    ("retired position out of range", lambda c: _retired(c, lambda t: torch.tensor([10**9]))),
    ("retired positions descending", lambda c: _retired(c, lambda t: torch.tensor([7, 3]))),
    ("retired positions 2-d", lambda c: _retired(c, lambda t: torch.zeros(2, 2, dtype=torch.long))),
    ("retired layer unknown", lambda c: c["method"]["retired"].update({"nope.weight": torch.tensor([1])})),
    ("epoch 999", lambda c: c.update(epoch=999)),
    ("epoch -1", lambda c: c.update(epoch=-1)),
    ("history not a list", lambda c: c.update(history=5)),
    ("rng state wrong", lambda c: c["rng"].update(torch=torch.zeros(3))),
]


def _raw(data: bytes):
    return lambda path: path.write_bytes(data)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def _pickled(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


FILE_CHANGES = [
    ("empty", _raw(b"")),
    ("random bytes", _raw(bytes(range(256)) * 8)),
    ("truncated", lambda path: path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])),
    ("a pickled object", _raw(_pickled({"model": _Evil()}))),
    ("a tensor, not a mapping", _raw(_pickled(torch.zeros(3)))),
]


def _one_sentence_naming(exc, path):
    message = str(exc)
    assert str(path) in message, message
    assert "\n" not in message and "weights_only=False" not in message and "Traceback" not in message


@pytest.mark.parametrize("name,change", CHECKPOINT_CHANGES, ids=[n for n, _ in CHECKPOINT_CHANGES])
def test_a_tampered_checkpoint_is_refused_naming_the_file(written, tmp_path, name, change):
    path = tmp_path / "last.pt"
    state = torch.load(written / "last.pt", weights_only=True)
    change(state)
    torch.save(state, path)
    with pytest.raises(UserError) as caught:
        _trainer(path).fit(resume=True)
    _one_sentence_naming(caught.value, path)


@pytest.mark.parametrize("name,change", FILE_CHANGES, ids=[n for n, _ in FILE_CHANGES])
def test_a_damaged_checkpoint_file_is_refused_naming_it(written, tmp_path, name, change):
    path = tmp_path / "last.pt"
    shutil.copy(written / "last.pt", path)
    change(path)
    with pytest.raises(UserError) as caught:
        _trainer(path).fit(resume=True)
    _one_sentence_naming(caught.value, path)


def test_the_untampered_checkpoint_resumes(written, tmp_path):
    shutil.copy(written / "last.pt", tmp_path / "last.pt")
    trainer = _trainer(tmp_path / "last.pt")
    assert len(trainer.fit(resume=True)) == 2


def _manifest(change):
    def apply(folder):
        path = folder / "manifest.json"
        manifest = json.loads(path.read_text())
        change(manifest)
        path.write_text(json.dumps(manifest))
    return apply


def _tensors(change):
    def apply(folder):
        state = load_file(str(folder / "model.safetensors"))
        change(state)
        save_file(state, str(folder / "model.safetensors"))
    return apply


def _file(name, change):
    return lambda folder: change(folder / name)


EXPORT_CHANGES = [(f"tensors {n}", "model.safetensors", _tensors(c)) for n, c in CSR_CHANGES] + [
    (f"tensors file {n}", "model.safetensors", _file("model.safetensors", c))
    for n, c in FILE_CHANGES + [("missing", lambda p: p.unlink())]] + [
    (f"manifest file {n}", "manifest.json", _file("manifest.json", c))
    for n, c in [("missing", lambda p: p.unlink()), ("empty", _raw(b"")), ("not UTF-8", _raw(b"\xff\xfe{")),
                 ("truncated", lambda p: p.write_text(p.read_text()[:40])), ("deeply nested", _raw(b"[" * 100000)),
                 ("a list", _raw(b"[1, 2]"))]] + [
    (f"manifest {n}", "manifest.json", _manifest(c)) for n, c in [
        ("format", lambda m: m.update(format="other/9")),
        ("no layers", lambda m: m.pop("layers")),
        ("layers empty", lambda m: m.update(layers=[])),
        ("layers a string", lambda m: m.update(layers="3")),
        ("layer without name", lambda m: m["layers"][0].pop("name")),
        ("layer name a number", lambda m: m["layers"][0].update(name=3)),
        ("layer that does not exist", lambda m: m["layers"][0].update(name="nope")),
        ("layer that is not Linear/Conv", lambda m: m["layers"][0].update(name="1")),
        ("nnz negative", lambda m: m["layers"][0].update(nnz=-1)),
        ("nnz a string", lambda m: m["layers"][0].update(nnz="5")),
        ("nnz not the values'", lambda m: m["layers"][0].update(nnz=m["layers"][0]["nnz"] + 1)),
        ("model a string", lambda m: m.update(model="mlp")),
        ("model unknown", lambda m: m.update(model={"name": "no-such-model", "options": {}})),
        ("model options a list", lambda m: m.update(model={"name": "mlp", "options": [1]})),
    ]]


def _model_spec_export(written, folder):
    shutil.copytree(written / "export", folder)
    return folder


@pytest.mark.parametrize("name,file,change", EXPORT_CHANGES, ids=[n for n, _, _ in EXPORT_CHANGES])
def test_a_tampered_export_folder_is_refused_naming_the_file(written, tmp_path, name, file, change):
    folder = _model_spec_export(written, tmp_path / "export")
    change(folder)
    with pytest.raises(UserError) as caught:
        load_exported(folder, model=None if name.startswith("manifest model") else toy_model())
    _one_sentence_naming(caught.value, folder / file)


def test_the_untampered_export_loads_and_predicts(written):
    model = load_exported(written / "export", model=toy_model())
    assert sum(isinstance(m, SparseLayer) for m in model.modules()) == 3
    assert model(toy_data().test.x).shape == (16, 3)


def test_check_csr_accepts_a_valid_structure_and_names_what_is_wrong():
    # 2 x 4: row 0 holds columns 1 and 3, row 1 holds column 0
    values, indptr = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0, 2, 3], dtype=torch.int32)
    indices = torch.tensor([1, 3, 0], dtype=torch.int32)
    check_csr("L", 2, 4, values, indptr, indices)
    check_csr("L", 2, 4, values[:0], torch.zeros(3, dtype=torch.int32), indices[:0])  # all empty
    with pytest.raises(UserError, match="sparse layer L: column index 4 is outside 0..3"):
        check_csr("L", 2, 4, values, indptr, torch.tensor([1, 4, 0], dtype=torch.int32))
    with pytest.raises(UserError, match="rise strictly within each row"):
        check_csr("L", 2, 4, values, indptr, torch.tensor([3, 1, 0], dtype=torch.int32))
    with pytest.raises(UserError, match="indptr must rise from 0 to 3"):
        check_csr("L", 2, 4, values, torch.tensor([0, 3, 2], dtype=torch.int32), indices)
