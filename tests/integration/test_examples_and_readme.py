"""The README's promises: the own-loop example works and CI runs the README's test command."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_own_loop_example_trains_a_sparse_mlp(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSETRAIN_CACHE", str(tmp_path))
    spec = importlib.util.spec_from_file_location("own_loop", ROOT / "examples" / "own_loop.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    accuracy, density = example.main(epochs=5)
    assert abs(density - 0.1) < 1e-3
    assert accuracy > 0.5  # 10 classes: chance is 0.1


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = next(line.strip() for line in readme.splitlines() if "python -m pytest" in line)
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert command in ci_lines
    assert command.startswith("pip install torch==2.13.0")
