"""Trials cut short: retried at most once when their process died, run before other queued trials,
and found again after the run that owned them was killed."""

import io
import socket
import subprocess
import textwrap

import optuna
import pytest
from optuna.trial import TrialState

from search.config import RunSpec
from search.dispatch.run import run_study
from search.study import optuna_internals as internals
from search.study.retries import (
    MAX_PROCESS_LOSSES,
    RetriesFirstStudy,
    fail_cut_trial,
    reconcile_lost_trials,
    record_heartbeats,
)
from search.study.storage import open_storage
from search.study.trial_attrs import FAIL_REASON_ATTR, INTERRUPTED, PROCESS_LOST_ATTR, RETRY_OF_ATTR

INTERRUPTING_SPACE = '''
"""Two references; the first one's training is cut by a KeyboardInterrupt once, as Ctrl-C would."""
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from spaces.base import Reference

NAME = "cut"
MARKER = Path(__file__).with_suffix(".interrupt")


@dataclass(frozen=True)
class Config:
    width: int = 16


def suggest(trial):
    return Config(width=trial.suggest_categorical("cut.width", [16, 32]))


def params_of(config):
    return {"cut.width": config.width}


class Net(nn.Sequential):
    def forward(self, images):
        if self.training and MARKER.exists():
            MARKER.unlink()
            raise KeyboardInterrupt
        return super().forward(images)


def build(config):
    return Net(nn.Flatten(), nn.Linear(784, config.width), nn.ReLU(), nn.Linear(config.width, 10))


REFERENCES = {"a": Reference("a", Config(16)), "b": Reference("b", Config(32))}
'''


