"""A wall-clock budget read off one clock, with the time each phase took."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from search.config import Deadline
from search.study.progress import format_duration


@dataclass
class Clock:
    """Seconds used and left of a budget, and the time each phase took."""

    budget: float
    started: float = field(default_factory=time.monotonic)
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def used(self) -> float:
        return time.monotonic() - self.started

    @property
    def left(self) -> float:
        return max(0.0, self.budget - self.used)

    def spent(self, phase: str, seconds: float) -> None:
        self.phases[phase] = self.phases.get(phase, 0.0) + seconds

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Count the time of the block as `name`'s, also when it is cut short (Ctrl-C)."""
        started = self.used
        try:
            yield
        finally:
            self.spent(name, self.used - started)

    def deadline(self, reserve: float = 0.0) -> Deadline:
        """The moment the budget ends, less `reserve` seconds kept for what comes after: what a phase hands down."""
        return self.moment(self.budget - reserve)

    def moment(self, used: float) -> Deadline:
        """The moment this clock reads `used` seconds used."""
        return Deadline.after(used - self.used)

    def status(self) -> str:
        return f"{format_duration(self.used)} used, {format_duration(self.left)} left of {format_duration(self.budget)}"
