"""Every use of Optuna's private API, in one place.

Optuna keeps these behind underscores, so a minor release may move any of them. Nothing else in the
project reaches past Optuna's public API; tests/test_optuna_internals.py checks each one on the
installed Optuna, and CHECKED_ON names the versions that passed it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, BinaryIO, Protocol

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages._heartbeat import get_heartbeat_thread
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState

CHECKED_ON = ("5.1.0",)

# The heartbeat table: Optuna reads it only to fail stale trials; we read it to tell a live trial from a lost one.
HEARTBEAT_TABLE = models.TrialHeartbeatModel
heartbeat_thread = get_heartbeat_thread  # (trial_id, storage) -> a context manager that beats while the trial runs


class ArtifactStore(Protocol):
    """What every Optuna artifact store implements (Optuna's own Protocol is private)."""

    def open_reader(self, artifact_id: str) -> BinaryIO: ...

    def write(self, artifact_id: str, content_body: BinaryIO) -> None: ...

    def remove(self, artifact_id: str) -> None: ...


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (its number counts within one study; the id across all of them)."""
    return trial._trial_id


def study_id(study: optuna.Study) -> int:
    return study._study_id


def study_storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    return study._storage


def queued_params(trial: FrozenTrial) -> dict[str, Any]:
    """The params a waiting trial was queued with (study.enqueue_trial), before it suggested any."""
    return dict(trial.system_attrs.get("fixed_params") or {})


class WaitingOrderStudy(optuna.Study):
    """A study that chooses which waiting trial runs next, by `waiting_order`.

    Optuna pops waiting trials in the order they were queued; study.ask and study.optimize both
    take the next one through `Study._pop_waiting_trial_id`, the one hook this overrides.
    """

    def waiting_order(self, waiting: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        """The waiting trials in the order to try them (queue order here)."""
        return list(waiting)

    def _pop_waiting_trial_id(self) -> int | None:
        waiting = self._storage.get_all_trials(self._study_id, deepcopy=False, states=(TrialState.WAITING,))
        for trial in self.waiting_order(waiting):
            try:
                # False or UpdateFinishedTrialError: another process took this trial first
                if self._storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING):
                    return trial._trial_id
            except UpdateFinishedTrialError:
                continue
        return None
