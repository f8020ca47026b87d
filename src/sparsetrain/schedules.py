"""When dynamic sparse training rewires, and how much: small frozen dataclasses."""

from __future__ import annotations

import math
from dataclasses import dataclass

ANNEALING = ("cosine", "linear", "constant")


@dataclass(frozen=True)
class UpdateSchedule:
    """Topology updates every ``interval`` steps, up to and including step ``stop``."""

    interval: int
    stop: int

    def is_update(self, step: int) -> bool:
        """True if the mask changes after optimizer step number ``step`` (counted from 1)."""
        return step > 0 and step % self.interval == 0 and step <= self.stop


@dataclass(frozen=True)
class DecaySchedule:
    """A fraction that decays from ``initial`` at step 0 to 0 at step ``stop``.

    cosine: initial/2 · (1 + cos(π t / stop))  (Evci et al. 2020, eq. 1);
    linear: initial · (1 − t / stop);  constant: initial until ``stop``.
    """

    initial: float
    stop: int
    kind: str = "cosine"

    def at(self, step: int) -> float:
        if step >= self.stop:
            return 0.0 if self.kind != "constant" or step > self.stop else self.initial
        t = step / self.stop
        if self.kind == "cosine":
            return self.initial / 2 * (1 + math.cos(math.pi * t))
        if self.kind == "linear":
            return self.initial * (1 - t)
        return self.initial
