"""Progress of a run: one line per finished trial, and on a terminal a live line of the trials running."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.errors import is_write_fault
from search.study.states import count_states
from search.study.trial_attrs import FAIL_REASON_ATTR, PRUNED_REASON_ATTR, RUNG_ATTR

CLEAR_TO_END = "\x1b[K"  # ANSI: erase the rest of the line, so a shorter live line leaves no tail


def quiet_optuna() -> list[logging.Handler]:
    """Our own progress lines replace Optuna's per-trial log and its experimental-feature warnings, for
    the whole process (a Ray worker's); returns the handlers that were given a ShortWriteFaults filter."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # the parallel driver creates trials with study.ask and workers keep their heartbeats
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return shorten_write_fault_logs()  # a trial failed by a full disk: one line, not a traceback


@contextlib.contextmanager
def optuna_quieted() -> Iterator[None]:
    """quiet_optuna while in effect; Optuna's verbosity, the warning filters and the log handlers come back after."""
    verbosity = optuna.logging.get_verbosity()
    with warnings.catch_warnings():
        filtered = quiet_optuna()
        try:
            yield
        finally:
            optuna.logging.set_verbosity(verbosity)
            for handler in filtered:
                for found in [f for f in handler.filters if isinstance(f, ShortWriteFaults)]:
                    handler.removeFilter(found)


class ShortWriteFaults(logging.Filter):
    """Drops the traceback from a log record about a full disk or a read-only folder (Optuna's "Trial N
    failed ... because of the following error: OSError(28, ...)"): its one line says it, and the command
    ends with one line naming the path."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None and is_write_fault(record.exc_info[1]):
            record.exc_info, record.exc_text = None, None
        return True


def shorten_write_fault_logs() -> list[logging.Handler]:
    """Put ShortWriteFaults on Optuna's log handlers, once; returns those it was put on now."""
    optuna.logging.get_verbosity()  # makes Optuna set up its handler, if it has not yet
    added = []
    for handler in logging.getLogger("optuna").handlers:
        if not any(isinstance(f, ShortWriteFaults) for f in handler.filters):
            handler.addFilter(ShortWriteFaults())
            added.append(handler)
    return added


class HideInterruptedTrial(logging.Filter):
    """While in effect, hides Optuna's warnings (with a traceback) about a trial cut short by Ctrl-C.

    The command says "interrupted" itself; once a KeyboardInterrupt is seen, everything Optuna still
    logs is about that interruption.
    """

    def __init__(self) -> None:
        super().__init__()
        self.interrupted = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is not None and issubclass(record.exc_info[0], KeyboardInterrupt):
            self.interrupted = True
        return not self.interrupted

    def __enter__(self) -> HideInterruptedTrial:
        optuna.logging.get_verbosity()  # makes Optuna set up its handler, if it has not yet
        for handler in logging.getLogger("optuna").handlers:
            handler.addFilter(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handler in logging.getLogger("optuna").handlers:
            handler.removeFilter(self)


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def plural(count: int, word: str, many: str | None = None) -> str:
    """'1 epoch', '3 epochs'; `many` for a word that does not just add an s ('retries')."""
    return f"{count} {word}" if count == 1 else f"{count} {many or word + 's'}"


@dataclass(frozen=True)
class RunningTrial:
    """Where a running trial is: its last finished epoch, the accuracy then, and its training speed."""

    number: int
    family: str
    epochs: int  # its budget
    epoch: int | None = None  # None: still in its first epoch
    val_accuracy: float | None = None
    images_per_second: float | None = None
    rows: str | None = None  # with rungs: the rows of the rung it trains, e.g. "4200 rows"
    rung: str | None = None  # read by a Ray driver from a rung study: the rung it trains, e.g. "4200 rows x 4 epochs"

    @classmethod
    def from_trial(cls, trial: FrozenTrial, epochs: int, by_rungs: bool = False) -> RunningTrial:
        """As the study records it: what a Ray driver can see of its workers. The objective reports every
        epoch under an epoch pruner, but only every finished rung (steps 1, 3, 9) under rungs."""
        step = trial.last_step
        last = None if step is None else trial.intermediate_values[step]
        speed = trial.user_attrs.get("images_per_second")
        family = trial.user_attrs.get("family", "?")
        if by_rungs:
            return cls(trial.number, family, epochs, None, last, speed, rung=trial.user_attrs.get(RUNG_ATTR))
        return cls(trial.number, family, epochs, step, last, speed)

    def describe(self) -> str:
        where = f"trial {self.number} {self.family}"
        speed = "" if self.images_per_second is None else f", {self.images_per_second:,.0f} images/s"
        if self.rung is not None:
            before = "" if self.val_accuracy is None else f" (rung before: val {self.val_accuracy:.2%})"
            return f"{where} on {self.rung}{speed}{before}"
        if self.epoch is None:
            return f"{where} in epoch 1/{self.epochs}"
        rows = "" if self.rows is None else f" on {self.rows}"
        accuracy = "" if self.val_accuracy is None else f" val {self.val_accuracy:.2%}"
        return f"{where} epoch {self.epoch}/{self.epochs}{rows}{accuracy}{speed}"


class Progress:
    """Optuna callback: prints done/pruned/failed, best accuracy, elapsed and ETA after each trial.

    On a terminal it also keeps a live line of the running trials (`show_running`), rewritten in
    place and replaced by the next finished-trial line; piped output gets only the finished lines.
    """

    def __init__(
        self,
        target: int,
        already_finished: int,
        out: TextIO = sys.stdout,
        timeout: float | None = None,
        live: bool | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout  # seconds after which no new trial starts
        self.started = time.monotonic()
        self.finished_at_start = already_finished
        self.out = out
        self.live = out.isatty() if live is None else live
        self.live_shown = False

    def show_running(self, running: list[RunningTrial]) -> None:
        """Rewrite the live line (terminal only)."""
        if not self.live or not running:
            return
        self.out.write("\r" + " | ".join(trial.describe() for trial in running) + CLEAR_TO_END)
        self.out.flush()
        self.live_shown = True

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        counts = count_states(study.get_trials(deepcopy=False))
        finished = counts["complete"] + counts["pruned"]
        elapsed = time.monotonic() - self.started
        ran_here = max(finished - self.finished_at_start, 1)
        per_trial = elapsed / ran_here
        eta = per_trial * max(self.target - finished, 0)
        if self.timeout is not None and finished < self.target:
            # trials stop starting at the timeout; the last one started then runs on a while
            eta = min(eta, max(self.timeout - elapsed, 0) + per_trial)
        best = _best_value(study)
        outcome = _describe(trial)
        if self.live_shown:
            self.out.write("\r" + CLEAR_TO_END)
            self.live_shown = False
        self.out.write(
            f"[{finished}/{self.target}] trial {trial.number} {outcome} | "
            f"done {counts['complete']} pruned {counts['pruned']} failed {counts['fail']} | "
            f"best {best} | elapsed {format_duration(elapsed)} ETA {format_duration(eta)}\n"
        )
        self.out.flush()


def _best_value(study: optuna.Study) -> str:
    try:
        return f"{study.best_value:.2%}"
    except ValueError:
        return "-"


def _describe(trial: FrozenTrial) -> str:
    family = trial.user_attrs.get("family", "?")
    if trial.state == TrialState.COMPLETE:
        return f"{family} val {trial.value:.2%} ({trial.user_attrs.get('train_seconds', 0):.0f}s)"
    if trial.state == TrialState.PRUNED:
        if PRUNED_REASON_ATTR in trial.user_attrs:
            return f"{family} pruned, {trial.user_attrs[PRUNED_REASON_ATTR]}"
        step = trial.last_step
        if step is None:
            return f"{family} pruned before its first epoch ended"
        if RUNG_ATTR in trial.user_attrs:
            return f"{family} screened out on {trial.user_attrs[RUNG_ATTR]} ({trial.intermediate_values[step]:.2%})"
        return f"{family} pruned at epoch {step} ({trial.intermediate_values[step]:.2%})"
    return f"{family} {trial.state.name}: {trial.user_attrs.get(FAIL_REASON_ATTR, 'no reason recorded')}"
