"""One vocabulary on the command line (issue 14, section 8): one name per concept, old
spellings as deprecated aliases that still work, sparsity = 1 - density, dense ignoring
sparsity options, readable help, and the run folder that `train` prints accepted by `show`."""

import io
import subprocess
import sys

import pytest
import yaml

from sparsetrain import config as config_module
from sparsetrain.cli import main
from sparsetrain.experiments import build_spec
from sparsetrain.experiments.runner import ProgressCallback

FAST = ["--model", "mlp", "--dataset", "digits", "--epochs", "1", "--batch-size", "256",
        "--no-progress", "--model-options", "{widths: [8]}"]


@pytest.fixture(autouse=True)
def _fresh_notes(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSETRAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(config_module, "_NOTED", set())


@pytest.mark.parametrize("method, old, new", [
    ("gmp", {"allocation": "global", "end_fraction": 0.5}, {"ranking": "global", "stop_fraction": 0.5}),
    ("pai", {"allocation": "layer"}, {"ranking": "layer"}),
    ("granet", {"allocation": "layer", "end_fraction": 0.6}, {"prune_ranking": "layer", "prune_stop_fraction": 0.6}),
])
def test_old_key_spellings_give_the_same_run_and_say_so_once(method, old, new, capsys):
    renamed = build_spec({"method": method, **old})
    again = build_spec({"method": method, **old})
    assert renamed.config_hash == again.config_hash == build_spec({"method": method, **new}).config_hash
    for key, value in new.items():
        assert getattr(renamed.method, key) == value
    notes = capsys.readouterr().err.splitlines()
    assert len(notes) == len(old) and all("deprecated" in n for n in notes)


def test_old_and_new_spelling_together_is_an_error():
    with pytest.raises(config_module.ConfigError, match="give ranking or its old name allocation"):
        build_spec({"method": "gmp", "allocation": "global", "ranking": "layer"})


def test_every_layer_vs_global_option_is_called_ranking_and_every_schedule_end_stop_fraction():
    from dataclasses import fields

    from sparsetrain.algorithms import METHODS, config_class

    for name in METHODS.names():
        keys = {f.name for f in fields(config_class(name))}
        assert "allocation" not in keys and "end_fraction" not in keys, name


def test_sparsity_is_one_minus_density_and_not_both():
    assert build_spec({"method": "rigl", "sparsity": 0.9}).method.density == 0.1
    assert build_spec({"method": "rigl", "sparsity": 0.9}).config_hash == \
        build_spec({"method": "rigl", "density": 0.1}).config_hash
    with pytest.raises(config_module.ConfigError, match="density or sparsity"):
        build_spec({"method": "rigl", "sparsity": 0.9, "density": 0.1})
    with pytest.raises(config_module.ConfigError, match=r"sparsity must be in \[0, 1\)"):
        build_spec({"method": "rigl", "sparsity": 1.0})


def test_dense_accepts_and_ignores_sparsity_options_with_a_note(tmp_path, capsys):
    spec = build_spec({"method": "dense", "density": 0.1, "update_interval": 5})
    assert spec.config_hash == build_spec({"method": "dense"}).config_hash
    assert "ignoring density, update_interval" in capsys.readouterr().err
    with pytest.raises(config_module.ConfigError, match="unknown config key 'widths'"):
        build_spec({"method": "dense", "widths": 3})
    out = tmp_path / "runs"
    assert main(["train", "--method", "dense", "--density", "0.1", "--sparsity", "0.5",
                 "--out", str(out)] + FAST) == 0
    assert "has no sparsity options; ignoring density, sparsity" in capsys.readouterr().err


def test_unknown_keys_show_the_closest_matches_not_every_key():
    with pytest.raises(config_module.ConfigError) as info:
        build_spec({"method": "rigl", "update_intervall": 5})
    message = str(info.value)
    assert "did you mean update_interval?" in message and "weight_decay" not in message


def test_boolean_flags_take_no_value_and_have_a_no_form(tmp_path):
    out = tmp_path / "runs"
    assert main(["train", "--method", "dense", "--nesterov", "--out", str(out)] + FAST) == 0
    assert main(["train", "--method", "dense", "--nesterov", "--no-nesterov", "--out", str(out)] + FAST) == 0
    assert main(["train", "--method", "dense", "--nesterov", "true", "--out", str(out)] + FAST) == 0  # old form
    configs = [yaml.safe_load(p.read_text()) for p in sorted(out.glob("*/seed_0/config.yaml"))]
    assert sorted(c["nesterov"] for c in configs) == [False, True]


def test_help_has_real_metavars_and_readable_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--method", "gmp", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert " V " not in text and "V]" not in text
    assert "--ranking global|layer|ratios" in text and "--stop-fraction X" in text and "--epochs N" in text
    assert "--sparsity X" in text and "--nesterov [true|false]" in text
    assert "[default: linf]" in text and "[default: 0.5,0.75]" in text and "('" not in text
    assert "--allocation" not in text and "--end-fraction" not in text  # accepted, not advertised


