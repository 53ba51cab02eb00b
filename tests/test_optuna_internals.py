"""The private parts of Optuna the project uses (search.study.optuna_internals), each checked on the
installed Optuna: when a release moves one, this file says which, not a retry that silently runs last."""

import inspect

import optuna
import pytest
import sqlalchemy
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState
from sqlalchemy.orm import Session

from search.study import optuna_internals as internals


@pytest.fixture
def storage(tmp_path):
    return optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/s.db", heartbeat_interval=60)


def test_the_checked_versions_are_named_and_the_installed_one_is_among_them_or_newer():
    assert internals.CHECKED_ON
    installed = tuple(int(part) for part in optuna.__version__.split(".")[:2])
    assert installed >= min(tuple(int(part) for part in version.split(".")[:2]) for version in internals.CHECKED_ON)


def test_our_artifact_protocol_has_the_methods_of_optunas_private_one_and_its_stores():
    from optuna.artifacts import _protocol

    ours = {
        name for name, _ in inspect.getmembers(internals.ArtifactStore, inspect.isfunction) if not name.startswith("_")
    }
    theirs = {
        name for name, _ in inspect.getmembers(_protocol.ArtifactStore, inspect.isfunction) if not name.startswith("_")
    }
    assert ours == theirs == {"open_reader", "write", "remove"}
    assert all(callable(getattr(FileSystemArtifactStore, name)) for name in ours)


def test_trial_and_study_ids_are_the_storages(storage):
    study = optuna.create_study(study_name="s", storage=storage)
    optuna.create_study(study_name="other", storage=storage).ask()  # ids now differ from numbers
    trial = study.ask()
    assert internals.study_id(study) == storage.get_study_id_from_name("s")
    assert (
        internals.trial_id(trial)
        == storage.get_trial_id_from_study_id_trial_number(internals.study_id(study), trial.number)
        != trial.number
    )
    frozen = study.trials[0]
    assert internals.trial_id(frozen) == internals.trial_id(trial)
    assert (
        internals.study_storage(study).get_trial(internals.trial_id(trial)).number == trial.number
    )  # Optuna's cache over it


def test_queued_params_are_those_a_waiting_trial_was_enqueued_with(storage):
    study = optuna.create_study(study_name="s", storage=storage)
    study.enqueue_trial({"x": 1.5})
    (waiting,) = study.get_trials(states=(TrialState.WAITING,))
    assert waiting.params == {} and internals.queued_params(waiting) == {"x": 1.5}


def test_the_heartbeat_table_holds_what_the_heartbeat_thread_records(storage):
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    with internals.heartbeat_thread(internals.trial_id(trial), storage):
        pass  # the thread beats once as it starts
    beat = internals.HEARTBEAT_TABLE
    with Session(storage.engine) as session:
        rows = session.execute(sqlalchemy.select(beat.trial_id).where(beat.trial_id == internals.trial_id(trial))).all()
    assert len(rows) == 1


def test_the_waiting_order_decides_which_queued_trial_ask_takes(storage):
    # WaitingOrderStudy replaces the method study.ask uses to take a waiting trial; if Optuna renamed it,
    # the order would silently fall back to the queue's
    assert "_pop_waiting_trial_id" in vars(optuna.Study)
    assert list(inspect.signature(optuna.Study._pop_waiting_trial_id).parameters) == ["self"]

    class LastFirst(internals.WaitingOrderStudy):
        def waiting_order(self, waiting):
            return list(reversed(waiting))

    optuna.create_study(study_name="s", storage=storage)
    study = LastFirst(study_name="s", storage=storage)
    for x in (1, 2, 3):
        study.enqueue_trial({"x": x})
    taken = [study.ask().suggest_int("x", 0, 9) for _ in range(3)]
    assert taken == [3, 2, 1]
