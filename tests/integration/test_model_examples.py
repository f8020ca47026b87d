"""The GPT-2 (HF Trainer, Lightning) and mixed-precision examples run, at tiny sizes."""

import importlib.util
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example


@pytest.mark.parametrize("name", ["hf_gpt2_rigl", "lightning_rigl"])
def test_gpt2_examples_train_dense_static_and_rigl(name, capsys):
    results = load(name).main(steps=3, chars=6000, block=16, batch=4)
    assert set(results) == {"dense", "static", "rigl"}
    chance = math.log(98)  # the character vocabulary
    for r in results.values():
        assert r["val_loss"] < chance
    for method in ("static", "rigl"):
        assert results[method]["density"] == pytest.approx(0.2, abs=1e-4)
        states = {row["name"]: row["state"] for row in results[method]["summary"]}
        assert states["transformer.h.1.attn.c_attn.weight"] == "sparse"
        assert states["transformer.h.1.mlp.c_fc.weight"] == "sparse"
        assert states["transformer.wte.weight"].startswith("dense (tied to")
    out = capsys.readouterr().out
    assert "validation loss" in out and "rigl" in out and "left dense:" in out


def test_amp_own_loop_example_trains_under_the_grad_scaler(capsys):
    accuracy, density, skipped = load("amp_own_loop").main(epochs=4)
    assert density == pytest.approx(0.1, abs=1e-3)
    assert skipped == 0  # bfloat16 on the CPU never overflows
    assert accuracy > 0.4  # 10 classes: chance is 0.1
    assert "skipped by the scaler" in capsys.readouterr().out
