"""Training from scratch by a deadline, for as many epochs as the first epoch says fit.

A run cut off by its deadline would be lost whole (its schedule is set for more steps than it
got), so the first epoch is timed: when the planned epochs would not fit, or when they would leave
room for half as many again, the run starts again from scratch at the number of epochs that fits.
`auto`'s final training and `digit-search train --budget` both train this way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from search.config import Deadline
from search.train.models import build_model
from search.train.trainer import EpochReport, OutOfTime, TrainingData, TrainResult, train
from spaces import Candidate, Space

PACE_MARGIN = 1.1  # epochs after the first may run a little slower (a busier machine)
RESTART_GAIN = 1.5  # a run restarts to use the time it would leave when that allows this many times its epochs
MAX_TIMED_EPOCHS = 40  # the most a run sized by its time gets: the strongest public notebooks trained 30 to 45


class OffPace(Exception):
    """The first epoch's time says another number of epochs fits by the deadline."""

    def __init__(self, epoch_seconds: float) -> None:
        super().__init__(f"{epoch_seconds:.1f}s an epoch")
        self.epoch_seconds = epoch_seconds


def fitting_epochs(seconds: float, epoch_seconds: float) -> int:
    """Epochs of `epoch_seconds` each that fit in `seconds`, with PACE_MARGIN to spare."""
    return math.floor(seconds / (epoch_seconds * PACE_MARGIN))


def off_pace(epochs: int, time_limit: float, first_epoch_seconds: float, most: int | None = None) -> bool:
    """Whether a run planned for `epochs` should start again after its first epoch took `first_epoch_seconds`:
    the plan would overrun `time_limit`, or the time it leaves would fit RESTART_GAIN times as many epochs (at most `most`)."""
    if first_epoch_seconds * epochs * PACE_MARGIN > time_limit:
        return True
    fitting = fitting_epochs(time_limit - first_epoch_seconds, first_epoch_seconds)
    if most is not None:
        fitting = min(fitting, most)
    return fitting >= RESTART_GAIN * epochs


@dataclass(frozen=True)
class TimedTraining:
    """A run trained by its deadline (`result`), or why not (`problem`)."""

    epochs: int  # of the run that counts: the restarted one, if any (0: gave up before training it)
    seconds: float  # the run's training time; when it gave up, the time spent
    result: TrainResult | None
    problem: str | None = None
    restarted: bool = False  # the first epoch's pace started it again at `epochs`


def train_in_time(
    space: Space,
    candidate: Candidate,
    seed: int,
    data: TrainingData,
    epochs: int,
    deadline: Deadline,
    *,
    least: int = 1,
    most: int | None = None,
    on_epoch: Callable[[EpochReport, int], None] | None = None,
    on_restart: Callable[[str], None] | None = None,
) -> TimedTraining:
    """Train `candidate` from scratch on `data` by `deadline`: `epochs` epochs, or as many as its first
    epoch's pace says fit (at most `most`); fewer than `least` is not worth it and gives up, saying why,
    as does a restarted run that still overruns.

    on_epoch(report, planned epochs) sees every epoch, a discarded start's first one too;
    on_restart(message) says why a run starts again.
    """
    run = _TimedRun(space, candidate, seed, data, most, on_epoch)
    started = time.monotonic()
    try:
        return run.once(epochs, deadline, check_pace=True)
    except OffPace as pace:
        left = deadline.left()
        fitting = fitting_epochs(left, pace.epoch_seconds)
        if most is not None:
            fitting = min(fitting, most)
        if fitting < least:
            problem = f"{pace} leaves time for {fitting} epochs, under {least}"
            return TimedTraining(0, time.monotonic() - started, None, problem)
        if on_restart is not None:
            on_restart(f"{pace}: starting again with {fitting} epochs instead of {epochs} to fit {left:.0f}s")
        timed = run.once(fitting, deadline, check_pace=False)
        return TimedTraining(timed.epochs, timed.seconds, timed.result, timed.problem, restarted=True)


@dataclass(frozen=True)
class _TimedRun:
    """What every start of one timed training shares."""

    space: Space
    candidate: Candidate
    seed: int
    data: TrainingData
    most: int | None
    on_epoch: Callable[[EpochReport, int], None] | None

    def once(self, epochs: int, deadline: Deadline, check_pace: bool) -> TimedTraining:
        time_limit = deadline.left()  # as the run starts: what its first epoch's pace is judged against
        model = build_model(self.space, self.candidate, self.seed).to(self.data.device)

        def watch(report: EpochReport) -> None:
            if self.on_epoch is not None:
                self.on_epoch(report, epochs)
            if check_pace and report.epoch == 1 and off_pace(epochs, time_limit, report.seconds, self.most):
                raise OffPace(report.seconds)

        config = self.candidate.train
        try:
            result = train(model, self.data, config, epochs=epochs, seed=self.seed, on_epoch=watch, deadline=deadline)
        except OutOfTime as err:
            return TimedTraining(epochs, time_limit, None, f"out of its {time_limit:.0f}s: {err}")
        return TimedTraining(epochs, result.train_seconds, result)
