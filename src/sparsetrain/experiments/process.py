"""Process lifetime: SIGTERM stops a run as Ctrl-C does, and workers die with their parent.

SLURM, ``timeout`` and ``kill`` send SIGTERM, whose default action ends Python without
running any ``finally``; turned into `Terminated` (a KeyboardInterrupt), the runner marks the
run ``interrupted`` and the CLI exits with 128 + the signal number. A bench worker asks the
kernel for SIGTERM when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``; elsewhere a
thread watches the parent's pid), so killing only the parent never leaves workers training.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from typing import Any

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (``signum`` says which signal)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


def interrupt_on_terminate() -> Any:
    """From now on SIGTERM raises `Terminated` in the main thread; returns the previous handler
    (for `signal.signal`). Outside the main thread (where Python cannot set handlers) it does
    nothing and returns None."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """128 + the signal number, the shell's convention (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + getattr(interrupt, "signum", signal.SIGINT)


def exit_with_parent(parent_pid: int, poll_s: float = 0.5) -> None:
    """Send this process SIGTERM when the process ``parent_pid`` (its parent) ends."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0:
                if os.getppid() != parent_pid:  # it died before prctl took effect
                    os.kill(os.getpid(), signal.SIGTERM)
                return
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def parent_alive(parent_pid: int) -> bool:
    """Whether ``parent_pid`` is still this process's parent."""
    return os.getppid() == parent_pid
