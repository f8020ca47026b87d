"""The README's promises: the own-loop example works and CI runs the README's test command."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_own_loop_example_trains_a_sparse_mlp(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSETRAIN_CACHE", str(tmp_path))
    spec = importlib.util.spec_from_file_location("own_loop", ROOT / "examples" / "own_loop.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    accuracy, density = example.main()  # as `python examples/own_loop.py` runs it
    assert abs(density - 0.1) < 1e-3
    readme = (ROOT / "README.md").read_text()
    figure = int(re.search(r"own_loop\.py`\s+prints a test accuracy of about (\d+)%", readme).group(1))
    assert accuracy >= figure / 100 - 0.05


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = next(line.strip() for line in readme.splitlines() if "python -m pytest" in line)
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert command in ci_lines
    assert command.startswith("pip install torch==2.13.0")


def test_robustness_example_reports_corruption_and_pgd_accuracy(capsys):
    spec = importlib.util.spec_from_file_location("robustness", ROOT / "examples" / "robustness.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    results = example.main(epochs=1, corruptions=["gaussian_noise", "contrast"])
    assert set(results) == {"dense", "set 0.3"}
    assert abs(results["set 0.3"]["density"] - 0.3) < 1e-3
    for run in results.values():
        assert set(run["corruptions"].accuracy) == {"gaussian_noise", "contrast"}
        assert all(0 <= a <= 1 for accs in run["corruptions"].accuracy.values() for a in accs)
        assert set(run["robust"]) == set(example.ATTACKS)
    printed = capsys.readouterr().out
    assert "mean corruption acc" in printed and "PGD-20 Linf 8/255" in printed
