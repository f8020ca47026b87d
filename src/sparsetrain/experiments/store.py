"""The SQLite results store: one row per run, one row per (run, epoch).

Runs are keyed by ``<config_hash>/seed_<n>`` (the same identity as their run folder), so a
sweep can skip finished runs and the reporting layer can rebuild every table from disk.
The database is in WAL mode, so readers (reports) never block a writing training run.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from sparsetrain.errors import UserError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    config_hash TEXT NOT NULL,
    seed INTEGER NOT NULL,
    method TEXT,
    model TEXT,
    dataset TEXT,
    density REAL,
    config TEXT,
    status TEXT NOT NULL,
    started_at REAL,
    finished_at REAL,
    duration_s REAL,
    final TEXT,
    layers TEXT,
    error TEXT
);
CREATE TABLE IF NOT EXISTS epochs (
    run_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    PRIMARY KEY (run_id, epoch)
);
CREATE INDEX IF NOT EXISTS runs_by_hash ON runs (config_hash);
CREATE TABLE IF NOT EXISTS links (
    run_id TEXT NOT NULL,
    parent_run TEXT,
    experiment TEXT NOT NULL DEFAULT '',
    level INTEGER,
    PRIMARY KEY (run_id, experiment)
);
"""
# `links` ties a run to the run it was derived from (pruned, fine-tuned, rewound) and to a
# multi-run experiment (a lottery-ticket sequence: one run per level; a run may belong to
# several, e.g. one dense level 0 shared by lotteries that rewind differently; '' = none).
# It is created by
# CREATE TABLE IF NOT EXISTS on every open, so stores written before it existed gain it
# on their next open without a schema-version change.

_JSON_COLUMNS = ("config", "final", "layers")
FILTER_KEYS = ("method", "model", "dataset", "config_hash", "seed", "density")
STATUSES = ("running", "finished", "failed", "diverged", "interrupted")
# running: being trained (or killed without a chance to say so: SIGKILL, power loss);
# finished: a result; failed: stopped by an error; diverged: stopped by a non-finite loss
# (never a result: reports list it but never average it); interrupted: stopped by SIGINT or
# SIGTERM (Ctrl-C, `timeout`, SLURM), resumable from its last checkpoint.
STOPPED = ("failed", "diverged", "interrupted")


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, +-inf) inside dicts, lists and tuples
    replaced by None, so that it is valid JSON (which has no NaN) for SQLite's JSON functions."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def json_default(value: Any) -> Any:
    """``json.dumps`` hook for numpy/torch scalars and arrays, paths and sets."""
    if hasattr(value, "tolist"):  # numpy scalars and arrays, torch tensors
        return finite(value.tolist())
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def to_json(value: Any) -> str:
    """Compact JSON text of ``value``, converting numpy/torch values to plain Python and
    non-finite numbers to null (see `finite`)."""
    return json.dumps(finite(value), default=json_default, sort_keys=True, separators=(",", ":"),
                      allow_nan=False)


def store_error(path: Path, exc: BaseException) -> UserError:
    """One sentence for a store SQLite cannot open or write: a full disk says so."""
    text = str(exc)
    if "full" in text or "disk I/O" in text or getattr(exc, "errno", None) == errno.ENOSPC:
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            free = 0
        if "full" in text or free < 1 << 20:
            return UserError(f"no space left on {str(path.parent)!r} (writing {path.name}); "
                             "free some space and run again")
        return UserError(f"cannot write the results store {str(path)!r}: {text}")
    return UserError(f"{str(path)!r} is not a results store: {text}")


def run_reference(text: str) -> str:
    """A run id or prefix from what a user types: ``<hash>/seed_0``, or the run folder that
    `train` prints (``runs/<hash>/seed_0``, absolute or with a trailing slash)."""
    parts = [p for p in str(text).replace("\\", "/").split("/") if p not in ("", ".")]
    if len(parts) >= 2 and parts[-1].startswith("seed_"):
        return "/".join(parts[-2:])
    return str(text)


