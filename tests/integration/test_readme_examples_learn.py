"""Every `sparsetrain train` example in the README reaches the test accuracy printed next to it.

The README writes the figure in the command's comment (``# test accuracy about 82%``); this
test runs each such command exactly as shown (plus ``--out`` and ``--no-progress``) and
requires the stored test accuracy to be at least the figure minus 5 points. Commands that
need files we do not ship (``--data-dir``), that only show a flag (``...``, ``--config``) or
that evaluate robustness (``--robust-eval``: a ResNet under attack, minutes each; the README
gives their measured figures in the text) carry no figure; every other training command
must carry one.
"""

import re
import shlex
from pathlib import Path

import pytest

from sparsetrain.cli import main
from sparsetrain.experiments import ResultsStore

ROOT = Path(__file__).resolve().parents[2]
FIGURE = re.compile(r"test accuracy about (\d+)%")
MARGIN = 0.05


def readme_train_commands() -> list[tuple[str, str]]:
    """(command, comment) of every `sparsetrain train` line in the README's bash blocks,
    continuation lines joined."""
    commands, in_bash, pending = [], False, ""
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("```"):
            in_bash = line.strip() == "```bash"
            continue
        if not in_bash:
            continue
        line = pending + line.strip() if pending else line.strip()
        if line.endswith("\\"):
            pending = line[:-1].strip() + " "
            continue
        pending = ""
        command, _, comment = line.partition("#")
        if command.startswith("sparsetrain train"):
            commands.append((command.strip(), comment))
    return commands


def needs_a_figure(command: str) -> bool:
    return not any(mark in command for mark in ("...", "--config", "--data-dir", "--robust-eval"))


EXAMPLES = [(c, int(FIGURE.search(comment).group(1))) for c, comment in readme_train_commands()
            if FIGURE.search(comment)]


def test_every_runnable_training_example_states_its_accuracy():
    missing = [c for c, comment in readme_train_commands() if needs_a_figure(c) and not FIGURE.search(comment)]
    assert not missing, f"README training commands without 'test accuracy about N%': {missing}"
    assert len(EXAMPLES) >= 10


@pytest.mark.parametrize("command, figure", EXAMPLES, ids=[str(i) for i in range(len(EXAMPLES))])
def test_readme_example_reaches_the_stated_accuracy(command, figure, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSETRAIN_CACHE", str(tmp_path / "cache"))
    assert main(shlex.split(command)[1:] + ["--out", str(tmp_path), "--no-progress"]) == 0
    with ResultsStore(tmp_path / "results.db") as store:
        runs = store.runs()
    assert len(runs) == 1
    accuracy = runs[0]["final"]["test_acc"]
    assert accuracy >= figure / 100 - MARGIN, f"{command}: {accuracy:.1%}, README says about {figure}%"