def test_top_level_help_lists_subcommands_and_version(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for command in ("train", "quickstart", "list", "report", "show", "prune", "lottery", "soup", "bench", "export"):
        assert f"\n  {command} " in text
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "sparsetrain 0.1.0"
    assert main(["trian"]) == 2
    assert "did you mean train?" in capsys.readouterr().err


def test_quickstart_help_says_90_percent_once(capsys):
    with pytest.raises(SystemExit):
        main(["quickstart", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "90% sparsity" in text and "%%" not in text


def test_list_presets(capsys):
    from sparsetrain.experiments.bench import list_presets

    assert main(["list", "presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "presets:" and [line.split()[0] for line in lines[1:]] == list_presets()
    assert all(len(line.split()) > 1 for line in lines[1:])  # each with a description


def test_show_prune_and_export_accept_what_train_prints(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["train", "--method", "rigl", "--sparsity", "0.5", "--update-interval", "2",
                 "--out", str(out)] + FAST) == 0
    printed = capsys.readouterr().out
    folder = printed.split("run folder ")[1].split()[0]
    assert folder.startswith(str(out)) and folder.endswith("seed_0")
    for reference in (folder, folder + "/", "runs/" + folder.split("runs/")[1]):
        assert main(["show", reference, "--out", str(out)]) == 0
        assert "status finished" in capsys.readouterr().out
    assert main(["show", "zzz", "--out", str(out)]) == 2
    assert "no run matches 'zzz'" in capsys.readouterr().err
    assert main(["prune", folder, "--method", "prune-global", "--sparsity", "0.75", "--finetune-epochs", "1",
                 "--out", str(out), "--no-progress"]) == 0
    assert "prune-global" in capsys.readouterr().out
    assert main(["show", "", "--out", str(out)]) == 2
    assert "2 runs match ''" in capsys.readouterr().err  # plural agreement
    assert main(["prune", folder, "--method", "global", "--density", "0.25", "--finetune-epochs", "1",
                 "--out", str(out), "--no-progress"]) == 0  # the old name still works (same run: skipped)
    assert "prune --method global is now spelled prune-global" in capsys.readouterr().err
    dest = tmp_path / "exported"
    assert main(["export", folder, "--out", str(out), "--dest", str(dest)]) == 0
    assert (dest / "model.json").is_file() or any(dest.iterdir())
    assert main(["export", folder, "--out", str(out), "--to", str(tmp_path / "old")]) == 0
    assert "export --to is now called --dest" in capsys.readouterr().err


def test_progress_is_one_line_per_epoch_when_stderr_is_not_a_terminal():
    from types import SimpleNamespace

    stream = io.StringIO()
    progress = ProgressCallback("rigl seed 0", stream=stream)
    trainer = SimpleNamespace(epoch=0, config=SimpleNamespace(epochs=3), history=[])
    progress.on_fit_start(trainer)
    for epoch in (1, 2, 3):
        trainer.epoch = epoch
        trainer.history.append({"train_loss": 1.0 / epoch, "val_acc": 0.5, "test_acc": 0.25})
        progress.on_epoch_end(trainer)
    progress.on_fit_end(trainer)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 3
    assert lines[1] == "rigl seed 0: epoch 2/3  loss 0.500  val 0.500  test 0.250"


def test_quickstart_rerun_says_skipped_not_training(tmp_path, monkeypatch):
    from sparsetrain import quickstart

    monkeypatch.setattr(quickstart, "METHODS", ("dense", "static"))
    monkeypatch.setitem(quickstart.SETTINGS, "batch_size", 256)
    monkeypatch.setitem(quickstart.SETTINGS, "model", "mlp")  # small and quick: the messages are the point
    monkeypatch.setitem(quickstart.SETTINGS, "dataset", "digits")
    monkeypatch.setattr(quickstart, "plot_comparison", lambda runs, path: path)
    monkeypatch.setattr(quickstart, "write_study_report", lambda runs, path, **kw: path)
    first, second = [], []
    quickstart.run_quickstart(tmp_path, epochs=1, progress=False, log=first.append)
    quickstart.run_quickstart(tmp_path, epochs=1, progress=False, log=second.append)
    assert [m for m in first if m.startswith("training")] == ["training dense (seed 0) ...",
                                                              "training static (seed 0) ..."]
    assert not any(m.startswith("training") for m in second)
    assert sum("already finished, skipped" in m for m in second) == 2


def test_import_and_top_level_help_do_not_load_torch():
    code = ("import sys, sparsetrain, sparsetrain.cli; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "sparsetrain.cli.main(['--help']); assert 'torch' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "commands:" in result.stdout


def test_a_reader_that_goes_away_is_no_traceback():
    """`sparsetrain list | head`: the pipe closes before the listing is written."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "sparsetrain.cli", "list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # nobody reads: the first write fails with EPIPE
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert proc.returncode == 1