class ResultsStore:
    """Results of every run in one SQLite file, created (with its folders) on first use."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._db: sqlite3.Connection | None = None

    # -- identity -------------------------------------------------------------------------

    @staticmethod
    def run_id(config_hash: str, seed: int) -> str:
        """The id of seed ``seed`` of the config with hash ``config_hash``."""
        return f"{config_hash}/seed_{seed}"

    # -- writing --------------------------------------------------------------------------

    def start(
        self,
        run_id: str,
        *,
        config_hash: str,
        seed: int,
        config: dict[str, Any],
        resume_from_epoch: int | None = None,
    ) -> None:
        """Mark ``run_id`` running; drop all its epochs, or those after ``resume_from_epoch``."""
        row = (
            run_id, config_hash, int(seed), config.get("method"), config.get("model"),
            config.get("dataset"), _float_or_none(config.get("density")), to_json(config),
            time.time(),
        )
        with self._write() as db:
            db.execute(
                """INSERT INTO runs (run_id, config_hash, seed, method, model, dataset, density,
                                     config, status, started_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', ?)
                   ON CONFLICT (run_id) DO UPDATE SET
                     config_hash = excluded.config_hash, seed = excluded.seed,
                     method = excluded.method, model = excluded.model,
                     dataset = excluded.dataset, density = excluded.density,
                     config = excluded.config, status = 'running',
                     started_at = excluded.started_at, finished_at = NULL,
                     duration_s = NULL, final = NULL, layers = NULL, error = NULL""",
                row,
            )
            if resume_from_epoch is None:
                db.execute("DELETE FROM epochs WHERE run_id = ?", (run_id,))
            else:
                db.execute(
                    "DELETE FROM epochs WHERE run_id = ? AND epoch > ?",
                    (run_id, int(resume_from_epoch)),
                )

    def log_epoch(self, run_id: str, epoch: int, metrics: dict[str, Any]) -> None:
        """Record (or replace) the metrics of one epoch of ``run_id``."""
        with self._write() as db:
            db.execute(
                """INSERT INTO epochs (run_id, epoch, metrics) VALUES (?, ?, ?)
                   ON CONFLICT (run_id, epoch) DO UPDATE SET metrics = excluded.metrics""",
                (run_id, int(epoch), to_json(metrics)),
            )

    def finish(
        self,
        run_id: str,
        final: dict[str, Any],
        layers: list[dict[str, Any]],
        *,
        duration_s: float | None = None,
    ) -> None:
        """Mark ``run_id`` finished with its final metrics and per-layer statistics.

        ``duration_s`` defaults to the wall time since `start`.
        """
        now = time.time()
        with self._write() as db:
            cursor = db.execute(
                """UPDATE runs SET status = 'finished', finished_at = ?,
                     duration_s = COALESCE(?, ? - started_at), final = ?, layers = ?, error = NULL
                   WHERE run_id = ?""",
                (now, _float_or_none(duration_s), now, to_json(final), to_json(layers), run_id),
            )
            _require_row(cursor, run_id)

    def fail(self, run_id: str, error: str) -> None:
        """Mark ``run_id`` failed with the error message ``error``."""
        self.stop(run_id, "failed", error)

    def stop(self, run_id: str, status: str, error: str) -> None:
        """Mark ``run_id`` stopped with ``status`` (one of `STOPPED`) and the message ``error``."""
        if status not in STOPPED:
            raise ValueError(f"status must be one of {', '.join(STOPPED)}; got {status!r}")
        now = time.time()
        with self._write() as db:
            cursor = db.execute(
                """UPDATE runs SET status = ?, finished_at = ?, duration_s = ? - started_at,
                     error = ? WHERE run_id = ?""",
                (status, now, now, str(error), run_id),
            )
            _require_row(cursor, run_id)

    def restore(self, run: dict[str, Any], epochs: Sequence[dict[str, Any]]) -> None:
        """Put back a run row as `get_run` returned it and its `epochs` (e.g. the finished
        result that a failed ``--force`` retry must not replace)."""
        columns = [c for c in run if c != "run_id"]
        values = [to_json(run[c]) if c in _JSON_COLUMNS and run[c] is not None else run[c]
                  for c in columns]
        with self._write() as db:
            cursor = db.execute(
                f"UPDATE runs SET {', '.join(f'{c} = ?' for c in columns)} WHERE run_id = ?",
                (*values, run["run_id"]))
            _require_row(cursor, run["run_id"])
            db.execute("DELETE FROM epochs WHERE run_id = ?", (run["run_id"],))
            db.executemany("INSERT INTO epochs (run_id, epoch, metrics) VALUES (?, ?, ?)",
                           [(run["run_id"], int(e["epoch"]), to_json(e)) for e in epochs])

    # -- reading --------------------------------------------------------------------------

    def is_finished(self, run_id: str) -> bool:
        """Whether ``run_id`` exists and finished."""
        row = self._conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return row is not None and row["status"] == "finished"

    def find_run(self, prefix: str, *, finished: bool = False) -> dict[str, Any]:
        """The one run whose id starts with ``prefix``; a UserError when none or several match
        (or, with ``finished``, when that run has not finished)."""
        prefix = run_reference(prefix)
        matches = [r for r in self.runs(status=None) if r["run_id"].startswith(prefix)]
        if len(matches) != 1:
            found = "no run matches" if not matches else f"{len(matches)} runs match"
            raise UserError(f"{found} {prefix!r}; give more of the run id (see `sparsetrain report`)")
        if finished and matches[0]["status"] != "finished":
            raise UserError(f"run {matches[0]['run_id']} is {matches[0]['status']}, not finished")
        return matches[0]

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """The run's row as a dict with its JSON columns decoded, or None if unknown."""
        row = self._conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else _decode_run(row)

    def runs(self, status: str | None = "finished", **filters: Any) -> list[dict[str, Any]]:
        """Runs with ``status`` (None: any) matching ``filters``, oldest first.

        Filter keys are in `FILTER_KEYS`; a value may be one value or a list/tuple of values.
        """
        if status is not None and status not in STATUSES:
            raise UserError(f"status must be one of {', '.join(STATUSES)}; got {status!r}")
        unknown = sorted(set(filters) - set(FILTER_KEYS))
        if unknown:
            raise UserError(
                f"unknown run filter {unknown[0]!r}; allowed filters: {', '.join(FILTER_KEYS)}"
            )
        clauses: list[str] = []
        params: list[Any] = []
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        for key in FILTER_KEYS:
            if key not in filters:
                continue
            value = filters[key]
            values: Sequence[Any] = value if isinstance(value, (list, tuple)) else (value,)
            if not values:
                return []
            clauses.append(f"{key} IN ({', '.join('?' * len(values))})")
            params.extend(values)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._conn.execute(
            f"SELECT * FROM runs {where} ORDER BY started_at, run_id", params
        ).fetchall()
        return [_decode_run(row) for row in rows]

    def epochs(self, run_id: str) -> list[dict[str, Any]]:
        """Per-epoch metrics of ``run_id`` in epoch order, each with an ``epoch`` key."""
        rows = self._conn.execute(
            "SELECT epoch, metrics FROM epochs WHERE run_id = ? ORDER BY epoch", (run_id,)
        ).fetchall()
        return [
            {"epoch": row["epoch"], **_without_epoch(json.loads(row["metrics"]))} for row in rows
        ]

    def link(self, run_id: str, *, parent_run: str | None = None, experiment: str | None = None,
             level: int | None = None) -> None:
        """Record (or replace) where ``run_id`` came from, within ``experiment`` (None: outside
        any): its parent run and level."""
        with self._write() as db:
            db.execute(
                """INSERT INTO links (run_id, parent_run, experiment, level) VALUES (?, ?, ?, ?)
                   ON CONFLICT (run_id, experiment) DO UPDATE SET parent_run = excluded.parent_run,
                     level = excluded.level""",
                (run_id, parent_run, experiment or "", None if level is None else int(level)),
            )

    def links(self, *, experiment: str | None = None, parent_run: str | None = None,
              run_id: str | None = None) -> list[dict[str, Any]]:
        """Link rows (run_id, parent_run, experiment, level), filtered, by experiment and level."""
        clauses, params = [], []
        for key, value in (("experiment", experiment), ("parent_run", parent_run), ("run_id", run_id)):
            if value is not None:
                clauses.append(f"{key} = ?")
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._conn.execute(
            f"SELECT * FROM links {where} ORDER BY experiment, level, run_id", params).fetchall()
        return [{**dict(row), "experiment": row["experiment"] or None} for row in rows]

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (a later call opens it again)."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.path)!r})"

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = self._open()
        return self._db

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are opened explicitly in `_write`.
        db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif int(row["value"]) != SCHEMA_VERSION:
                db.execute("ROLLBACK")
                raise UserError(
                    f"results store {self.path} has schema version {row['value']}; "
                    f"this sparsetrain reads version {SCHEMA_VERSION}"
                )
            db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            db.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise store_error(self.path, exc) from None
            raise
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._conn
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if "full" in str(exc) or "disk I/O" in str(exc):  # ENOSPC, as SQLite reports it
                raise store_error(self.path, exc) from None
            raise


def _decode_run(row: sqlite3.Row) -> dict[str, Any]:
    run = dict(row)
    for key in _JSON_COLUMNS:
        if run[key] is not None:
            run[key] = json.loads(run[key])
    return run


def _without_epoch(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k != "epoch"}


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _require_row(cursor: sqlite3.Cursor, run_id: str) -> None:
    if cursor.rowcount == 0:
        raise KeyError(f"no run {run_id!r} in the results store; call start() first")
