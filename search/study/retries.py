"""Trials cut short: failed with their reason, queued again a bounded number of times, and run first.

A trial is cut short when the process running it dies (a Ray worker or node lost, an OOM kill, a
SIGKILL of the whole run) or when Ctrl-C stops it. Its config is queued again as a new trial whose
`retry_of` attr names the trial it repeats, so the chain of attempts can be traced. A config whose
process died MAX_PROCESS_LOSSES times is failed for good: it is what kills its process, and
retrying it on every later run would stop the study from progressing. Ctrl-C does not count.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

import optuna
import sqlalchemy
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.orm import Session

from search.study import optuna_internals as internals
from search.study.storage import GRACE_SECONDS
from search.study.trial_attrs import (
    FAIL_REASON_ATTR,
    HOSTNAME_ATTR,
    INTERRUPTED,
    PID_ATTR,
    PROCESS_LOST_ATTR,
    RETRY_OF_ATTR,
)

MAX_PROCESS_LOSSES = 2  # a config whose process died this many times is not queued again
MAX_REASON_CHARS = 500


class RetriesFirstStudy(internals.WaitingOrderStudy):
    """A study whose queue hands out retries before other waiting trials (references, enqueued configs).

    Optuna pops waiting trials in the order they were queued, so the retry of a trial cut short
    would wait behind every reference queued before it.
    """

    def waiting_order(self, waiting: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        return sorted(waiting, key=lambda t: RETRY_OF_ATTR not in t.user_attrs)  # stable: queue order otherwise


def config_of(trial: FrozenTrial) -> dict[str, Any]:
    """The params a trial trains: its suggested ones, or, before it suggested any, those it was queued with."""
    return dict(trial.params) or internals.queued_params(trial)


def enqueue_retry(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Queue `trial`'s config to run again (first, see RetriesFirstStudy); False when it has no params to repeat."""
    params = config_of(trial)
    if params:
        study.enqueue_trial(params, user_attrs={RETRY_OF_ATTR: trial.number})
    return bool(params)


def earlier_process_losses(trials: list[FrozenTrial], trial: FrozenTrial) -> list[int]:
    """Numbers of the trials before `trial` in its retry_of chain whose process died running them."""
    by_number = {t.number: t for t in trials}
    numbers: list[int] = []
    current = by_number.get(trial.user_attrs.get(RETRY_OF_ATTR))
    while current is not None and current.number not in numbers:
        if current.user_attrs.get(PROCESS_LOST_ATTR):
            numbers.append(current.number)
        current = by_number.get(current.user_attrs.get(RETRY_OF_ATTR))
    return sorted(numbers)


def fail_cut_trial(
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    trial_id: int,
    reason: str,
    *,
    process_lost: bool,
    retry: bool = True,
) -> bool:
    """Fail a RUNNING trial that was cut short, saying why, and queue its config again within the bound.

    `process_lost`: the process running it died (counts towards MAX_PROCESS_LOSSES); else it was
    interrupted, or (retry=False) broke in a way a retry would repeat. Returns False, doing nothing,
    when the trial had already ended: another process (the trial's own worker, or a second run
    settling it) got there first, and only one retry is queued.
    """
    frozen = storage.get_trial(trial_id)
    if frozen.state != TrialState.RUNNING:
        return False
    retry = retry and bool(config_of(frozen))
    if process_lost:
        losses = [*earlier_process_losses(study.get_trials(deepcopy=False), frozen), frozen.number]
        if len(losses) >= MAX_PROCESS_LOSSES:
            retry = False
            reason = (
                f"process died {len(losses)} times with these params (trials {', '.join(map(str, losses))}), "
                f"not retried again; last: {reason}"
            )
    try:
        storage.set_trial_user_attr(trial_id, FAIL_REASON_ATTR, reason[:MAX_REASON_CHARS])
        if process_lost:
            storage.set_trial_user_attr(trial_id, PROCESS_LOST_ATTR, True)
        storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False
    if retry:
        enqueue_retry(study, frozen)
    return True


