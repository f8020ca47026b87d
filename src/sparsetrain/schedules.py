"""When dynamic sparse training rewires, and how much: small frozen dataclasses."""

from __future__ import annotations

import math
from dataclasses import dataclass

ANNEALING = ("cosine", "linear", "constant", "step")


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
    """A fraction that decays from ``initial`` at step 0 to ``floor`` at step ``stop`` (0 after).

    cosine: floor + (initial − floor)/2 · (1 + cos(π t / stop))  (Evci et al. 2020, eq. 1;
    GraNet's ``CosineDecay`` with eta_min = floor);  linear: floor + (initial − floor)(1 − t / stop);
    constant: initial until ``stop``;  step (MEST's released scripts: 160 epochs, the rate halved
    at epoch 90 and 0 from 120 on): initial for t < 0.75 · stop, then initial / 2.
    """

    initial: float
    stop: int
    kind: str = "cosine"
    floor: float = 0.0

    def at(self, step: int) -> float:
        if step > self.stop or (step == self.stop and self.kind == "step"):
            return 0.0
        if step == self.stop and self.kind != "constant":
            return self.floor
        t = step / self.stop
        if self.kind == "cosine":
            return self.floor + (self.initial - self.floor) / 2 * (1 + math.cos(math.pi * t))
        if self.kind == "linear":
            return self.floor + (self.initial - self.floor) * (1 - t)
        if self.kind == "step":
            return self.initial if t < 0.75 else self.initial / 2
        return self.initial


@dataclass(frozen=True)
class CubicSchedule:
    """Gradual pruning (Zhu & Gupta 2017, eq. 1), written for density d = 1 − sparsity:

        d_t = d_f + (d_i − d_f) · (1 − (t − t0) / (n Δt))³   for t0 ≤ t ≤ t0 + n Δt,

    d_i before t0 and d_f after. Pruning happens after steps t0 + j·Δt, j = 1..n
    (at t0 itself the density is still d_i).
    """

    initial: float
    final: float
    start: int
    interval: int
    rounds: int

    @property
    def end(self) -> int:
        """The step of the last pruning update, where the density reaches ``final``."""
        return self.start + self.rounds * self.interval

    def is_update(self, step: int) -> bool:
        offset = step - self.start
        return 0 < offset <= self.rounds * self.interval and offset % self.interval == 0

    def at(self, step: int) -> float:
        progress = min(max((step - self.start) / (self.rounds * self.interval), 0.0), 1.0)
        return self.final + (self.initial - self.final) * (1 - progress) ** 3
