"""Parallel trials through Ray on one shared study: exact counts, resources, and faults."""

import io
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import optuna
import pytest
import ray
from optuna.trial import TrialState

from search.config import RunSpec
from search.dispatch.run import run_study
from search.study import optuna_internals as internals
from search.study.storage import open_storage
from search.study.trial_attrs import PRUNED_REASON_ATTR, RETRY_OF_ATTR
from tests.servers import server_url

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).parent / "fixtures"
QUICK_SPACE = str(FIXTURES / "my_space.py")
SLOW_SPACE = str(FIXTURES / "slow_space.py")


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def storage_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/studies.db"
    return server_url(request.param)


@pytest.fixture(scope="module")
def local_ray():
    """One Ray runtime for the module, with two fake GPUs so placement can be checked without CUDA."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=4, num_gpus=2, include_dashboard=False, logging_level="warning")
    yield
    ray.shutdown()


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def spec(storage: str, tmp_path: Path, **overrides) -> RunSpec:
    # hyperband: a trial reports every epoch, so a test can catch one mid-training (running_trial)
    options = dict(
        space=QUICK_SPACE,
        trials=6,
        epochs=2,
        limit=200,
        storage=storage,
        study=unique("par"),
        reference=False,
        workers=2,
        gpus_per_trial=0,
        artifacts=str(tmp_path / "artifacts"),
        pruner="hyperband",
    )
    options.update(overrides)
    return RunSpec(**options)


def trials_of(run: RunSpec) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=run.study, storage=open_storage(run.storage)).get_trials()


def finished(trials):
    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def test_two_workers_share_one_study_with_an_exact_count(local_ray, storage_url, tmp_path):
    run = spec(storage_url, tmp_path, trials=8, pruner="rungs")
    run_study(run)
    trials = trials_of(run)
    assert len(finished(trials)) == 8
    assert len(trials) == 8 and not [t for t in trials if t.state == TrialState.RUNNING]
    assert len({t.user_attrs["pid"] for t in trials}) >= 2  # both workers ran trials
    assert all(t.user_attrs["rung"] == "180 rows x 2 epochs" for t in trials)  # the workers prune on the run's rungs
    counts = {
        "complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
    }
    assert run_study(run).counts == {state: n for state, n in counts.items() if n}
    assert len(trials_of(run)) == 8  # running again adds nothing


def test_whole_gpus_go_to_distinct_devices(local_ray, tmp_path):
    run = spec(
        f"sqlite:///{tmp_path}/s.db", tmp_path, space=SLOW_SPACE, trials=2, workers=2, gpus_per_trial=1, epochs=1
    )
    run_study(run)
    ids = [tuple(t.user_attrs["gpu_ids"]) for t in trials_of(run)]
    assert sorted(ids) == [("0",), ("1",)]


def test_half_gpus_pack_two_trials_per_device(local_ray, tmp_path):
    run = spec(
        f"sqlite:///{tmp_path}/s.db", tmp_path, space=SLOW_SPACE, trials=4, workers=4, gpus_per_trial=0.5, epochs=1
    )
    run_study(run)
    ids = sorted(tuple(t.user_attrs["gpu_ids"]) for t in trials_of(run))
    assert ids == [("0",), ("0",), ("1",), ("1",)]


def test_a_trial_that_raises_fails_alone(local_ray, tmp_path):
    run = spec(
        f"sqlite:///{tmp_path}/s.db", tmp_path, space=str(FIXTURES / "nan_space.py"), trials=2, reference=True, epochs=1
    )
    run_study(run)
    trials = trials_of(run)
    assert len(finished(trials)) == 2
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert trials[0].params == {**trials[0].params, "nan.explode": True} and trials[0] in failed
    assert all(t.params["nan.explode"] and "Diverged" in t.user_attrs["fail_reason"] for t in failed)
    assert RETRY_OF_ATTR not in str([t.user_attrs for t in trials])  # raising is not a lost worker: no retry


def test_ray_workers_prune_a_trial_over_its_time_limit(local_ray, tmp_path):
    run = spec(f"sqlite:///{tmp_path}/s.db", tmp_path, trials=2, pruner="none", trial_timeout=1e-6)
    run_study(run)
    trials = trials_of(run)
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2
    assert all(not t.intermediate_values and "--trial-timeout" in t.user_attrs[PRUNED_REASON_ATTR] for t in trials)


def wait_for(condition, timeout: float = 120.0, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def running_trial(run: RunSpec):
    try:
        trials = trials_of(run)
    except KeyError:
        return None
    # one that finished its first epoch is in the middle of training, all its params drawn
    running = [t for t in trials if t.state == TrialState.RUNNING and t.intermediate_values]
    return running[0] if running else None


def test_a_killed_worker_fails_its_trial_which_is_retried(local_ray, tmp_path):
    run = spec(f"sqlite:///{tmp_path}/s.db", tmp_path, space=SLOW_SPACE, trials=4, epochs=4, pruner="none")
    open_storage(run.storage)  # the tables exist before the test starts polling them
    driver = threading.Thread(target=run_study, args=(run,))
    driver.start()
    victim = wait_for(lambda: running_trial(run))
    os.kill(victim.user_attrs["pid"], signal.SIGKILL)
    driver.join(timeout=300)
    assert not driver.is_alive()
    trials = trials_of(run)
    killed = next(t for t in trials if t.number == victim.number)
    assert killed.state == TrialState.FAIL and "worker lost" in killed.user_attrs["fail_reason"]
    retry = [t for t in trials if t.user_attrs.get(RETRY_OF_ATTR) == victim.number]
    assert len(retry) == 1 and retry[0].params == killed.params and retry[0].state == TrialState.COMPLETE
    assert len(finished(trials)) == 4 and not [t for t in trials if t.state == TrialState.RUNNING]


def test_ctrl_c_in_process_fails_the_trial_quietly_and_the_next_run_trains_its_params(tmp_path, capfd):
    # no pruning: the retry must complete, and Hyperband could prune it against the cut trial's first epoch
    run = spec(
        f"sqlite:///{tmp_path}/s.db",
        tmp_path,
        space=SLOW_SPACE,
        trials=2,
        epochs=6,
        workers=1,
        gpus_per_trial=None,
        pruner="none",
    )
    open_storage(run.storage)
    # SIGINT as Ctrl-C sends it, to this (the main) thread, once a trial is mid-training
    watcher = threading.Thread(
        target=lambda: (wait_for(lambda: running_trial(run), timeout=400), os.kill(os.getpid(), signal.SIGINT))
    )
    watcher.start()
    with pytest.raises(KeyboardInterrupt):
        run_study(run, out=io.StringIO())
    watcher.join()
    assert "Traceback" not in capfd.readouterr().err  # Optuna's warning about the cut trial is hidden
    interrupted = [t for t in trials_of(run) if t.state == TrialState.FAIL]
    assert len(interrupted) == 1 and interrupted[0].user_attrs["fail_reason"] == "interrupted (Ctrl-C)"

    run_study(run, out=io.StringIO())
    trials = trials_of(run)
    retry = next(t for t in trials if t.user_attrs.get(RETRY_OF_ATTR) == interrupted[0].number)
    assert retry.state == TrialState.COMPLETE and retry.params == interrupted[0].params
    assert len(finished(trials)) == 2 and not [t for t in trials if t.state == TrialState.RUNNING]


KILLING_SPACE = '''
"""A family whose config x=0 kills the process that builds it, as the OOM killer would."""
import os
import signal
from dataclasses import dataclass

from torch import nn

from spaces.base import Reference

NAME = "oom"


@dataclass(frozen=True)
class Config:
    x: int = 1


def suggest(trial):
    return Config(x=trial.suggest_int("oom.x", 0, 1000))


def params_of(config):
    return {"oom.x": config.x}


def build(config):
    if config.x == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))


REFERENCES = {"killer": Reference("killer", Config(0)), "fine": Reference("fine", Config(1))}
'''


def test_a_config_whose_worker_dies_twice_is_failed_for_good_and_the_study_goes_on(local_ray, tmp_path):
    space = tmp_path / "oom_space.py"
    space.write_text(KILLING_SPACE)
    run = spec(
        f"sqlite:///{tmp_path}/s.db",
        tmp_path,
        space=str(space),
        trials=2,
        epochs=1,
        reference=True,
        workers=1,
        address="auto",
    )
    run_study(run)
    trials = trials_of(run)
    killer = [t for t in trials if (internals.queued_params(t) or t.params).get("oom.x") == 0]
    assert [t.state for t in killer] == [TrialState.FAIL, TrialState.FAIL]  # the first attempt and one retry, no more
    assert (
        killer[1].user_attrs[RETRY_OF_ATTR] == killer[0].number and "worker lost" in killer[0].user_attrs["fail_reason"]
    )
    assert (
        killer[1]
        .user_attrs["fail_reason"]
        .startswith(f"process died 2 times with these params (trials {killer[0].number}, {killer[1].number})")
    )
    assert len(finished(trials)) == 2 and not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    run_study(RunSpec(**{**run.__dict__, "trials": 3}))  # a later run does not try it again
    assert len([t for t in trials_of(run) if (internals.queued_params(t) or t.params).get("oom.x") == 0]) == 2