def retry_interrupted(study: optuna.Study) -> None:
    """Enqueue the config of every trial Ctrl-C cut short that no trial retries yet, so the next run trains it first."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(RETRY_OF_ATTR) for t in trials}
    for trial in trials:
        if trial.user_attrs.get(FAIL_REASON_ATTR) == INTERRUPTED and trial.number not in retried:
            enqueue_retry(study, trial)


def record_owner(storage: optuna.storages.BaseStorage, trial_id: int) -> None:
    """Record this process as the one running the trial, and its first heartbeat.

    The Ray driver calls this as it creates a trial, so a trial whose worker has not started yet
    is still tied to a live process; the worker records itself when it starts the trial.
    """
    storage.set_trial_user_attr(trial_id, HOSTNAME_ATTR, socket.gethostname())
    storage.set_trial_user_attr(trial_id, PID_ATTR, os.getpid())
    record_heartbeats(storage, [trial_id])


def record_heartbeats(storage: optuna.storages.BaseStorage, trial_ids: Collection[int]) -> None:
    if isinstance(storage, optuna.storages.RDBStorage) and storage.get_heartbeat_interval():
        for trial_id in trial_ids:
            storage.record_heartbeat(trial_id)


def reconcile_lost_trials(
    study: optuna.Study,
    storage: optuna.storages.RDBStorage,
    *,
    running_here: Collection[int] = (),
    grace: float | None = None,
) -> list[int]:
    """Fail the study's RUNNING trials whose process is gone, queueing their configs again; their numbers.

    A trial is gone when the process it records on this machine no longer exists, or when its last
    heartbeat (or its start, if it never had one) is older than the grace period. Optuna's own
    stale check skips trials without a heartbeat, such as those a killed Ray driver had created
    for workers that never started. Trials of another live run sharing the study keep their
    heartbeats fresh and are left alone; `running_here` are trial ids this process runs itself.
    """
    grace = float(grace if grace is not None else storage.grace_period or GRACE_SECONDS)
    running = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if internals.trial_id(t) not in running_here
    ]
    if not running:
        return []
    heartbeats, database_now = last_heartbeats(storage, [internals.trial_id(t) for t in running])
    settled = []
    for trial in running:
        reason = why_gone(trial, heartbeats.get(internals.trial_id(trial)), database_now, grace)
        if reason is not None and fail_cut_trial(study, storage, internals.trial_id(trial), reason, process_lost=True):
            settled.append(trial.number)
    return settled


def why_gone(trial: FrozenTrial, heartbeat: datetime | None, database_now: datetime, grace: float) -> str | None:
    """Why a RUNNING trial's process is gone, or None while it may still be running."""
    pid = trial.user_attrs.get(PID_ATTR)
    if trial.user_attrs.get(HOSTNAME_ATTR) == socket.gethostname() and isinstance(pid, int):
        # this process lists the trials it runs in running_here: finding its own pid here means a pid reused
        if pid == os.getpid() or not process_exists(pid):
            return f"its process (pid {pid} on this machine) is gone"
    # a live process keeps its trials' heartbeats fresh, so a stale one also catches a pid reused since
    if heartbeat is not None:  # both times from the database's clock
        silent = (database_now - heartbeat).total_seconds()
        return f"no heartbeat for {silent:.0f}s (grace {grace:g}s): its process is gone" if silent > grace else None
    if trial.datetime_start is None:
        return None
    silent = (datetime.now() - trial.datetime_start).total_seconds()  # both from a client's clock
    return (
        f"no heartbeat in the {silent:.0f}s since it started (grace {grace:g}s): its process is gone"
        if silent > grace
        else None
    )


def last_heartbeats(storage: optuna.storages.RDBStorage, trial_ids: list[int]) -> tuple[dict[int, datetime], datetime]:
    """Each trial's last heartbeat (if it has one) and the database's time now, as naive datetimes."""
    beat = internals.HEARTBEAT_TABLE
    with Session(storage.engine) as session:
        now = session.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar_one()
        rows = session.execute(
            sqlalchemy.select(beat.trial_id, beat.heartbeat).where(beat.trial_id.in_(trial_ids))
        ).all()
    return {trial_id: time.replace(tzinfo=None) for trial_id, time in rows}, now.replace(tzinfo=None)


def process_exists(pid: int) -> bool:
    """Whether process `pid` runs on this machine (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):  # not Linux, or it ended just now
        return True
