"""One writer per run: an exclusive file lock on the run folder while the run trains.

`filelock` (already installed with torch) takes an ``flock`` on POSIX and a ``msvcrt``
lock on Windows. The operating system drops the lock when its process dies, however it
dies (SIGKILL included), so a killed run never leaves a lock that blocks its resume.
"""

from __future__ import annotations

import os
from pathlib import Path

import filelock

from sparsetrain.errors import RunHeldError


class RunLock:
    """Held around the training of one run; entering raises `RunHeldError` at once (no
    waiting) when another process holds it."""

    def __init__(self, path: str | os.PathLike[str], run_id: str) -> None:
        self.path = Path(path)
        self.run_id = run_id
        self._lock = filelock.FileLock(self.path, timeout=0)

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise RunHeldError(f"run {self.run_id} is being trained by another process (it holds "
                               f"{str(self.path)!r}); skipping it") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