@pytest.fixture
def study(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    optuna.create_study(study_name="s", storage=storage, direction="maximize")
    return RetriesFirstStudy(study_name="s", storage=storage), storage


def running_trial(study, storage, params=None, **attrs):
    """A trial as a run leaves it RUNNING: created by study.ask, with the attrs its process recorded."""
    if params:
        study.enqueue_trial(params)
    trial = study.ask()
    for key, value in attrs.items():
        storage.set_trial_user_attr(internals.trial_id(trial), key, value)
    return trial


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_retries_run_before_trials_queued_earlier(study):
    study, storage = study
    cut = running_trial(study, storage, {"x": 3})
    study.enqueue_trial({"x": 1})
    study.enqueue_trial({"x": 2})
    study.enqueue_trial({"x": 4}, user_attrs={RETRY_OF_ATTR: 99})
    assert fail_cut_trial(study, storage, internals.trial_id(cut), INTERRUPTED, process_lost=False)
    order = [study.ask() for _ in range(4)]
    assert [t.user_attrs.get(RETRY_OF_ATTR) for t in order] == [
        99,
        cut.number,
        None,
        None,
    ]  # retries in queue order, then the rest
    assert [internals.queued_params(storage.get_trial(internals.trial_id(t))) for t in order[2:]] == [
        {"x": 1},
        {"x": 2},
    ]


def test_a_config_whose_process_died_twice_is_failed_for_good_and_the_study_goes_on(study):
    study, storage = study
    first = running_trial(study, storage, {"x": 7})
    assert fail_cut_trial(
        study, storage, internals.trial_id(first), "worker lost: WorkerCrashedError", process_lost=True
    )
    retry = study.ask()  # the retry, popped from the queue
    assert retry.user_attrs[RETRY_OF_ATTR] == first.number
    assert fail_cut_trial(
        study, storage, internals.trial_id(retry), "worker lost: WorkerCrashedError", process_lost=True
    )
    again = storage.get_trial(internals.trial_id(retry))
    assert again.state == TrialState.FAIL and again.user_attrs[PROCESS_LOST_ATTR]
    assert again.user_attrs[FAIL_REASON_ATTR].startswith(
        f"process died {MAX_PROCESS_LOSSES} times with these params (trials {first.number}, {retry.number}), not retried"
    )
    assert not study.get_trials(states=(TrialState.WAITING,))  # nothing queued: the next trial is sampled
    assert internals.queued_params(storage.get_trial(internals.trial_id(study.ask()))) == {}


def test_an_interrupt_does_not_count_towards_the_bound(study):
    study, storage = study
    first = running_trial(study, storage, {"x": 7})
    fail_cut_trial(study, storage, internals.trial_id(first), INTERRUPTED, process_lost=False)
    second = study.ask()
    fail_cut_trial(study, storage, internals.trial_id(second), "worker lost", process_lost=True)
    third = study.ask()
    assert third.user_attrs[RETRY_OF_ATTR] == second.number  # one death so far: retried
    assert internals.queued_params(storage.get_trial(internals.trial_id(third))) == {"x": 7}


def test_settling_a_trial_twice_queues_one_retry(study):
    study, storage = study
    trial = running_trial(study, storage, {"x": 7})
    assert fail_cut_trial(study, storage, internals.trial_id(trial), "worker lost", process_lost=True)
    assert not fail_cut_trial(study, storage, internals.trial_id(trial), "its process is gone", process_lost=True)
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 1
    assert storage.get_trial(internals.trial_id(trial)).user_attrs[FAIL_REASON_ATTR] == "worker lost"


def test_reconcile_fails_trials_whose_process_on_this_machine_is_gone(study):
    study, storage = study
    host = socket.gethostname()
    never_started = running_trial(study, storage, hostname=host, pid=dead_pid())  # a Ray driver's, before any worker
    reference = running_trial(
        study, storage, {"x": 5}, hostname=host, pid=dead_pid()
    )  # popped from the queue, no params yet
    alive = subprocess.Popen(["sleep", "60"])
    try:
        live = running_trial(study, storage, {"x": 6}, hostname=host, pid=alive.pid)
        settled = reconcile_lost_trials(study, storage)
    finally:
        alive.kill()
        alive.wait()
    assert settled == [never_started.number, reference.number]
    for trial in (never_started, reference):
        frozen = storage.get_trial(internals.trial_id(trial))
        assert frozen.state == TrialState.FAIL and "is gone" in frozen.user_attrs[FAIL_REASON_ATTR]
    assert (
        storage.get_trial(internals.trial_id(live)).state == TrialState.RUNNING
    )  # another live run's trial is left alone
    (retry,) = study.get_trials(states=(TrialState.WAITING,))
    assert retry.user_attrs[RETRY_OF_ATTR] == reference.number and internals.queued_params(retry) == {"x": 5}


def test_reconcile_waits_the_grace_period_for_trials_of_other_machines(study):
    study, storage = study
    silent = running_trial(study, storage, {"x": 1}, hostname="elsewhere", pid=1)  # no heartbeat ever
    beating = running_trial(study, storage, {"x": 2}, hostname="elsewhere", pid=1)
    record_heartbeats(storage, [internals.trial_id(beating)])
    assert reconcile_lost_trials(study, storage) == []  # within the 90 s grace period: may still run
    assert (
        reconcile_lost_trials(
            study, storage, running_here=[internals.trial_id(silent), internals.trial_id(beating)], grace=0
        )
        == []
    )
    assert reconcile_lost_trials(study, storage, running_here=[internals.trial_id(beating)], grace=0) == [silent.number]
    assert "no heartbeat in the" in storage.get_trial(internals.trial_id(silent)).user_attrs[FAIL_REASON_ATTR]
    assert reconcile_lost_trials(study, storage, grace=-1) == [beating.number]  # its heartbeat is older than the grace
    assert "no heartbeat for" in storage.get_trial(internals.trial_id(beating)).user_attrs[FAIL_REASON_ATTR]


def test_a_trial_cut_by_ctrl_c_is_retried_first_on_resume(tmp_path):
    space = tmp_path / "cut_space.py"
    space.write_text(textwrap.dedent(INTERRUPTING_SPACE))
    space.with_suffix(".interrupt").touch()
    run = RunSpec(space=str(space), study="cut", trials=2, epochs=1, limit=200, storage=f"sqlite:///{tmp_path}/s.db")
    with pytest.raises(KeyboardInterrupt):
        run_study(run, io.StringIO())
    trials = optuna.load_study(study_name="cut", storage=open_storage(run.storage)).get_trials()
    assert [(t.state, t.user_attrs.get(FAIL_REASON_ATTR)) for t in trials] == [
        (TrialState.FAIL, INTERRUPTED),
        (TrialState.WAITING, None),
        (TrialState.WAITING, None),
    ]

    out = io.StringIO()
    run_study(run, out)
    assert "queued first: 1 retry of trial 0 and 1 reference (b)" in out.getvalue()
    trials = {t.number: t for t in optuna.load_study(study_name="cut", storage=open_storage(run.storage)).get_trials()}
    retry = trials[2]
    assert (
        retry.user_attrs[RETRY_OF_ATTR] == 0 and retry.params == trials[0].params and retry.state == TrialState.COMPLETE
    )
    assert retry.datetime_start < trials[1].datetime_start  # the cut trial ran before the reference queued earlier
    assert sorted(t.state.name for t in trials.values()) == ["COMPLETE", "COMPLETE", "FAIL"]


def test_a_live_pid_does_not_hide_a_stale_heartbeat(study):
    study, storage = study
    alive = subprocess.Popen(["sleep", "60"])  # e.g. the pid of a dead run, reused by another program
    try:
        trial = running_trial(study, storage, {"x": 1}, hostname=socket.gethostname(), pid=alive.pid)
        record_heartbeats(storage, [internals.trial_id(trial)])
        assert reconcile_lost_trials(study, storage) == []
        assert reconcile_lost_trials(study, storage, grace=-1) == [trial.number]
    finally:
        alive.kill()
        alive.wait()
