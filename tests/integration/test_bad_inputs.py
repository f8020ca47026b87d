"""Every bad input is one sentence (issue 14, section 5).

Each case runs the CLI in-process through `main` from an empty working folder and checks:
exit code 2; stderr is exactly one line, ``sparsetrain: error: ...``, naming the field or
file (``needle``); no traceback and never torch's advice to load with weights_only=False;
nothing written in the working folder (a file the case prepared stays as it was).
A few cases run as real subprocesses to prove the exit code of the installed entry point.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import pickle
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest
import torch

from sparsetrain.cli import main

TINY = ["--model", "mlp", "--dataset", "digits", "--epochs", "1", "--batch-size", "256",
        "--no-progress", "--model-options", "{widths: [8]}"]
BAD_NUMBERS = ("nan", "inf", "-inf", "1e308", "abc")


def _numeric_fields(method: str) -> list[tuple[str, bool]]:
    """(field, is a list) of every int/float key a config for ``method`` has."""
    from sparsetrain.algorithms import config_class
    from sparsetrain.engine import TrainConfig
    from sparsetrain.experiments.spec import ExperimentConfig

    found = []
    for cls in (ExperimentConfig, TrainConfig, config_class(method)):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            if hint in (int, float) or (args and args[0] in (int, float) and typing.get_origin(hint) is not tuple):
                found.append((f.name, False))
            elif typing.get_origin(hint) is tuple and typing.get_args(hint)[0] in (int, float):
                found.append((f.name, True))
    return found


def _choice_fields(method: str) -> list[str]:
    from sparsetrain.experiments.spec import config_fields

    return [f.name for f in config_fields(method) if f.metadata.get("choices") and f.name != "method"]


def _generated() -> list[tuple[str, list[str], str, str | None]]:
    """Non-finite, overflowing and non-numeric values for every numeric flag of a few
    methods, and an unknown value for every choice flag."""
    cases, seen = [], set()
    for method in ("rigl", "gmp", "granet", "pai", "prune-dp", "mest"):
        for name, _ in _numeric_fields(method):
            for value in BAD_NUMBERS:
                if (name, value) in seen:
                    continue
                seen.add((name, value))
                flag = f"--{name.replace('_', '-')}"
                cases.append((f"{method}{flag}={value}", ["train", "--method", method] + TINY + [f"{flag}={value}"],
                              name, None))
        for name in _choice_fields(method):
            if (name, "bogus") not in seen:
                seen.add((name, "bogus"))
                cases.append((f"{method}--{name}=bogus", ["train", "--method", method] + TINY +
                              [f"--{name.replace('_', '-')}", "bogus"], name, None))
    return cases


# -- prepared files --------------------------------------------------------------------


def _npz(folder: Path, **arrays) -> None:
    folder.mkdir()
    np.savez(folder / "data.npz", **arrays)


def _pair(n=20, classes=2, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)).astype(np.float32), np.arange(n) % classes


def setup_npz_label_1e9(tmp):
    x, y = _pair()
    y = y.astype(np.int64)
    y[3] = 1_000_000_000
    _npz(tmp / "data", x=x, y=y)


def setup_npz_nan(tmp):
    x, y = _pair()
    x[2, 1] = np.nan
    _npz(tmp / "data", x=x, y=y)


def setup_npz_inf_test(tmp):
    x, y = _pair()
    xt, yt = _pair(10, seed=1)
    xt[0, 0] = np.inf
    _npz(tmp / "data", x_train=x, y_train=y, x_test=xt, y_test=yt)


def setup_npz_one_class(tmp):
    x, _ = _pair()
    xt, yt = _pair(10, seed=1)
    _npz(tmp / "data", x_train=x, y_train=np.zeros(20, np.int64), x_test=xt, y_test=yt)


def setup_npz_unseen_test_label(tmp):
    x, y = _pair()
    xt, _ = _pair(6, seed=1)
    _npz(tmp / "data", x_train=x, y_train=y, x_test=xt, y_test=np.array([0, 1, 0, 1, 2, 7]))


def setup_npz_fractional_label(tmp):
    x, _ = _pair()
    _npz(tmp / "data", x=x, y=np.linspace(0, 1, 20))


def _ucr(tmp, value):
    folder = tmp / "data" / "Toy"
    folder.mkdir(parents=True)
    rows = [[c] + list(np.sin(np.arange(8) + c + i)) for i in range(6) for c in (1, 2)]
    test_rows = [list(r) for r in rows]
    rows[4][3] = value
    for name, table in (("Toy_TRAIN.tsv", rows), ("Toy_TEST.tsv", test_rows)):
        (folder / name).write_text("\n".join("\t".join(str(v) for v in r) for r in table) + "\n")


def setup_ucr_inf(tmp):
    _ucr(tmp, "inf")


def setup_ucr_minus_inf(tmp):
    _ucr(tmp, "-inf")


def setup_config_not_utf8(tmp):
    (tmp / "c.yaml").write_bytes("method: rigl\nmodel: m\xe9lp\n".encode("latin-1"))


def setup_config_python_tag(tmp):
    (tmp / "c.yaml").write_text("method: !!python/object/apply:os.system ['echo hi']\n")


def setup_config_list(tmp):
    (tmp / "c.yaml").write_text("- rigl\n- set\n")


def setup_config_nan_lr(tmp):
    (tmp / "c.yaml").write_text("method: rigl\nlr: .nan\n")


def setup_config_unknown_key(tmp):
    (tmp / "c.yaml").write_text("method: rigl\ndensty: 0.1\n")


def setup_out_file(tmp):
    (tmp / "taken").write_text("not a folder\n")


def setup_html_dir(tmp):
    (tmp / "report_dir").mkdir()


def setup_malicious_checkpoint(tmp):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"model": {"w": torch.zeros(1)}, "evil": Evil()}, tmp / "evil.pt")


def setup_damaged_checkpoint(tmp):
    (tmp / "evil.pt").write_bytes(b"PK\x03\x04 this is not a zip archive")


def setup_cifar_evil(tmp):
    folder = tmp / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({b"data": eval, b"labels": [0]}, protocol=2))


def setup_grid_file(tmp):
    (tmp / "grid.yaml").write_text("methods: [dense]\nseeds: [-1]\nbase: {epochs: 1}\n")


def setup_grid_tag(tmp):
    (tmp / "grid.yaml").write_text("methods: !!python/name:os.system\n")


def setup_data_file(tmp):
    (tmp / "afile").write_text("x")


DATA = ["--data-dir", "data", "--model", "mlp", "--epochs", "1", "--no-progress"]

LISTED = [  # the reproductions of issue 14 section 5, then more
    ("epochs-nan", ["train", "--model", "mlp", "--dataset", "digits", "--epochs", "nan"], "epochs", None),
    ("epochs-inf", ["train", "--epochs", "inf"], "epochs", None),
    ("seed-negative", ["train", "--seed", "-1"] + TINY, "seed", None),
    ("seed-1e30", ["train", "--seed", "1e30"] + TINY, "seed", None),
    ("seed-2**32", ["train", "--seed", str(2**32)] + TINY, "seed", None),
    ("lr-1e308", ["train", "--lr", "1e308"] + TINY, "lr", None),
    ("lr-inf", ["train", "--lr", "inf"] + TINY, "lr", None),
    ("lr-minus-inf-as-next-word", ["train", "--lr", "-inf"] + TINY, "--lr=-1", None),
    ("weight-decay-inf", ["train", "--weight-decay", "inf"] + TINY, "weight_decay", None),
    ("lr-gamma-negative", ["train", "--lr-gamma", "-1"] + TINY, "lr_gamma", None),
    ("lr-gamma-zero", ["train", "--lr-gamma", "0"] + TINY, "lr_gamma", None),
    ("erk-power-inf", ["train", "--erk-power", "inf"] + TINY, "erk_power", None),
    ("device-cuda-7", ["train", "--device", "cuda:7"] + TINY, "cuda:7", None),
    ("device-tpu", ["train", "--device", "tpu"] + TINY, "device", None),
    ("compile-sparse-backend", ["train", "--method", "static", "--backend", "sparse", "--compile"] + TINY,
     "backend=masked", None),
    ("device-garbage", ["train", "--device", "gpu please"] + TINY, "device", None),
    ("config-not-utf8", ["train", "--config", "c.yaml"], "c.yaml", setup_config_not_utf8),
    ("config-python-tag", ["train", "--config", "c.yaml"], "c.yaml", setup_config_python_tag),
    ("config-a-list", ["train", "--config", "c.yaml"], "c.yaml", setup_config_list),
    ("config-nan-lr", ["train", "--config", "c.yaml"] + TINY, "lr", setup_config_nan_lr),
    ("config-unknown-key", ["train", "--config", "c.yaml"], "did you mean density", setup_config_unknown_key),
    ("config-missing", ["train", "--config", "nope.yaml"], "nope.yaml", None),
    ("out-is-a-file", ["train", "--out", "taken"] + TINY, "taken", setup_out_file),
    ("out-below-a-file", ["train", "--out", "taken/runs"] + TINY, "taken", setup_out_file),
    ("model-widths-1e9", ["train", "--method", "dense", "--model", "mlp", "--dataset", "digits",
                          "--model-options", "{widths: [1000000000]}"], "parameters", None),
    ("model-widths-float", ["train", "--method", "dense", "--model", "mlp", "--dataset", "digits",
                            "--model-options", "{widths: [1.0e9]}"], "model_options", None),
    ("model-options-unknown", ["train", "--model", "mlp", "--dataset", "digits",
                               "--model-options", "{widht: [8]}"], "widht", None),
    ("model-options-python-tag", ["train", "--model-options", "{widths: !!python/name:os.system}"],
     "model-options", None),
    ("model-options-not-yaml", ["train", "--model-options", "{widths: [8"], "model-options", None),
    ("model-options-a-list", ["train", "--model-options", "[8, 8]"], "model_options", None),
    ("dataset-options-unknown", ["train", "--dataset", "digits", "--dataset-options", "{bogus: 1}"] + TINY[:2],
     "bogus", None),
    ("report-html-dir", ["report", "--html", "report_dir"], "report_dir", setup_html_dir),
    ("report-plot-dir", ["report", "--plot", "report_dir"], "report_dir", setup_html_dir),
    ("report-html-no-folder", ["report", "--html", "missing/r.html"], "missing", None),
    ("report-no-store", ["report"], "results.db", None),
    ("export-to-a-file", ["export", "abc/seed_0", "--to", "taken"], "taken", setup_out_file),
    ("export-dest-a-file", ["export", "abc/seed_0", "--dest", "taken"], "taken", setup_out_file),
    ("export-no-store", ["export", "abc/seed_0"], "results.db", None),
    ("show-no-store", ["show", "runs/abc/seed_0"], "results.db", None),
    ("lottery-rewind-epoch-nan", ["lottery", "--rewind", "epoch", "--rewind-epoch", "nan"] + TINY,
     "rewind_epoch", None),
    ("lottery-rewind-epoch-inf", ["lottery", "--rewind", "epoch", "--rewind-epoch", "inf"] + TINY,
     "rewind_epoch", None),
    ("lottery-prune-fraction-nan", ["lottery", "--prune-fraction", "nan"] + TINY, "prune_fraction", None),
    ("lottery-levels-1e30", ["lottery", "--levels", "1e30"] + TINY, "levels", None),
    ("lottery-pools-nan", ["lottery", "--pools", "nan"] + TINY, "--pools", None),
    ("npz-label-1e9", ["train", "--dataset", "npz"] + DATA, "data.npz", setup_npz_label_1e9),
    ("npz-nan", ["train", "--dataset", "npz"] + DATA, "data.npz", setup_npz_nan),
    ("npz-inf-in-test", ["train", "--dataset", "npz"] + DATA, "x_test", setup_npz_inf_test),
    ("npz-one-class", ["train", "--dataset", "npz"] + DATA, "only class", setup_npz_one_class),
    ("npz-unseen-test-label", ["train", "--dataset", "npz"] + DATA, "test labels 2, 7", setup_npz_unseen_test_label),
    ("npz-fractional-labels", ["train", "--dataset", "npz"] + DATA, "data.npz", setup_npz_fractional_label),
    ("ucr-inf", ["train", "--dataset", "ucr", "--dataset-options", "{name: Toy}"] + DATA, "Toy_TRAIN.tsv",
     setup_ucr_inf),
    ("ucr-minus-inf", ["train", "--dataset", "ucr", "--dataset-options", "{name: Toy}"] + DATA, "Toy_TRAIN.tsv",
     setup_ucr_minus_inf),
    ("cifar-evil-pickle", ["train", "--dataset", "cifar10", "--dataset-options", "{verify: false}"] + DATA,
     "data_batch_1", setup_cifar_evil),
    ("malicious-checkpoint", ["train", "--method", "prune-global", "--checkpoint", "evil.pt"] + TINY,
     "evil.pt", setup_malicious_checkpoint),
    ("damaged-checkpoint", ["train", "--method", "prune-global", "--checkpoint", "evil.pt"] + TINY,
     "evil.pt", setup_damaged_checkpoint),
    ("bench-negative-seed", ["bench", "--methods", "dense", "--seeds", "-1"], "seeds", None),
    ("bench-seed-huge", ["bench", "--methods", "dense", "--seeds", "99999999999"], "seeds", None),
    ("bench-grid-negative-seed", ["bench", "grid.yaml"], "seed", setup_grid_file),
    ("bench-grid-python-tag", ["bench", "grid.yaml"], "grid.yaml", setup_grid_tag),
    ("bench-data-dir-missing", ["bench", "--methods", "dense", "--data-dir", "nowhere"], "nowhere", None),
    ("bench-data-dir-a-file", ["bench", "--methods", "dense", "--data-dir", "afile"], "afile", setup_data_file),
    ("bench-jobs-zero", ["bench", "--methods", "dense", "--jobs", "0"], "jobs", None),
    ("bench-jobs-nan", ["bench", "--methods", "dense", "--jobs", "nan"], "--jobs", None),
    ("bench-threads-zero", ["bench", "--methods", "dense", "--threads", "0"], "--threads", None),
    ("bench-devices-not-there", ["bench", "--methods", "dense", "--devices", "0,1"], "--devices names GPU 0", None),
    ("bench-devices-garbage", ["bench", "--methods", "dense", "--devices", "a,b"], "--devices", None),
    ("bench-densities-nan", ["bench", "--methods", "rigl", "--densities", "nan"], "--densities", None),
    ("bench-density-1.5", ["bench", "--methods", "rigl", "--densities", "1.5"], "density", None),
    ("bench-device", ["bench", "--methods", "dense", "--set", "device=cuda:7"], "cuda:7", None),
    ("bench-set-python-tag", ["bench", "--methods", "dense", "--set", "lr=!!python/name:os.system"], "lr=", None),
    ("bench-set-unknown", ["bench", "--methods", "dense", "--set", "epoch=3"], "epoch", None),
    ("bench-preset-unknown", ["bench", "--preset", "nope"], "nope", None),
    ("bench-out-file", ["bench", "--methods", "dense", "--out", "taken"], "taken", setup_out_file),
    ("quickstart-epochs-0", ["quickstart", "--epochs", "0"], "--epochs", None),
    ("quickstart-epochs-nan", ["quickstart", "--epochs", "nan"], "--epochs", None),
    ("quickstart-seeds-bad", ["quickstart", "--seeds", "a,b"], "--seeds", None),
    ("quickstart-seeds-negative", ["quickstart", "--seeds", "-3"], "--seeds", None),
    ("quickstart-out-file", ["quickstart", "--out", "taken"], "taken", setup_out_file),
    ("prune-method-unknown", ["prune", "x", "--method", "prune-bogus", "--density", "0.5"], "prune-bogus", None),
    ("prune-density-nan", ["prune", "x", "--method", "prune-global", "--density", "nan"], "--density", None),
    ("prune-both-density-sparsity", ["prune", "x", "--method", "prune-global", "--density", "0.5",
                                     "--sparsity", "0.5"], "--sparsity", None),
    ("prune-finetune-inf", ["prune", "x", "--method", "prune-global", "--density", "0.5",
                            "--finetune-epochs", "inf"], "--finetune-epochs", None),
    ("train-unknown-flag", ["train", "--lerning-rate", "0.1"], "--lerning-rate", None),
    ("train-flag-typo", ["train", "--update-intervall", "5"], "did you mean --update-interval", None),
    ("train-stray-word", ["train", "foo"], "unexpected argument 'foo'", None),
    ("train-old-flag-for-another-method", ["train", "--method", "rigl", "--end-fraction", "0.5"],
     "did you mean", None),
    ("train-unknown-method", ["train", "--method", "rigl2"], "rigl2", None),
    ("train-unknown-model", ["train", "--model", "resnet9000"], "resnet9000", None),
    ("train-seeds-bad", ["train", "--seeds", "1,x"] + TINY, "--seeds", None),
    ("train-seeds-negative", ["train", "--seeds", "0,-1"] + TINY, "--seeds", None),
    ("train-sparsity-1", ["train", "--method", "rigl", "--sparsity", "1"] + TINY, "sparsity", None),
    ("train-sparsity-nan", ["train", "--method", "rigl", "--sparsity", "nan"] + TINY, "sparsity", None),
    ("train-density-and-sparsity", ["train", "--method", "rigl", "--density", "0.1", "--sparsity", "0.9"] + TINY,
     "sparsity", None),
    ("train-bool-garbage", ["train", "--nesterov", "maybe"] + TINY, "nesterov", None),
    ("train-list-nan", ["train", "--lr-milestones", "0.5,nan"] + TINY, "lr_milestones", None),
    ("train-warmup-inf", ["train", "--warmup-epochs", "inf"] + TINY, "warmup_epochs", None),
    ("train-batch-size-0", ["train", "--batch-size", "0"] + TINY[:4], "batch_size", None),
    ("train-epochs-1e30", ["train", "--epochs", "1e30"] + TINY[:4], "epochs", None),
    ("train-val-fraction-1", ["train", "--val-fraction", "1"] + TINY, "val_fraction", None),
    ("train-data-dir-missing", ["train", "--dataset", "npz", "--data-dir", "nowhere"] + TINY[:2], "nowhere", None),
    ("list-unknown", ["list", "nothing"], "nothing", None),
    ("soup-no-store", ["soup", "a", "b"], "results.db", None),
    ("unknown-command", ["trian"], "trian", None),
]

CASES = LISTED + _generated()


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


def run_case(tmp: Path, argv: list[str], setup, capsys) -> tuple[int, str]:
    work = tmp / "work"
    work.mkdir()
    if setup is not None:
        setup(work)
    before = _snapshot(work)
    cwd = os.getcwd()
    os.chdir(work)
    try:
        code = main(argv)
    except SystemExit as exc:  # never expected: argparse's own exit
        code = f"SystemExit({exc.code})"
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err
    assert _snapshot(work) == before, "the command wrote to disk"
    return code, err


@pytest.fixture(autouse=True)
def _cache(private_cache, monkeypatch):
    monkeypatch.setattr("sparsetrain.config._NOTED", set(), raising=False)


def test_the_sweep_is_large():
    assert len(CASES) >= 250
    assert len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize("argv, needle, setup", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_sentence(tmp_path, capsys, argv, needle, setup):
    code, err = run_case(tmp_path, argv, setup, capsys)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("sparsetrain: error: "), err
    assert needle in lines[0], err
    assert "Traceback" not in err and "weights_only=False" not in err


def test_disk_full_during_a_checkpoint_write_names_the_folder(tmp_path, monkeypatch, capsys):
    import sparsetrain.atomic as atomic

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.tempfile, "mkstemp", full)
    out = tmp_path / "runs"
    assert main(["train", "--method", "dense", "--out", str(out)] + TINY) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sparsetrain: error: no space left on ") and str(out) in err[0]


def test_disk_full_at_start_names_the_folder_not_a_broken_store(tmp_path, monkeypatch, capsys):
    import sqlite3

    from sparsetrain.experiments import store

    class FullDisk:  # what SQLite reports when the first page cannot be written
        row_factory = None
        in_transaction = False

        def execute(self, *args):
            raise sqlite3.OperationalError("database or disk is full")

        def close(self):
            pass

    def connect(*args, **kwargs):
        return FullDisk()

    monkeypatch.setattr(store.sqlite3, "connect", connect)
    out = tmp_path / "runs"
    assert main(["train", "--method", "dense", "--out", str(out)] + TINY) == 2
    err = capsys.readouterr().err
    assert f"no space left on {str(out)!r}" in err and "not a results store" not in err


@pytest.mark.parametrize("argv, needle", [
    (["train", "--model-options", "{widths: !!python/tuple [8]}"], "is not allowed"),
    (["bench", "--methods", "dense", "--data-dir", "nowhere"], "--data-dir 'nowhere' is not a folder"),
])
def test_the_installed_command_exits_2_with_one_line(tmp_path, argv, needle):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    result = subprocess.run([sys.executable, "-m", "sparsetrain.cli", *argv], capture_output=True, text=True,
                            cwd=tmp_path, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []
