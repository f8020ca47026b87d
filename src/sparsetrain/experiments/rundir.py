"""The folder of one run, ``<root>/<config_hash>/seed_<n>/``: config, metrics, checkpoints."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

from sparsetrain.atomic import atomic_write_text
from sparsetrain.errors import UserError
from sparsetrain.experiments.store import finite, json_default, to_json


FOLDER_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What a config hash (a run folder name) may be: no separators, no dots, so no ``../``."""


class RunDir:
    """Paths and small files of the run with config hash ``config_hash`` and seed ``seed``."""

    def __init__(self, root: str | os.PathLike[str], config_hash: str, seed: int) -> None:
        # both may come from stored text (a store row): never let them climb out of root
        if not isinstance(config_hash, str) or not FOLDER_NAME.fullmatch(config_hash):
            raise UserError(f"config hash {config_hash!r} is not a run folder name (letters, digits, "
                            "'-' and '_' only); the results store may be damaged")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise UserError(f"seed {seed!r} is not a whole number; the results store may be damaged")
        self.root = Path(root)
        self.config_hash = config_hash
        self.seed = int(seed)

    @property
    def path(self) -> Path:
        return self.root / self.config_hash / f"seed_{self.seed}"

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint_dir / "last.pt"

    @property
    def lock_path(self) -> Path:
        """The file a training process locks (`RunLock`): one writer per run."""
        return self.path / "run.lock"

    def create(self) -> RunDir:
        """Make the run folder and its checkpoint folder; returns self."""
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        return self

    def write_config(self, config: dict[str, Any]) -> Path:
        """Write ``config`` as YAML (sorted keys) to `config_path`, atomically."""
        plain = json.loads(to_json(config))  # tuples, numpy and torch values -> plain YAML types
        text = yaml.safe_dump(plain, sort_keys=True, default_flow_style=False)
        return atomic_write_text(self.config_path, text)

    def read_config(self) -> dict[str, Any]:
        """The config written by `write_config`."""
        with open(self.config_path, encoding="utf-8") as f:
            return yaml.safe_load(f) or {}

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append ``record`` as one JSON line to `metrics_path`."""
        line = json.dumps(finite(record), default=json_default, sort_keys=True, allow_nan=False) + "\n"
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def read_metrics(self) -> list[dict[str, Any]]:
        """The metric records in order; a torn last line (from a crash) is skipped."""
        if not self.metrics_path.exists():
            return []
        records = []
        with open(self.metrics_path, encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict):
                    records.append(record)
        return records

    def remove_temporary(self) -> list[Path]:
        """Delete the ``.<name>.*.tmp`` files that an atomic write killed midway left in the run
        folder and its checkpoint folder (call it under the run's lock); returns them."""
        stale = [p for folder in (self.path, self.checkpoint_dir) if folder.is_dir()
                 for p in folder.glob(".*.tmp") if p.is_file()]
        for path in stale:
            path.unlink(missing_ok=True)
        return stale

    def set_aside(self) -> None:
        """Move the checkpoint and metrics of a finished run aside before a ``--force`` retry."""
        for path in (self.last_checkpoint, self.metrics_path):
            if path.exists():
                os.replace(path, self._aside(path))

    def put_back(self) -> None:
        """Undo `set_aside` (the retry failed: the finished run's files return)."""
        for path in (self.last_checkpoint, self.metrics_path):
            if self._aside(path).exists():
                os.replace(self._aside(path), path)

    def drop_aside(self) -> None:
        """Delete what `set_aside` kept (the retry finished)."""
        for path in (self.last_checkpoint, self.metrics_path):
            self._aside(path).unlink(missing_ok=True)

    @staticmethod
    def _aside(path: Path) -> Path:
        return path.with_name(path.name + ".finished")

    def truncate_after_epoch(self, epoch: int) -> None:
        """Keep only the metric records with ``epoch <= epoch`` (and those without one), to resume."""
        records = self.read_metrics()
        kept = [r for r in records if r.get("epoch") is None or r["epoch"] <= epoch]
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
        atomic_write_text(self.metrics_path, text)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"
